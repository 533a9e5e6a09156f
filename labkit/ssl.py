"""Cooperative TLS: the stdlib ``ssl`` module over labkit sockets.

    context = labkit.ssl.create_default_context()
    with labkit.socket.create_connection(("example.org", 443)) as raw:
        with context.wrap_socket(raw, server_hostname="example.org") as tls:
            tls.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")   # parks, never blocks

How it works: :class:`SSLSocket` is the stdlib's ``ssl.SSLSocket`` *and* a
``labkit.socket.socket`` (in that method order), so the stdlib keeps doing all
the TLS bookkeeping while the fd stays non-blocking. OpenSSL then answers
"would block" with ``SSLWantReadError``/``SSLWantWriteError``; each operation
here retries after parking on the fd in the direction OpenSSL asked for::

    read() --> SSL_read --> data: return it
                   | SSLWantReadError (or WantWrite: renegotiation, TLS 1.3 tickets)
                   v
            wait_io(fd, READ or WRITE, timeout) --> retry SSL_read

The socket's timeout rules are labkit.socket's (the stdlib's): ``None`` parks
without limit, ``0.0`` raises the Want* errors to the caller, ``t`` raises
``socket.timeout`` after ``t`` seconds per call (for ``sendall``: the whole call).

:class:`SSLContext` is ``ssl.SSLContext`` whose ``wrap_socket`` makes these
sockets; every other name of the stdlib module is re-exported unchanged.
"""
from __future__ import annotations

import _ssl
import os
import ssl as _stdlib
import sys
from ssl import *  # noqa: F401,F403 - constants, exceptions, helpers
from ssl import SSLWantReadError, SSLWantWriteError

from labkit import socket as _socket
from labkit._loop import READ, WRITE

__all__ = [name for name in dir(_stdlib) if not name.startswith("_")]


class SSLSocket(_stdlib.SSLSocket, _socket.socket):
    """A TLS socket whose handshake, reads and writes park the greenlet.

    Made by :meth:`SSLContext.wrap_socket`, never directly (as in the stdlib).
    """

    def _wanted_event(self, exc: BaseException) -> int:
        """The fd event OpenSSL asks us to wait for (non-blocking: re-raise)."""
        if self._timeout == 0.0:
            raise exc
        return READ if isinstance(exc, SSLWantReadError) else WRITE

    def _retry(self, operation, *args):
        """Call ``operation(*args)`` until OpenSSL stops asking to wait."""
        deadline = None
        while True:
            try:
                return operation(*args)
            except (SSLWantReadError, SSLWantWriteError) as exc:
                deadline = self._wait(self._wanted_event(exc), deadline)

    def do_handshake(self, block=False):
        self._check_connected()
        self._retry(self._sslobj.do_handshake)

    def read(self, len=1024, buffer=None):
        return self._retry(_stdlib.SSLSocket.read, self, len, buffer)

    def write(self, data):
        return self._retry(_stdlib.SSLSocket.write, self, data)

    def send(self, data, flags=0):
        if self._sslobj is None:
            return _socket.socket.send(self, data, flags)
        if flags:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {type(self)}")
        return self._retry(self._sslobj.write, data)

    def sendall(self, data, flags=0) -> None:
        """Send all of ``data``; the timeout bounds the whole call."""
        if self._sslobj is None:
            return _socket.socket.sendall(self, data, flags)
        if flags:
            raise ValueError(f"non-zero flags not allowed in calls to sendall() on {type(self)}")
        self._checkClosed()
        with memoryview(data) as view, view.cast("B") as remaining:
            deadline = None
            while remaining:
                try:
                    remaining = remaining[self._sslobj.write(remaining):]
                except (SSLWantReadError, SSLWantWriteError) as exc:
                    deadline = self._wait(self._wanted_event(exc), deadline)
        return None

    def unwrap(self):
        """Shut TLS down (cooperatively) and return the plain socket."""
        if not self._sslobj:
            raise ValueError(f"No SSL wrapper around {self}")
        sock = self._retry(self._sslobj.shutdown)
        self._sslobj = None
        return sock

    def sendfile(self, file, offset=0, count=None):
        return self._sendfile_use_send(file, offset, count)


