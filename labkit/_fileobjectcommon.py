"""labkit.fileobject's private half: ``open()``'s argument rules, and the
wrapper that the three file objects share (gevent's ``_fileobjectcommon``).

:class:`OpenDescriptor` reads the arguments of ``open()`` -- a path, an fd
or a file object; mode, buffering, encoding, errors, newline, closefd --
checks them as ``io.open`` does, and builds the stack of io objects: a raw
object (a FileIO, or the cooperative one of labkit._fileobjectposix), a
buffer unless unbuffered, a TextIOWrapper unless binary.

:class:`FileObjectBase` wraps that stack. It copies the io object's methods
onto itself at construction (``read``, ``write``, ``readline`` ...), so a
call costs no ``__getattr__``; :class:`FileObjectThread` wraps each of them
to run in the hub's thread pool instead. Closing swaps the io object for a
placeholder whose every attribute raises :class:`FileObjectClosed`.
"""
from __future__ import annotations

import functools
import io
import os
import sys
from errno import EBADF

__all__ = ["OpenDescriptor", "FileObjectBase", "FileObjectBlock", "FileObjectThread",
           "FileObjectClosed", "cancel_wait_ex", "WriteallMixin", "WriteIsWriteallMixin"]


class cancel_wait_ex(IOError):
    """The fd was closed by another greenlet while this one waited on it."""

    def __init__(self):
        IOError.__init__(self, EBADF, "File descriptor was closed in another greenlet")


class FileObjectClosed(IOError):
    """An operation on a file object that was closed."""

    def __init__(self):
        IOError.__init__(self, EBADF, "Bad file descriptor (FileObject was closed)")


class WriteallMixin:
    """Adds ``writeall(data)``: write until all of it is written (a raw
    ``write`` may write less), return ``len(data)``."""

    def writeall(self, value):
        write = super().write
        total = len(value)
        view = memoryview(value) if not isinstance(value, str) else value
        while view:
            written = write(view)
            if written is None or written == len(view):
                break
            view = view[written:]
        return total


class WriteIsWriteallMixin(WriteallMixin):
    """``write`` writes everything (for unbuffered raw files)."""

    def write(self, value):
        return self.writeall(value)


class FileIO(io.FileIO):
    """io.FileIO, as a class whose instances may change ``__class__``."""
    __slots__ = ()


class WriteallFileIO(WriteIsWriteallMixin, io.FileIO):
    pass


