"""labkit.fileobject's cooperative half: a raw io object on a non-blocking
fd that parks the greenlet when the fd would block (gevent's
``_fileobjectposix``).

:class:`GreenFileDescriptorIO` puts its fd in non-blocking mode; ``read``
and ``write`` try the syscall, and on EAGAIN wait for readiness through
:func:`labkit._park.wait_fd` (the hub's fd wait), then try again. Closing
it goes through :func:`labkit._park.forget_fd`: a greenlet parked on the fd
is woken with ``OSError(EBADF)`` before the fd is closed.

This only helps fds that can block -- pipes, sockets, ttys. A regular file
never reports "would block", so reading one still holds the hub for as
long as the disk takes (use FileObjectThread for those).
"""
from __future__ import annotations

import os
from errno import EBADF
from io import DEFAULT_BUFFER_SIZE, BytesIO, RawIOBase, UnsupportedOperation

from labkit._fileobjectcommon import (FileObjectBase, OpenDescriptor,
                                      WriteIsWriteallMixin)
from labkit._loop import READ, WRITE

__all__ = ["GreenFileDescriptorIO", "GreenOpenDescriptor", "FileObjectPosix"]


class GreenFileDescriptorIO(RawIOBase):
    """A raw io object on fd ``fileno`` whose reads and writes park the
    greenlet instead of blocking the thread. ``closefd``: close the fd on
    close()."""

    _closed = False
    _seekable = None
    #: an object that must live (and is closed) with us: the file we took the fd of
    _keep_alive = None

    def __init__(self, fileno: int, open_descriptor: OpenDescriptor, closefd: bool = True):
        RawIOBase.__init__(self)
        from labkit.os import make_nonblocking
        self._closefd = closefd
        self._fileno = fileno
        self.name = fileno
        self.mode = open_descriptor.mode
        make_nonblocking(fileno)
        self._readable = open_descriptor.can_read
        self._writable = open_descriptor.can_write
        from labkit.hub import hub_for_this_thread
        # The hub is bound now, not at the first wait or at close: a hub made
        # later could get an fd number that our fd had -- and close() would
        # close the hub's epoll fd if the caller closed ours behind our back.
        self._hub = hub_for_this_thread()

    def isatty(self) -> bool:
        return os.isatty(self._fileno)

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        if self._seekable is None:
            try:
                os.lseek(self._fileno, 0, os.SEEK_CUR)
            except OSError:
                self._seekable = False
            else:
                self._seekable = True
        return self._seekable

    def fileno(self) -> int:
        return self._fileno

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        fileno, closefd, keep_alive = self._fileno, self._closefd, self._keep_alive
        self._fileno = self._keep_alive = None

        def finish(fd: int) -> None:
            try:
                if closefd:
                    os.close(fd)
            finally:
                if hasattr(keep_alive, "close"):
                    keep_alive.close()

        from labkit._park import forget_fd
        hub, self._hub = self._hub, None
        if hub is None or hub.loop.closed or not forget_fd(hub, fileno, finish):
            finish(fileno)

    def _read(self, n: int) -> bytes:
        if not self._readable:
            raise UnsupportedOperation("read")
        from labkit._park import wait_fd
        while True:
            try:
                return os.read(self._fileno, n)
            except BlockingIOError:
                pass
            wait_fd(self._fileno, READ)

    def readall(self) -> bytes:
        out = BytesIO()
        while True:
            try:
                data = self._read(DEFAULT_BUFFER_SIZE)
            except OSError as exc:   # closed by another greenlet meanwhile
                if exc.errno != EBADF:
                    raise
                data = None
            if not data:
                break
            out.write(data)
        return out.getvalue()

    def readinto(self, b) -> int:
        data = self._read(len(b))
        n = len(data)
        try:
            b[:n] = data
        except TypeError:
            import array
            if not isinstance(b, array.array):
                raise
            b[:n] = array.array("b", data)
        return n

    def write(self, b) -> int:
        if not self._writable:
            raise UnsupportedOperation("write")
        from labkit._park import wait_fd
        while True:
            try:
                return os.write(self._fileno, b)
            except BlockingIOError:
                pass
            wait_fd(self._fileno, WRITE)

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fileno, offset, whence)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} fileno={self._fileno} mode={self.mode!r}>"


class GreenFileDescriptorIOWriteall(WriteIsWriteallMixin, GreenFileDescriptorIO):
    pass


class GreenOpenDescriptor(OpenDescriptor):
    """OpenDescriptor whose raw object is a GreenFileDescriptorIO: on the fd
    given, or on the fd of the file opened (or passed), which it keeps
    alive and closes with itself."""

    def _do_open_raw(self):
        if self.is_fd():
            return GreenFileDescriptorIO(self._fobj, self, closefd=self.closefd)
        raw = OpenDescriptor._do_open_raw(self)
        fileio = GreenFileDescriptorIO(raw.fileno(), self, closefd=False)
        fileio._keep_alive = raw
        try:
            fileio.name = raw.name
        except AttributeError:
            del fileio.name
        return fileio

    def _make_atomic_write(self, result, raw):
        if result.__class__ is GreenFileDescriptorIO:
            result.__class__ = GreenFileDescriptorIOWriteall
            return result
        return OpenDescriptor._make_atomic_write(self, result, raw)


class FileObjectPosix(FileObjectBase):
    """A cooperative file object on a pipe, socket or tty: reads and writes
    park the greenlet while the fd would block. Same arguments as
    ``open()`` (a path, an fd or a file object first). ``fileio`` is the
    raw GreenFileDescriptorIO underneath (non-blocking byte reads)."""

    default_bufsize = DEFAULT_BUFFER_SIZE

    def __init__(self, *args, **kwargs):
        descriptor = GreenOpenDescriptor(*args, **kwargs)
        FileObjectBase.__init__(self, descriptor)
        self.fileio = descriptor.opened_raw()

    def _do_close(self, fobj, closefd) -> None:
        try:
            fobj.close()
            self.fileio.close()
        finally:
            self.fileio = None
