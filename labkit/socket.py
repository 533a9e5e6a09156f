"""Cooperative sockets: the stdlib ``socket`` module, with waiting done by the hub.

``labkit.socket`` can replace ``socket`` in a module (``from labkit import
socket``): it re-exports every constant, exception and helper of the stdlib
module, and replaces the ones that block.

How a cooperative socket works::

    recv() --> try the syscall on the non-blocking fd --> data: return it
                      | BlockingIOError
                      v
               wait_io(hub, fd, READ, timeout)  # park; other greenlets run
                      | the loop saw the fd readable (maybe spuriously)
                      `--> try the syscall again

The contract, as the stdlib's:

- Every socket is non-blocking underneath; ``settimeout``/``gettimeout``/
  ``setblocking`` only change how long a call may *park*: ``None`` (the
  default, or ``socket.getdefaulttimeout()``) forever, ``0.0`` never (the call
  raises ``BlockingIOError`` like a non-blocking stdlib socket), ``t > 0`` at
  most ``t`` seconds per call, then ``socket.timeout`` (``TimeoutError``).
  ``sendall``'s timeout covers the whole call, as in Python >= 3.5.
- ``close()`` on a socket another greenlet is parked on wakes that greenlet
  with ``OSError(EBADF)`` instead of leaving it stuck. The fd itself is closed
  only after the woken greenlets have unwound, so that its number cannot be
  reused under them.
- Which thread: a socket parks on the hub of the calling thread. In a thread
  that has no hub (other than the main thread, which always gets one), calls
  block the thread as the stdlib's would. That is what makes monkey patching
  safe for libraries that run their own threads.
- DNS (``getaddrinfo`` and friends) runs in a thread pool of the hub, so that a
  slow resolver does not stall every greenlet; numeric addresses are answered
  at once, without a thread.
"""
from __future__ import annotations

import os
import socket as _stdlib
import sys
import weakref
from errno import EAGAIN, EALREADY, EINPROGRESS, EISCONN, EWOULDBLOCK
from operator import index as _index
from sys import maxsize as _MAXSIZE
from socket import *  # noqa: F401,F403 - constants, exceptions, helpers
from socket import _GLOBAL_DEFAULT_TIMEOUT  # noqa: F401 - http.client uses it
from time import monotonic

import _socket

from labkit._loop import READ, WRITE
# recv/send on the fd with MSG_DONTWAIT, keeping the GIL (loop_c/lk_sock_py.c):
# the stdlib's release it around a syscall that here never waits.
from labkit._lk_poll_py import recv as _recv_fd, send as _send_fd
from labkit._park import forget_fd, parked_readers, wait_fd, wait_io
from labkit.hub import _get_hub_if_any, hub_for_this_thread

__all__ = list(_stdlib.__all__)  # what `from labkit.socket import *` gives

# The unbound C methods: calling them directly skips an attribute lookup on
# the hot path, and never recurses into our overrides.
_sock = _socket.socket
_recv_into = _sock.recv_into
_recvfrom = _sock.recvfrom
_recvfrom_into = _sock.recvfrom_into
_sendto = _sock.sendto
_connect_ex = _sock.connect_ex
_accept = _sock._accept
_fileno = _sock.fileno

# The stdlib's own functions, captured before monkey patching can replace
# them in the stdlib module (calling the patched ones would recurse).
_blocking_getaddrinfo = _stdlib.getaddrinfo
_blocking_create_server = _stdlib.create_server

_CONNECTING = frozenset((EINPROGRESS, EALREADY, EWOULDBLOCK, EAGAIN))

def _timeout_error() -> TimeoutError:
    return _stdlib.timeout("timed out")


def _forget_and_wake_waiters(sock: "socket", then) -> bool:
    """Stop watching ``sock``'s fd before it is closed; greenlets parked on it
    get EBADF, and ``then(fd)`` runs after them (see labkit._park.forget_fd).
    False if nobody was parked: the caller closes the fd at once."""
    fd = _fileno(sock)
    hub = _get_hub_if_any()
    if hub is None or fd < 0:
        return False
    return forget_fd(hub, fd, then)


