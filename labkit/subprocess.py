"""Cooperative subprocesses: the stdlib ``subprocess`` module, with waiting done by the hub.

    from labkit import subprocess
    out = subprocess.check_output(["sleep", "1"])      # parks this greenlet only
    p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = p.communicate(b"hello", timeout=5)

What parks instead of blocking, and on what::

    p.wait(timeout)       pidfd readable (Linux >= 5.3)   --> waitpid(WNOHANG) reaps it
                          elsewhere: waitpid(WNOHANG) polled with backoff (1 ms .. 50 ms)
    p.stdout.read()       the pipe's fd readable           --> os.read
    p.stdin.write()       the pipe's fd writable           --> os.write
    p.communicate()       one greenlet per pipe, then wait()

Why a pidfd and not SIGCHLD: a pidfd is an fd like any other, so the hub
waits for "this child exited" exactly as it waits for a socket, with no
process-wide signal handler to share with other libraries (or with the
Jupyter kernel), and no race between reaping and waiting. Where there is no
pidfd, polling is the portable fallback: a SIGCHLD handler would need the
main thread and would still have to poll every child it woke up for.

The contract, as the stdlib's (same names, arguments and exceptions):

- :class:`Popen` is ``subprocess.Popen``: ``wait``, ``communicate`` and
  ``poll`` behave as documented there, ``timeout`` included (``wait`` and
  ``communicate`` raise ``TimeoutExpired``, and ``communicate`` can be
  called again afterwards, as in the stdlib). The pipes are file objects of
  the same kinds (binary or text, buffered or not).
- :func:`run`, :func:`call`, :func:`check_call`, :func:`check_output`,
  :func:`getoutput`, :func:`getstatusoutput`: on a timeout the child is
  killed and reaped before ``TimeoutExpired`` is raised.
- Starting the child (fork + exec) is still a blocking call; it is short.
- In a thread without a hub (see ``labkit.hub.hub_for_this_thread``)
  everything blocks that thread, as the stdlib would.
"""
from __future__ import annotations

import io
import os
import subprocess as _stdlib
from subprocess import (  # noqa: F401 - the stdlib's names, re-exported
    DEVNULL, PIPE, STDOUT, CalledProcessError, CompletedProcess,
    SubprocessError, TimeoutExpired, list2cmdline)
from time import monotonic

from labkit._loop import READ, WRITE, ConcurrentObjectUseError
from labkit.greenlet import Greenlet, joinall
from labkit._park import forget_fd, sleep, wait_fd
from labkit.hub import hub_for_this_thread

__all__ = ["Popen", "PIPE", "STDOUT", "DEVNULL", "CalledProcessError",
           "CompletedProcess", "SubprocessError", "TimeoutExpired", "run", "call",
           "check_call", "check_output", "getoutput", "getstatusoutput",
           "list2cmdline"]

#: bytes read from a pipe per os.read
PIPE_CHUNK = 65536
# Backoff of the polling fallback (no pidfd): first and longest pause, seconds.
POLL_FIRST, POLL_MAX = 0.001, 0.05

_pidfd_open = getattr(os, "pidfd_open", None)


class _PipeIO(io.RawIOBase):
    """The raw layer of one pipe end: non-blocking fd, parking reads/writes.

    Wraps the FileIO the stdlib opened, which keeps owning (and closes) the fd.
    """

    def __init__(self, fileio: io.FileIO):
        super().__init__()
        self._file = fileio
        self._fd = fileio.fileno()
        os.set_blocking(self._fd, False)

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return self._file.readable()

    def writable(self) -> bool:
        return self._file.writable()

    def readinto(self, buffer) -> int:
        while True:
            try:
                return os.readv(self._fd, [buffer])
            except BlockingIOError:
                pass
            wait_fd(self._fd, READ)

    def write(self, data) -> int:
        while True:
            try:
                return os.write(self._fd, data)
            except BlockingIOError:
                pass
            wait_fd(self._fd, WRITE)

    def close(self) -> None:
        if not self.closed:
            super().close()
            # Before the number can be reused: a greenlet parked on the pipe
            # gets EBADF, and the fd is closed after it has unwound.
            hub = hub_for_this_thread()
            if hub is None or not forget_fd(hub, self._fd, self._close_file):
                self._file.close()

    def _close_file(self, fd: int) -> None:
        self._file.close()