class OpenDescriptor:
    """The arguments of ``open()``, checked; :meth:`opened` builds the io stack.

    ``fobj``: a path, an fd, or an object with ``fileno()`` (used as the raw
    file). ``bufsize`` and ``close`` are old spellings of ``buffering`` and
    ``closefd``. ``atomic_write``: an unbuffered result's ``write`` writes
    everything (``writeall``). Errors are io.open's: TypeError for a wrong
    type, ValueError for a wrong mode or a text-only argument in binary mode.
    """

    default_buffer_size = io.DEFAULT_BUFFER_SIZE

    def __init__(self, fobj, mode="r", bufsize=None, close=None, encoding=None,
                 errors=None, newline=None, buffering=None, closefd=None,
                 atomic_write=False):
        closefd = _one_of("closefd", closefd, "close", close, True)
        buffering = _one_of("buffering", buffering, "bufsize", bufsize, -1)
        if not hasattr(fobj, "fileno"):
            if not isinstance(fobj, int):
                fobj = os.fspath(fobj)
            if not isinstance(fobj, (str, bytes, int)):  # pragma: no cover
                raise TypeError(f"invalid file: {fobj!r}")
            if isinstance(fobj, (str, bytes)):
                closefd = True
        if not isinstance(mode, str):
            raise TypeError(f"invalid mode: {mode!r}")
        if not isinstance(buffering, int):
            raise TypeError(f"invalid buffering: {buffering!r}")
        if encoding is not None and not isinstance(encoding, str):
            raise TypeError(f"invalid encoding: {encoding!r}")
        if errors is not None and not isinstance(errors, str):
            raise TypeError(f"invalid errors: {errors!r}")

        modes = set(mode)
        if modes - set("axrwb+tU") or len(mode) > len(modes):
            raise ValueError(f"invalid mode: {mode!r}")
        creating, reading, writing = "x" in modes, "r" in modes, "w" in modes
        appending, updating = "a" in modes, "+" in modes
        text, binary, universal = "t" in modes, "b" in modes, "U" in modes
        can_write = creating or writing or appending or updating
        if universal:
            if can_write:
                raise ValueError("mode U cannot be combined with 'x', 'w', 'a', or '+'")
            reading = True
        if text and binary:
            raise ValueError("can't have text and binary mode at once")
        if creating + reading + writing + appending > 1:
            raise ValueError("can't have read/write/append mode at once")
        if not (creating or reading or writing or appending):
            raise ValueError("must have exactly one of read/write/append mode")
        if binary and encoding is not None:
            raise ValueError("binary mode doesn't take an encoding argument")
        if binary and errors is not None:
            raise ValueError("binary mode doesn't take an errors argument")
        if binary and newline is not None:
            raise ValueError("binary mode doesn't take a newline argument")
        if binary and buffering == 1:
            import warnings
            warnings.warn("line buffering (buffering=1) isn't supported in binary mode, "
                          "the default buffer size will be used", RuntimeWarning, 4)

        self._fobj = fobj
        self.fileio_mode = ("x" if creating else "") + ("r" if reading else "") + \
            ("w" if writing else "") + ("a" if appending else "") + ("+" if updating else "")
        self.mode = self.fileio_mode + ("t" if text else "") + ("b" if binary else "")
        self.creating, self.reading, self.writing = creating, reading, writing
        self.appending, self.updating = appending, updating
        self.text, self.binary, self.universal = text, binary, universal
        self.can_write = can_write
        self.can_read = reading or updating
        #: neither 't' nor 'b' and no encoding: str, as plain open() gives
        self.native = not text and not binary and not encoding and not errors
        self.buffering = buffering
        self.encoding = encoding
        self.errors = errors
        self.newline = newline
        self.closefd = closefd
        self.atomic_write = atomic_write
        self._opened = None
        self._opened_raw = None

    def is_fd(self) -> bool:
        return isinstance(self._fobj, int)

    def opened(self):
        """The io object to use: raw, buffered, and decoded as the mode says."""
        if self._opened is None:
            raw = self.opened_raw()
            try:
                self._opened = self._wrapped(raw)
            except BaseException:
                raw.close()
                raise
        return self._opened

    def opened_raw(self):
        """The raw io object (opened once)."""
        if self._opened_raw is None:
            self._opened_raw = self._do_open_raw()
        return self._opened_raw

    def _raw_object_is_new(self, raw) -> bool:
        return self._fobj is not raw

    def _do_open_raw(self):
        if hasattr(self._fobj, "fileno"):
            return self._fobj
        return FileIO(self._fobj, self.fileio_mode, self.closefd)

    @staticmethod
    def is_buffered(stream) -> bool:
        return isinstance(stream, (io.BufferedIOBase, io.TextIOBase)) or \
            getattr(stream, "buffer", None) is not None

    @classmethod
    def buffer_size_for_stream(cls, stream) -> int:
        try:
            size = os.fstat(stream.fileno()).st_blksize
        except (OSError, AttributeError):
            return cls.default_buffer_size
        return size if size > 1 else cls.default_buffer_size

    def _buffered(self, stream, buffering):
        if self.updating:
            buffer_class = io.BufferedRandom
        elif self.creating or self.writing or self.appending:
            buffer_class = io.BufferedWriter
        else:
            buffer_class = io.BufferedReader
        try:
            return buffer_class(stream, buffering)
        except AttributeError:   # an object that is not a RawIOBase
            return stream

    def _make_atomic_write(self, result, raw):
        if result.__class__ is FileIO:
            result.__class__ = WriteallFileIO
            return result
        raise NotImplementedError(f"don't know how to make {result!r} write atomically")

    def _wrapped(self, raw):
        if self.binary and isinstance(raw, io.TextIOBase):
            raise ValueError("Unable to perform binary IO on top of text IO stream")
        result = raw
        buffering = self.buffering
        line_buffering = False
        if buffering == 1 or buffering < 0 and raw.isatty():
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = self.buffer_size_for_stream(result)
        if buffering != 0 and not self.is_buffered(result):
            result = self._buffered(result, buffering)
        if not self.binary and not isinstance(raw, io.TextIOBase):
            result = io.TextIOWrapper(result, self.encoding, self.errors, self.newline,
                                      line_buffering)
        if result is not raw or self._raw_object_is_new(raw):
            try:
                result.mode = self.mode
            except (AttributeError, TypeError):
                pass
        if self.atomic_write and not self.is_buffered(result) \
                and not isinstance(result, WriteIsWriteallMixin):
            if result is not raw or self._raw_object_is_new(raw):
                result = self._make_atomic_write(result, raw)
        return result


def _one_of(name, value, old_name, old_value, default):
    if value is not None and old_value is not None:
        raise TypeError(f"Cannot specify both {name}={value} and {old_name}={old_value}")
    if value is None and old_value is None:
        return default
    return value if value is not None else old_value


class _ClosedIO:
    """Stands in for the io object of a closed file object: keeps its
    ``name``; anything else raises FileObjectClosed."""

    __slots__ = ("name",)

    def __init__(self, io_obj):
        try:
            self.name = io_obj.name
        except AttributeError:
            pass

    def __getattr__(self, name):
        if name == "name":
            raise AttributeError(name)
        raise FileObjectClosed

    def __bool__(self) -> bool:
        return False