class socket(_stdlib.socket):
    """A stdlib socket whose blocking calls park the greenlet, not the thread.

    Create and use it like ``socket.socket``; see the module docstring for
    the timeout and close contracts. One greenlet may wait to read and one to
    write at a time (two readers would steal each other's data).
    """

    __slots__ = (
        "_timeout",   # None | 0.0 | seconds: how long a call may park
        "_stream",    # a stream socket (TCP, Unix stream): see _drained
        "_drained",   # the last recv emptied the kernel's buffer (see recv)
    )

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        super().__init__(family, type, proto, fileno)
        # The C layer applied socket.getdefaulttimeout(); keep it as ours,
        # then make the fd non-blocking for good.
        self._timeout = _sock.gettimeout(self)
        _sock.setblocking(self, False)
        self._stream = _sock.type.__get__(self) & 0xF == SOCK_STREAM
        self._drained = False

    # -- timeouts, emulated --------------------------------------------------
    def settimeout(self, value) -> None:
        if value is None or (value.__class__ is float and value >= 0.0):
            self._timeout = value   # the common cases (a server's per-request calls)
            return
        if value is not None:
            kind = type(value)
            if not (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
                raise TypeError(f"Timeout value must be int, float or None, "
                                f"not {kind.__name__}")
            value = float(value)
            if value != value:
                raise ValueError("Invalid value NaN (not a number)")
            if value < 0.0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self):
        return self._timeout

    def setblocking(self, flag) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self):
        return self._timeout

    def _wait(self, event: int, deadline: float | None) -> float | None:
        """Park until the fd is ready for ``event``; return the call's deadline.

        The first wait of a call fixes the deadline; later waits (after a
        spurious wake-up) get only what is left, as the stdlib's retries do.
        """
        timeout = self._timeout
        if timeout is None:
            hub = _get_hub_if_any()
            if hub is not None:   # the common case, made cheap
                # keep_interest: the kernel goes on watching the fd between
                # waits (no epoll_ctl per wait). Allowed because a socket
                # always tells the loop before its fd is closed (forget_fd).
                wait_io(hub, _fileno(self), event, None, None, True)
                return None
        else:
            if deadline is None:
                deadline = monotonic() + timeout
            else:
                timeout = deadline - monotonic()
                if timeout <= 0.0:
                    raise _timeout_error()
        wait_fd(_fileno(self), event, timeout,
                None if timeout is None else _timeout_error(),
                keep_interest=True)   # see above
        return deadline

    # -- receiving -----------------------------------------------------------
    # Each method: try the syscall; on BlockingIOError park (unless the
    # socket is non-blocking) and retry. The wait sits *after* the except
    # clause so that a timeout is not reported "during handling of"
    # the BlockingIOError.
    #
    # recv and recv_into on a stream socket skip the first try when the
    # previous call got less than it asked for. A short read means that
    # it emptied the kernel's buffer, so the next call would most likely
    # fail with EAGAIN -- a syscall and an exception (1.3 us when measured on a
    # 2-core VM; it varies by machine) spent
    # on the answer "wait". libuv reasons the same way. Parking first is
    # always correct, because readiness is level-triggered: if data came
    # in meanwhile, the next poll reports the fd at once. Only when
    # someone else already waits to read this fd (a select() in another
    # greenlet) do we try first after all, as before.
    def recv(self, bufsize, flags=0):
        deadline = None
        # Park first only for arguments the syscall will take: a bad bufsize
        # or flags (recv(-1), recv('x'), flags past a C int) must raise at
        # once, as the stdlib's does, not after data came; and recv(0)
        # returns b'' at once. Anything unusual (a numpy int, non-zero
        # flags) just tries first.
        if self._drained and bufsize.__class__ is int and 0 < bufsize <= _MAXSIZE \
                and flags.__class__ is int and not flags:
            # _wait_if_drained's common case inline (no timeout, a hub,
            # nobody else reading): one Python call less per message.
            if self._timeout is None and (hub := _get_hub_if_any()) is not None \
                    and (fd := _fileno(self)) not in parked_readers:
                self._drained = False
                wait_io(hub, fd, READ, None, None, True)
            else:
                deadline = self._wait_if_drained()
        while True:
            try:
                data = _recv_fd(_fileno(self), bufsize, flags)
                # (bufsize may be any __index__ object, as the stdlib's.)
                self._drained = self._stream and not flags and len(data) < (
                    bufsize if bufsize.__class__ is int else _index(bufsize))
                return data
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(READ, deadline)

    def recv_into(self, buffer, nbytes=0, flags=0):
        deadline = self._wait_if_drained() if self._drained else None
        while True:
            try:
                n = _recv_into(self, buffer, nbytes, flags)
                self._drained = self._stream and not flags and n < (nbytes or len(buffer))
                return n
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(READ, deadline)

    def _wait_if_drained(self) -> float | None:
        """recv's first step after a short read (see above): park until the
        fd is readable, before trying the syscall. Returns the call's
        deadline. Does not park if the socket is non-blocking (the syscall
        must answer) or if someone else already waits to read the fd."""
        self._drained = False
        timeout = self._timeout
        if timeout == 0.0:
            return None
        hub = _get_hub_if_any()
        if hub is None:
            return self._wait(READ, None)
        fd = _fileno(self)
        if fd in parked_readers:
            return None
        if timeout is None:   # the common case, without the detour through _wait
            wait_io(hub, fd, READ, None, None, True)
            return None
        return self._wait(READ, None)

    def recvfrom(self, bufsize, flags=0):
        deadline = None
        while True:
            try:
                return _recvfrom(self, bufsize, flags)
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(READ, deadline)

    def recvfrom_into(self, buffer, nbytes=0, flags=0):
        deadline = None
        while True:
            try:
                return _recvfrom_into(self, buffer, nbytes, flags)
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(READ, deadline)

    def accept(self):
        """Park until a connection arrives; return (cooperative socket, address)."""
        deadline = None
        while True:
            try:
                fd, address = _accept(self)
                break
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(READ, deadline)
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        # The stdlib's rule (bpo-7995): with no default timeout, a socket
        # accepted from a listener that has a timeout is blocking.
        if getdefaulttimeout() is None and self._timeout:
            sock.setblocking(True)
        return sock, address

    # -- sending -------------------------------------------------------------
    def send(self, data, flags=0):
        deadline = None
        while True:
            try:
                return _send_fd(_fileno(self), data, flags)
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(WRITE, deadline)

    def sendall(self, data, flags=0) -> None:
        """Send all of ``data``; the timeout bounds the whole call."""
        if type(data) is bytes:  # the common case: one send, no memoryview
            try:
                sent = _send_fd(_fileno(self), data, flags)
            except BlockingIOError:
                sent = 0
                if self._timeout == 0.0:
                    raise
            if sent == len(data):
                return None
            data = memoryview(data)[sent:]
        try:
            view = memoryview(data)
        except TypeError:   # the stdlib's words, without memoryview's prefix
            raise TypeError("a bytes-like object is required, not "
                            f"'{type(data).__name__}'") from None
        with view, view.cast("B") as remaining:
            deadline = None
            while remaining:
                try:
                    remaining = remaining[_send_fd(_fileno(self), remaining, flags):]
                    continue
                except BlockingIOError:
                    if self._timeout == 0.0:
                        raise
                deadline = self._wait(WRITE, deadline)
        return None

    def sendto(self, data, flags_or_address, address=None):
        if address is None:
            args = (data, _resolve(self, flags_or_address))
        else:
            args = (data, flags_or_address, _resolve(self, address))
        deadline = None
        while True:
            try:
                return _sendto(self, *args)
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
            deadline = self._wait(WRITE, deadline)

    def sendfile(self, file, offset=0, count=None):
        """Send a file's bytes with send(); the stdlib's version would block
        the hub in os.sendfile's selector."""
        return self._sendfile_use_send(file, offset, count)

    def _sendfile_use_send(self, file, offset=0, count=None):
        self._check_sendfile_params(file, offset, count)
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(min(8192, count - total) if count else 8192)
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        if total and hasattr(file, "seek"):
            file.seek(offset + total)
        return total

    # -- connecting ------------------------------------------------------------
    def connect(self, address) -> None:
        error = self.connect_ex(address, _raise_timeout=True)
        if error:
            raise OSError(error, os.strerror(error))

    def connect_ex(self, address, *, _raise_timeout=False) -> int:
        """Like connect, but return an errno instead of raising OSError
        (EAGAIN on timeout, as the stdlib). Names are resolved cooperatively."""
        address = _resolve(self, address)
        deadline = None
        while True:
            error = _connect_ex(self, address)
            if error == 0 or error == EISCONN:
                return 0
            if error not in _CONNECTING or self._timeout == 0.0:
                return error
            try:
                deadline = self._wait(WRITE, deadline)
            except TimeoutError:
                if _raise_timeout:
                    raise
                return EAGAIN
            error = _sock.getsockopt(self, SOL_SOCKET, SO_ERROR)
            if error:
                return error
            # Writable and no error: connected. Loop once more, because a
            # Unix socket whose backlog was full (EAGAIN) must retry, and a
            # TCP socket answers EISCONN.

    # -- closing -------------------------------------------------------------
    def _real_close(self, _ss=_sock) -> None:
        if _forget_and_wake_waiters(self, os.close):
            _ss.detach(self)  # closed now for us; the fd a little later
        else:
            _ss.close(self)

    def detach(self) -> int:
        """Give up the fd without closing it; parked greenlets get EBADF."""
        _forget_and_wake_waiters(self, _keep_fd)
        self._closed = True
        return _sock.detach(self)


