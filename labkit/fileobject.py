"""Cooperative file objects (gevent's ``gevent.fileobject``).

    from labkit.fileobject import FileObject

    r, w = os.pipe()
    reader = FileObject(r, "rb")       # reading parks this greenlet, not the hub
    labkit.spawn(FileObject(w, "wb").write, b"hello")
    reader.read(5)

Three classes, one interface (``open()``'s arguments, a path, an fd or a
file object first; the usual file methods; ``with``; iteration by line):

- :class:`FileObjectPosix` -- the fd is made non-blocking and the greenlet
  parks while it would block: for pipes, sockets and ttys. This is
  :data:`FileObject`, the default.
- :class:`FileObjectThread` -- every call runs in the hub's thread pool:
  for regular files, whose reads never "would block" but may take the
  disk's time, and for anything else that only blocks.
- :class:`FileObjectBlock` -- no cooperation at all: a plain file object
  with this interface (for comparison, or where blocking is fine).

Closing a file object whose fd a greenlet is waiting on wakes that greenlet
with ``OSError(EBADF)``, as closing a labkit socket does.
"""
from labkit._fileobjectcommon import (FileObjectBase, FileObjectBlock,  # noqa: F401
                                      FileObjectClosed, FileObjectThread, OpenDescriptor)
from labkit._fileobjectposix import FileObjectPosix

__all__ = ["FileObjectPosix", "FileObjectThread", "FileObjectBlock", "FileObject"]

#: the default file object of this platform
FileObject = FileObjectPosix