class FileObjectBase:
    """What the file objects share: the io object's methods as their own,
    ``close`` (once), ``closed``, iteration by line, ``with``."""

    _delegate_methods = ("flush", "fileno", "writable", "readable", "seek", "seekable",
                         "tell", "read", "readline", "readlines", "read1", "readinto",
                         "write", "writeall", "writelines", "truncate")

    _io = None

    def __init__(self, descriptor: OpenDescriptor):
        self._io = descriptor.opened()
        self._close = descriptor.closefd
        self._do_delegate_methods()

    @property
    def io(self):
        """The wrapped io object."""
        return self._io

    @io.setter
    def io(self, new_io) -> None:
        self._io = new_io
        self._do_delegate_methods()

    def _do_delegate_methods(self) -> None:
        for name in self._delegate_methods:
            method = getattr(self._io, name, None)
            ours = hasattr(type(self), name)
            if method and not ours:
                setattr(self, name, self._wrap_method(method))
            elif not ours and name in self.__dict__:
                delattr(self, name)

    def _wrap_method(self, method):
        """How a method of the io object becomes ours (as is, here)."""
        return method

    @property
    def closed(self) -> bool:
        return isinstance(self._io, _ClosedIO)

    def close(self) -> None:
        if isinstance(self._io, _ClosedIO):
            return
        fobj = self._io
        self._io = _ClosedIO(fobj)
        try:
            self._do_close(fobj, self._close)
        finally:
            for name in self._delegate_methods:
                self.__dict__.pop(name, None)

    def _do_close(self, fobj, closefd) -> None:
        raise NotImplementedError

    def __getattr__(self, name):
        return getattr(self._io, name)

    def __repr__(self) -> str:
        closed = "closed" if self.closed else ""
        return f"<{type(self).__name__} at {id(self):#x} {closed}_fobj={self.io!r}" \
               f"{self._extra_repr()}>"

    def _extra_repr(self) -> str:
        return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __bool__(self) -> bool:
        return True


class FileObjectBlock(FileObjectBase):
    """A plain synchronous file object: it blocks the hub while it works
    (for files that never block for long, or for comparison)."""

    def __init__(self, fobj, *args, **kwargs):
        FileObjectBase.__init__(self, OpenDescriptor(fobj, *args, **kwargs))

    def _do_close(self, fobj, closefd) -> None:
        fobj.close()


class FileObjectThread(FileObjectBase):
    """A file object whose every blocking call runs in the hub's thread
    pool: the greenlet waits, the hub keeps running. Works for any file
    (regular files too, which never report "would block").

    ``lock``: True (default) runs the calls one at a time (a Semaphore);
    False runs them concurrently; or pass your own Semaphore. ``threadpool``:
    the pool to use (default ``get_hub().threadpool``)."""

    def __init__(self, *args, **kwargs):
        lock = kwargs.pop("lock", True)
        threadpool = kwargs.pop("threadpool", None)
        descriptor = OpenDescriptor(*args, **kwargs)
        from labkit.hub import get_hub
        from labkit.lock import DummySemaphore, Semaphore
        self.threadpool = threadpool or get_hub().threadpool
        self.lock = lock
        if self.lock is True:
            self.lock = Semaphore()
        elif not self.lock:
            self.lock = DummySemaphore()
        if not hasattr(self.lock, "__enter__"):
            raise TypeError(f"Expected a Semaphore or boolean, got {type(self.lock)!r}")
        # One cell shared with the wrapped methods: None once closed.
        self._io_holder = [descriptor.opened()]
        FileObjectBase.__init__(self, descriptor)

    def _do_close(self, fobj, closefd) -> None:
        self._io_holder[0] = None
        try:
            with self.lock:
                self.threadpool.apply(fobj.flush)
        finally:
            if closefd:
                def close(fobj=fobj):
                    try:
                        fobj.close()
                    except BaseException:
                        return sys.exc_info()
                    return None
                exc_info = self.threadpool.apply(close)
                if exc_info:
                    raise exc_info[1].with_traceback(exc_info[2])

    def _do_delegate_methods(self) -> None:
        FileObjectBase._do_delegate_methods(self)
        self._io_holder[0] = self._io

    def _extra_repr(self) -> str:
        return f" threadpool={self.threadpool!r}"

    def _wrap_method(self, method):
        holder, lock, threadpool = self._io_holder, self.lock, self.threadpool

        @functools.wraps(method)
        def in_thread(*args, **kwargs):
            if holder[0] is None:
                raise FileObjectClosed
            if _shutting_down():
                # No thread can start once the interpreter shuts its
                # threads down (a patched sys.stdout is flushed after that).
                return method(*args, **kwargs)
            with lock:
                return threadpool.apply(method, args, kwargs)

        return in_thread


def _shutting_down() -> bool:
    """True once the interpreter has begun shutting its threads down."""
    import threading
    return sys.is_finalizing() or not threading.main_thread().is_alive()