def _keep_fd(fd: int) -> None:
    pass


SocketType = socket


# -- creating sockets -------------------------------------------------------

def socketpair(family=None, type=SOCK_STREAM, proto=0):
    """A pair of connected cooperative sockets (AF_UNIX where available)."""
    if family is None:
        family = AF_UNIX if hasattr(_stdlib, "AF_UNIX") else AF_INET
    a, b = _socket.socketpair(family, type, proto)
    return (socket(family, type, proto, a.detach()),
            socket(family, type, proto, b.detach()))


def fromfd(fd, family, type, proto=0):
    """A cooperative socket on a duplicate of ``fd``."""
    return socket(family, type, proto, os.dup(fd))


def create_server(address, *, family=AF_INET, backlog=None, reuse_port=False,
                  dualstack_ipv6=False):
    """The stdlib's create_server (bind and listen never block), made cooperative."""
    listener = _blocking_create_server(address, family=family, backlog=backlog,
                                       reuse_port=reuse_port,
                                       dualstack_ipv6=dualstack_ipv6)
    return socket(listener.family, listener.type, listener.proto, listener.detach())


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None,
                      *, all_errors=False):
    """Connect to ``(host, port)``, trying each address getaddrinfo returns
    (the stdlib's algorithm, with cooperative DNS and connect).

    ``all_errors=True`` (Python 3.11+, as in the stdlib) raises an
    ExceptionGroup of every attempt's error; Python 3.10 has no ExceptionGroup
    and refuses it, as its stdlib refuses the keyword."""
    if all_errors and sys.version_info < (3, 11):
        raise TypeError("create_connection(all_errors=True) needs Python 3.11+ "
                        "(ExceptionGroup)")
    host, port = address
    errors = []
    for family, type_, proto, _, sockaddr in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(family, type_, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            errors.clear()  # break reference cycles, as the stdlib does
            return sock
        except OSError as exc:
            if not all_errors:
                errors.clear()
            errors.append(exc)
            if sock is not None:
                sock.close()
    if errors:
        try:
            if not all_errors:
                raise errors[0]
            raise ExceptionGroup("create_connection failed", errors)
        finally:
            errors.clear()
    raise error("getaddrinfo returns an empty list")


# -- DNS, in the hub's thread pool ------------------------------------------

#: threads per resolver pool. There is one pool per hub, created on first
#: use and kept as an attribute of the hub, so that pool and hub live and die
#: together (a pool delivers its results to the hub of the thread that made it).
RESOLVER_THREADS = 4


def _resolver():
    """The hub's resolver when labkit.config.resolver is not "thread" (the
    functions below then ask it), else None."""
    from labkit import config
    if config.resolver == "thread":
        return None
    hub = hub_for_this_thread()
    return hub.resolver if hub is not None else None


def _resolve_in_thread(function, *args):
    """Run a blocking resolver call in the hub's pool; park until it answers.

    Without a hub in this thread, or without labkit.threadpool, call it
    directly (this thread may block: it is not the hub's).
    """
    hub = hub_for_this_thread()
    if hub is None:
        return function(*args)
    pool = _resolver_pools.get(hub)
    if pool is None:
        try:
            from labkit.threadpool import ThreadPool
        except ImportError:
            return function(*args)
        pool = _resolver_pools[hub] = ThreadPool(RESOLVER_THREADS, hub)
    return pool.apply(function, args)


#: hub -> the thread pool that runs its blocking resolver calls
_resolver_pools: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _is_numeric_host(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("idna")
    if not isinstance(host, str):
        return False
    for family in (AF_INET, AF_INET6):
        try:
            inet_pton(family, host.partition("%")[0])
            return True
        except (OSError, ValueError):
            pass
    return False


def _is_numeric_port(port) -> bool:
    return port is None or isinstance(port, int) or (
        isinstance(port, (str, bytes)) and port.isdigit())


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if _is_numeric_host(host) and _is_numeric_port(port):
        return _blocking_getaddrinfo(host, port, family, type, proto, flags)
    resolver = _resolver()
    if resolver is not None:
        return resolver.getaddrinfo(host, port, family, type, proto, flags)
    return _resolve_in_thread(_blocking_getaddrinfo, host, port, family, type, proto, flags)


def gethostbyname(hostname):
    if _is_numeric_host(hostname) and ":" not in str(hostname):
        return _socket.gethostbyname(hostname)
    resolver = _resolver()
    if resolver is not None:
        return resolver.gethostbyname(hostname)
    return _resolve_in_thread(_socket.gethostbyname, hostname)


def gethostbyname_ex(hostname):
    resolver = _resolver()
    if resolver is not None:
        return resolver.gethostbyname_ex(hostname)
    return _resolve_in_thread(_socket.gethostbyname_ex, hostname)


def gethostbyaddr(ip_address):
    resolver = _resolver()
    if resolver is not None:
        return resolver.gethostbyaddr(ip_address)
    return _resolve_in_thread(_socket.gethostbyaddr, ip_address)


def getnameinfo(sockaddr, flags):
    if flags & NI_NUMERICHOST and flags & NI_NUMERICSERV:
        return _socket.getnameinfo(sockaddr, flags)
    return _resolve_in_thread(_socket.getnameinfo, sockaddr, flags)


def getfqdn(name=""):
    """The stdlib's getfqdn, with our gethostbyaddr."""
    name = name.strip()
    if not name or name in ("0.0.0.0", "::"):
        name = gethostname()
    try:
        hostname, aliases, _ = gethostbyaddr(name)
    except error:
        return name
    for candidate in [hostname, *aliases]:
        if "." in candidate:
            return candidate
    return hostname


def _resolve(sock, address):
    """``address`` with its host name resolved cooperatively (inet only).

    The C connect/sendto would resolve a name with a blocking getaddrinfo.
    """
    if sock.family not in (AF_INET, AF_INET6) or not isinstance(address, tuple) \
            or len(address) < 2 or _is_numeric_host(address[0]) \
            or address[0] in ("", "<broadcast>"):
        return address
    host, port = address[0], address[1]
    # An int port is kept as given (not passed through getaddrinfo, which
    # would wrap 65539 to 3): the C call then checks it, as the stdlib's does.
    numeric_port = isinstance(port, int)
    info = getaddrinfo(host, None if numeric_port else port, sock.family, sock.type,
                       sock.proto)
    if not info:
        raise error(f"getaddrinfo returned no address for {host!r}")
    sockaddr = info[0][4]
    if numeric_port:
        sockaddr = (sockaddr[0], port, *sockaddr[2:])
    if sock.family == AF_INET6 and len(address) > 2:
        sockaddr = (sockaddr[0], sockaddr[1], *address[2:])
    return sockaddr


# -- gevent's fd waits, under gevent.socket's names ---------------------------

def wait_readwrite(fileno: int, timeout: float | None = None, timeout_exc=None) -> None:
    """Park until ``fileno`` is readable or writable (gevent.socket)."""
    from labkit._park import wait_any_fd
    hub = hub_for_this_thread()
    if hub is None:
        import select
        select.select([fileno], [fileno], [], timeout)
        return
    from labkit.timeout import Timeout
    with Timeout(timeout, timeout_exc if timeout_exc is not None else _timeout_error()):
        wait_any_fd(hub, {fileno: READ | WRITE}, None)


def wait(io, timeout: float | None = None, timeout_exc=None) -> None:
    """Park until the watcher ``io`` (``hub.loop.io(fd, events)``) fires once,
    at most ``timeout`` seconds (then raise ``timeout_exc``, default
    socket.timeout). gevent.socket's ``wait``."""
    if io.callback is not None:
        raise ValueError(f"This socket is already used by another greenlet: {io.callback!r}")
    from labkit.hub import get_hub
    from labkit.timeout import Timeout
    with Timeout(timeout, timeout_exc if timeout_exc is not None else _timeout_error()):
        get_hub().wait(io)


def cancel_wait(watcher, error=None) -> None:
    """Wake the greenlet waiting on ``watcher`` with ``error`` (default
    OSError(EBADF, "File descriptor was closed in another greenlet"))."""
    from labkit.hub import get_hub
    from labkit._fileobjectcommon import cancel_wait_ex
    get_hub().cancel_wait(watcher, error if error is not None else cancel_wait_ex())


from labkit._park import wait_read, wait_write  # noqa: E402 - gevent.socket's names

#: the stdlib names this module replaces (gevent's ``__implements__``)
__implements__ = ["socket", "SocketType", "socketpair", "fromfd", "create_server",
                  "create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                  "gethostbyaddr", "getnameinfo", "getfqdn"]
#: names this module adds to the stdlib's (gevent's ``__extensions__``)
__extensions__ = ["wait", "wait_read", "wait_write", "wait_readwrite", "cancel_wait"]

# Names this module adds or replaces, on top of the stdlib's __all__.
for _name in __implements__ + __extensions__:
    if _name not in __all__:
        __all__.append(_name)
del _name