def _settable_after_patching(name: str) -> property:
    """The stdlib property ``name``, with a setter that survives monkey patching.

    The stdlib's setters call ``super(SSLContext, SSLContext)`` through the
    module's global name; once ``ssl.SSLContext`` is this class, that would
    find the same setter again and recurse forever. Ours go straight to the
    C descriptor (the stdlib's getters, which wrap values in enums, are kept).
    """
    stdlib_property = getattr(_stdlib.SSLContext, name)
    c_descriptor = getattr(_ssl._SSLContext, name)

    def setter(self, value):
        c_descriptor.__set__(self, value)

    return property(stdlib_property.fget, setter, doc=stdlib_property.__doc__)


class SSLContext(_stdlib.SSLContext):
    """``ssl.SSLContext`` whose ``wrap_socket`` returns a cooperative
    :class:`SSLSocket`. Give it ``labkit.socket`` sockets."""

    sslsocket_class = SSLSocket

    minimum_version = _settable_after_patching("minimum_version")
    maximum_version = _settable_after_patching("maximum_version")
    options = _settable_after_patching("options")
    verify_flags = _settable_after_patching("verify_flags")
    verify_mode = _settable_after_patching("verify_mode")


def create_default_context(purpose=Purpose.SERVER_AUTH, *, cafile=None,
                           capath=None, cadata=None) -> SSLContext:
    """``ssl.create_default_context``, returning a cooperative SSLContext
    with the same secure defaults."""
    if not isinstance(purpose, _stdlib._ASN1Object):
        raise TypeError(purpose)
    if purpose == Purpose.SERVER_AUTH:
        context = SSLContext(PROTOCOL_TLS_CLIENT)
        context.verify_mode = CERT_REQUIRED
        context.check_hostname = True
    else:
        context = SSLContext(PROTOCOL_TLS_SERVER)
    if cafile or capath or cadata:
        context.load_verify_locations(cafile, capath, cadata)
    elif context.verify_mode != CERT_NONE:
        context.load_default_certs(purpose)
    keylogfile = os.environ.get("SSLKEYLOGFILE")
    if keylogfile and hasattr(context, "keylog_filename") and not sys.flags.ignore_environment:
        context.keylog_filename = keylogfile
    return context


def wrap_socket(sock, keyfile=None, certfile=None, server_side=False,
                cert_reqs=CERT_NONE, ssl_version=None, ca_certs=None,
                do_handshake_on_connect=True, suppress_ragged_eofs=True,
                ciphers=None, server_hostname=None) -> SSLSocket:
    """The old module-level ``ssl.wrap_socket`` (gone in Python 3.12), kept
    because gevent code uses it. Prefer ``SSLContext.wrap_socket``."""
    if ssl_version is None:
        ssl_version = PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT
    context = SSLContext(ssl_version)
    if ssl_version == PROTOCOL_TLS_CLIENT:
        context.check_hostname = False
    context.verify_mode = cert_reqs
    if ca_certs:
        context.load_verify_locations(ca_certs)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if ciphers:
        context.set_ciphers(ciphers)
    return context.wrap_socket(sock, server_side=server_side,
                               do_handshake_on_connect=do_handshake_on_connect,
                               suppress_ragged_eofs=suppress_ragged_eofs,
                               server_hostname=server_hostname)


for _name in ("SSLSocket", "SSLContext", "create_default_context", "wrap_socket"):
    if _name not in __all__:
        __all__.append(_name)
del _name


def get_server_certificate(addr, ssl_version=PROTOCOL_TLS_CLIENT, ca_certs=None,
                           timeout=_socket._GLOBAL_DEFAULT_TIMEOUT) -> str:
    """The PEM certificate of the TLS server at ``addr`` (host, port),
    fetched cooperatively (the stdlib's connects and handshakes blocking the
    hub, which could be serving that very address). Verified against
    ``ca_certs`` if given, else not at all (as the stdlib's)."""
    host, _port = addr
    context = SSLContext(ssl_version)
    context.check_hostname = False
    if ca_certs is not None:
        context.verify_mode = CERT_REQUIRED
        context.load_verify_locations(ca_certs)
    else:
        context.verify_mode = CERT_NONE
    with _socket.create_connection(addr, timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=host) as sslsock:
            dercert = sslsock.getpeercert(True)
    return DER_cert_to_PEM_cert(dercert)