def _cooperative(file):
    """The same kind of file object as ``file`` (text/buffered/raw), over a _PipeIO.

    The stdlib's wrappers are detached, not closed: the fd stays open and
    now belongs to the new stack.
    """
    text = None
    if isinstance(file, io.TextIOWrapper):
        text = dict(encoding=file.encoding, errors=file.errors,
                    line_buffering=file.line_buffering,
                    write_through=file.write_through)
        file = file.detach()
    buffered = isinstance(file, (io.BufferedReader, io.BufferedWriter))
    if buffered:
        file = file.detach()
    raw = _PipeIO(file)
    new = raw
    if buffered:
        new = io.BufferedReader(raw) if raw.readable() else io.BufferedWriter(raw)
    if text is not None:
        new = io.TextIOWrapper(new, **text)
    return new


class _LinkTo:
    """A link that calls ``callback(popen)``; equal to another for the same
    callback, so that unlink finds it."""

    __slots__ = ("callback", "popen")

    def __init__(self, callback, popen):
        self.callback = callback
        self.popen = popen

    def __call__(self, _event) -> None:
        self.callback(self.popen)

    def __eq__(self, other) -> bool:
        return isinstance(other, _LinkTo) and other.callback == self.callback

    __hash__ = None


class Popen(_stdlib.Popen):
    """``subprocess.Popen`` whose waits park the calling greenlet."""

    def __init__(self, *args, **kwargs):
        self._pidfd = None
        self._io_greenlets = ()
        super().__init__(*args, **kwargs)
        for name in ("stdin", "stdout", "stderr"):
            file = getattr(self, name)
            if file is not None:
                setattr(self, name, _cooperative(file))
        if _pidfd_open is not None:
            try:
                # Race-free: the child cannot be reaped before we reap it.
                self._pidfd = _pidfd_open(self.pid)
            except OSError:  # ENOSYS (old kernel), EMFILE ...: poll instead
                self._pidfd = None

    # -- waiting for the exit -------------------------------------------------
    def _wait(self, timeout):
        """The stdlib's wait() calls this; park instead of blocking."""
        if self.returncode is not None:
            return self.returncode
        if hub_for_this_thread() is None:
            return super()._wait(timeout)
        deadline = None if timeout is None else monotonic() + timeout
        pause = POLL_FIRST
        while self._internal_poll() is None:
            remaining = None if deadline is None else deadline - monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(self.args, timeout)
            if self._pidfd is not None:
                try:
                    wait_fd(self._pidfd, READ, remaining)
                    continue
                except TimeoutError:
                    continue  # the loop re-checks, then raises TimeoutExpired
                except ConcurrentObjectUseError:
                    pass  # another greenlet waits on the pidfd: poll meanwhile
            sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, POLL_MAX)
        return self.returncode

    # -- links (gevent's: labkit.wait([popen]) waits for the exit) ----------
    def rawlink(self, callback) -> None:
        """Call ``callback(self)`` in the hub once the child has exited (at
        once if it has). A greenlet waits for the exit on the first link."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        exited = self._exited()
        exited.rawlink(_LinkTo(callback, self))

    def unlink(self, callback) -> None:
        exited = getattr(self, "_exit_event", None)
        if exited is not None:
            exited.unlink(_LinkTo(callback, self))

    def ready(self) -> bool:
        """True once the exit status is known."""
        return self.returncode is not None or self.poll() is not None

    def _exited(self):
        exited = getattr(self, "_exit_event", None)
        if exited is None:
            from labkit.event import Event
            from labkit.greenlet import spawn
            exited = self._exit_event = Event()
            if self.returncode is not None:
                exited.set()
            else:
                spawn(self._set_when_exited, exited)
        return exited

    def _set_when_exited(self, exited) -> None:
        try:
            self.wait()
        finally:
            exited.set()

    def _handle_exitstatus(self, *args, **kwargs):
        # Called by the stdlib when it reaps the child: the pidfd is done.
        super()._handle_exitstatus(*args, **kwargs)
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            hub = hub_for_this_thread()
            if hub is not None:
                hub.loop.io_forget(pidfd)
            os.close(pidfd)

    # -- talking to it --------------------------------------------------------
    def communicate(self, input=None, timeout=None):
        """Send ``input``, read stdout/stderr to EOF, wait for the exit.

        One greenlet per pipe, so a child that fills its stderr while we
        write its stdin cannot deadlock us. On ``TimeoutExpired`` those
        greenlets keep going; calling communicate again picks them up.
        """
        if hub_for_this_thread() is None:
            return super().communicate(input, timeout)
        if self._communication_started and input:
            raise ValueError("Cannot send input after starting communication")
        deadline = None if timeout is None else monotonic() + timeout
        if not self._communication_started:
            self._communication_started = True
            self._start_io(input)
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        joinall(self._io_greenlets, timeout=remaining)
        out = self._collected(self.stdout, self._stdout_parts)
        err = self._collected(self.stderr, self._stderr_parts)
        if not all(g.dead for g in self._io_greenlets):
            raise TimeoutExpired(self.args, timeout, output=out, stderr=err)
        for greenlet in self._io_greenlets:
            if greenlet.exception is not None:
                raise greenlet.exception
        for file in (self.stdout, self.stderr):
            if file is not None:
                file.close()
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        try:
            self.wait(remaining)
        except TimeoutExpired as exc:
            exc.timeout = timeout
            raise
        return out, err

    def _start_io(self, input) -> None:
        self._stdout_parts, self._stderr_parts = [], []
        greenlets = []
        if self.stdin is not None:
            self.stdin.flush()
            if input:
                if self.text_mode:
                    input = input.encode(self.stdin.encoding, self.stdin.errors)
                greenlets.append(Greenlet.spawn(self._feed, input))
            else:
                self.stdin.close()
        for file, parts in ((self.stdout, self._stdout_parts),
                            (self.stderr, self._stderr_parts)):
            if file is not None:
                greenlets.append(Greenlet.spawn(self._drain, file.fileno(), parts))
        self._io_greenlets = greenlets

    def _feed(self, data: bytes) -> None:
        fd = self.stdin.fileno()
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view[:PIPE_CHUNK]):]
                except BlockingIOError:
                    wait_fd(fd, WRITE)
        except BrokenPipeError:
            pass  # the child exited without reading it all: as the stdlib
        finally:
            try:
                self.stdin.close()
            except BrokenPipeError:
                pass

    @staticmethod
    def _drain(fd: int, parts: list) -> None:
        while True:
            try:
                data = os.read(fd, PIPE_CHUNK)
            except BlockingIOError:
                wait_fd(fd, READ)
                continue
            if not data:
                return
            parts.append(data)

    def _collected(self, file, parts):
        if file is None:
            return None
        data = b"".join(parts)
        if self.text_mode:
            data = self._translate_newlines(data, file.encoding, file.errors)
        return data

    def _stop_io(self) -> None:
        """Kill the pipe greenlets (before their files are closed)."""
        for greenlet in self._io_greenlets:
            greenlet.kill(block=True)

    def __exit__(self, *exc_info):
        self._stop_io()
        return super().__exit__(*exc_info)


# -- the convenience functions, as the stdlib's ------------------------------------

def run(*popenargs, input=None, capture_output=False, timeout=None, check=False,
        **kwargs) -> CompletedProcess:
    """``subprocess.run``: on a timeout the child is killed, then reaped."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used "
                             "with capture_output.")
        kwargs["stdout"] = kwargs["stderr"] = PIPE
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.poll()
        if check and retcode:
            raise CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return CompletedProcess(process.args, retcode, stdout, stderr)


def call(*popenargs, timeout=None, **kwargs) -> int:
    """Run the command, wait for it, return its exit status."""
    with Popen(*popenargs, **kwargs) as process:
        try:
            return process.wait(timeout=timeout)
        except BaseException:
            process.kill()
            raise


def check_call(*popenargs, **kwargs) -> int:
    """``call``, raising CalledProcessError on a non-zero exit status."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args", popenargs[0] if popenargs else None)
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs, timeout=None, **kwargs):
    """Run the command and return its stdout; CalledProcessError on failure."""
    for forbidden in ("stdout", "check"):
        if forbidden in kwargs:
            raise ValueError(f"{forbidden} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        text = kwargs.get("universal_newlines") or kwargs.get("text") \
            or kwargs.get("encoding") or kwargs.get("errors")
        kwargs["input"] = "" if text else b""
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd, *, encoding=None, errors=None) -> tuple[int, str]:
    """``(exitcode, output)`` of ``cmd`` run in a shell, stderr included."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT,
                            encoding=encoding, errors=errors)
        exitcode = 0
    except CalledProcessError as exc:
        data, exitcode = exc.output, exc.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd, *, encoding=None, errors=None) -> str:
    """The output (stdout and stderr) of ``cmd`` run in a shell."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]
