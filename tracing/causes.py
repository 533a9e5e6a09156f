"""Why a block took its time: CPU, garbage collection, or off the CPU.

A block (tracing/blocking.py) is wall time during which the loop thread did
not come back to the hub. This module splits it three ways:

- **CPU**: the loop thread's own CPU time (``clock_gettime`` on its
  ``pthread_getcpuclockid`` clock -- readable from the watchdog thread),
  minus the part spent collecting garbage;
- **GC**: time inside the garbage collector in the loop thread, measured
  exactly by a ``gc.callbacks`` hook (start/stop timestamps on the same
  monotonic clock as the trace ring);
- **off the CPU**: wall - CPU. Either the thread sat in a blocking system
  call (``/proc/self/task/TID/stat`` says S or D, and ``.../syscall`` which
  call), or it was runnable and the machine did not run it (state R while
  it gained no CPU time: *descheduled*, another process had the cores).

The watchdog samples the thread's CPU clock and its /proc state while the
block lasts (:class:`BlockClock`); the CPU share of the sampled stretch is
applied to the block's exact duration, the GC time is counted exactly.
:func:`classify` turns the figures into a :class:`Cause` whose text is what
a person would say: "CPU-bound in parse()", "GC pause", "a blocking syscall
(recv) in legacy_client()", "descheduled (the machine was busy)".

Rule of the verdict: "descheduled" when the code's own time (CPU, GC, in a
call) stays under the blocking threshold -- without the busy machine there
would have been no block; else the largest of the code's own parts, with
descheduled time over a quarter of the block mentioned after it
("CPU-bound in parse(); descheduled 120 ms (the machine was busy)").
"""
from __future__ import annotations

import dis
import gc
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

#: Without CPU samples, GC must cover this share of the block to be its cause.
DOMINANT = 0.5

#: x86-64 and generic (aarch64) numbers of the calls a block is usually in.
_SYSCALLS_X86_64 = {
    0: "read", 1: "write", 7: "poll", 17: "pread64", 18: "pwrite64", 19: "readv",
    20: "writev", 23: "select", 35: "nanosleep", 42: "connect", 43: "accept",
    44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4",
    74: "fsync", 75: "fdatasync", 202: "futex", 230: "clock_nanosleep",
    232: "epoll_wait", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait",
    288: "accept4", 299: "recvmmsg", 307: "sendmmsg", 441: "epoll_pwait2",
}
_SYSCALLS_GENERIC = {
    63: "read", 64: "write", 65: "readv", 66: "writev", 67: "pread64",
    72: "pselect6", 73: "ppoll", 82: "fsync", 98: "futex", 101: "nanosleep",
    115: "clock_nanosleep", 202: "accept", 203: "connect", 206: "sendto",
    207: "recvfrom", 211: "sendmsg", 212: "recvmsg", 22: "epoll_pwait",
    242: "accept4", 260: "wait4",
}
_SYSCALLS = _SYSCALLS_X86_64 if os.uname().machine == "x86_64" else _SYSCALLS_GENERIC


def syscall_name(number: int) -> str:
    return _SYSCALLS.get(number, f"syscall {number}")


# -- GC time, exactly ------------------------------------------------------------

class GcTimes:
    """Intervals the collector ran in each thread, from ``gc.callbacks``.

    Installed while at least one user holds it (:meth:`acquire` /
    :meth:`release`); keeps the last ``keep`` intervals per thread.
    The callback costs two clock reads per collection.
    """

    def __init__(self, keep: int = 512):
        self.keep = keep
        self.intervals: dict[int, deque] = {}   # thread ident -> (start_ns, end_ns)
        self.totals: dict[int, int] = {}        # thread ident -> ns, all intervals
        self._open: dict[int, int] = {}
        self._users = 0
        self._lock = threading.Lock()

    def _callback(self, phase, info) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._open[ident] = time.monotonic_ns()
        else:
            start = self._open.pop(ident, None)
            if start is not None:
                end = time.monotonic_ns()
                line = self.intervals.get(ident)
                if line is None:
                    line = self.intervals[ident] = deque(maxlen=self.keep)
                line.append((start, end))
                self.totals[ident] = self.totals.get(ident, 0) + end - start

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                gc.callbacks.append(self._callback)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                try:
                    gc.callbacks.remove(self._callback)
                except ValueError:
                    pass

    def total(self, ident: int | None = None) -> int:
        """ns the collector has run in thread ``ident`` (default: this one)
        while the hook was installed: the difference of two readings is
        what ran between them, in O(1)."""
        return self.totals.get(threading.get_ident() if ident is None else ident, 0)

    def within(self, ident: int, start_ns: int, end_ns: int) -> int:
        """ns the collector ran in thread ``ident`` between the two instants
        (a collection still running counts up to ``end_ns``)."""
        total = 0
        for a, b in list(self.intervals.get(ident, ())):
            lo, hi = max(a, start_ns), min(b, end_ns)
            if hi > lo:
                total += hi - lo
        a = self._open.get(ident)
        if a is not None:
            lo = max(a, start_ns)
            if end_ns > lo:
                total += end_ns - lo
        return total


#: The one GC hook of the process (gc.callbacks is process-wide).
gc_times = GcTimes()


# -- the thread, seen from outside -------------------------------------------------

class ThreadProbe:
    """Read another thread's CPU clock and kernel state (Linux /proc; on
    other systems the state is unknown and only the CPU clock is read).
    Create it *in* the thread to probe."""

    def __init__(self):
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        try:
            self._clock = time.pthread_getcpuclockid(self.ident)
        except (AttributeError, OSError):
            self._clock = None
        self._task = f"/proc/self/task/{self.native_id}/"

    def cpu_ns(self) -> int | None:
        if self._clock is None:
            return None
        try:
            return time.clock_gettime_ns(self._clock)
        except OSError:   # the thread is gone
            return None

    def state(self) -> tuple[str, str | None]:
        """(kernel state letter, the system call it sits in or None).
        "R": running or runnable; "S"/"D": sleeping in a call; "?": unknown."""
        try:
            with open(self._task + "stat") as f:
                letter = f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return "?", None
        if letter not in ("S", "D"):
            return letter, None
        try:
            with open(self._task + "syscall") as f:
                first = f.read().split()[0]
        except (OSError, IndexError):
            return letter, None
        if first.lstrip("-").isdigit() and int(first) >= 0:
            return letter, syscall_name(int(first))
        return letter, None


class BlockClock:
    """The watchdog's measurements of one block while it lasts: the CPU
    clock at the first and latest sample, and what state each sample found
    the thread in."""

    __slots__ = ("first_wall", "first_cpu", "last_wall", "last_cpu", "in_call", "runnable",
                 "syscalls")

    def __init__(self):
        self.first_wall = self.first_cpu = self.last_wall = self.last_cpu = None
        self.in_call = self.runnable = 0
        self.syscalls: dict[str, int] = {}

    def sample(self, probe: ThreadProbe) -> tuple:
        """Take one sample: (wall, cpu, state, syscall) -- keep it with
        :meth:`keep` once the caller knows the block was still going on."""
        wall = time.monotonic_ns()
        cpu = probe.cpu_ns()
        letter, call = probe.state()
        return wall, cpu, letter, call

    def keep(self, sample: tuple) -> None:
        wall, cpu, letter, call = sample
        if cpu is not None:
            if self.first_wall is None:
                self.first_wall, self.first_cpu = wall, cpu
            self.last_wall, self.last_cpu = wall, cpu
        if letter in ("S", "D"):
            self.in_call += 1
            if call:
                self.syscalls[call] = self.syscalls.get(call, 0) + 1
        elif letter == "R":
            self.runnable += 1

    def cpu_share(self) -> float | None:
        """CPU time / wall time over the sampled stretch, or None if the
        samples span no time."""
        if self.first_wall is None or self.last_wall - self.first_wall <= 0:
            return None
        return min(1.0, max(0.0, (self.last_cpu - self.first_cpu)
                            / (self.last_wall - self.first_wall)))


# -- the verdict -----------------------------------------------------------------

@dataclass
class Cause:
    """Where a block's wall time went (seconds), and the verdict."""
    wall: float
    cpu: float              #: on the CPU, outside the garbage collector
    gc: float               #: in the garbage collector
    off_cpu: float          #: wall - cpu - gc: in a system call, or descheduled
    kind: str               #: "cpu", "gc", "syscall", "descheduled" or "unknown"
    function: str = "?"     #: the user function it blocked in
    call: str | None = None     #: the Python call it sat in ("recv"), for a syscall
    syscall: str | None = None  #: the kernel's name of it ("recvfrom")
    descheduled: float = 0.0    #: of off_cpu: runnable but not running (the rest: in a call)

    def __str__(self) -> str:
        where = f" in {self.function}()" if self.function and self.function != "?" else ""
        if self.kind == "cpu":
            text = f"CPU-bound{where}"
        elif self.kind == "gc":
            text = f"GC pause ({self.gc * 1e3:.0f} ms collecting garbage)"
        elif self.kind == "syscall":
            name = self.call or self.syscall or "?"
            if self.call and self.syscall and self.syscall != self.call:
                name = f"{self.call}: {self.syscall}"
            text = f"a blocking syscall ({name}){where}"
        elif self.kind == "descheduled":
            return (f"descheduled: the machine was busy ({self.descheduled * 1e3:.0f} ms "
                    f"runnable but not running){where}")
        else:
            return "cause unknown"
        if self.descheduled >= NOTE_DESCHEDULED * self.wall:
            text += f"; descheduled {self.descheduled * 1e3:.0f} ms (the machine was busy)"
        return text

    def split(self) -> str:
        return (f"wall {self.wall * 1e3:.0f} ms = CPU {self.cpu * 1e3:.0f} + "
                f"GC {self.gc * 1e3:.0f} + off-CPU {self.off_cpu * 1e3:.0f} ms")


#: A cause also mentions descheduled time above this share of the wall time.
NOTE_DESCHEDULED = 0.25


def classify(wall: float, cpu_share: float | None, gc_seconds: float, clock: BlockClock,
             function: str = "?", call: str | None = None, threshold: float = 0.0) -> Cause:
    """The :class:`Cause` of a block of ``wall`` seconds: ``cpu_share`` of
    it on the CPU (None: not measured), ``gc_seconds`` in the collector.

    The off-CPU time is divided between "in a call" and "descheduled" in
    the proportion of the watchdog's samples that found the thread sleeping
    in the kernel (S/D) or runnable (R).

    The verdict. Descheduled time stretches whatever the code did, so it is
    the cause only when the rest would not have made a block at all: when
    CPU + GC + time in calls stays under ``threshold`` (the monitor's), the
    machine, not the code, made the loop late. Otherwise the largest of
    CPU, GC and time in a call names the cause, and a large descheduled
    share is mentioned after it."""
    gc_seconds = min(gc_seconds, wall)
    if cpu_share is None:
        # No two samples inside the block: the collector holds the GIL (the
        # watchdog cannot run during a collection), or the block was short.
        kind = "gc" if gc_seconds >= DOMINANT * wall > 0 else "unknown"
        return Cause(wall, 0.0, gc_seconds, max(0.0, wall - gc_seconds) if kind == "gc" else 0.0,
                     kind, function)
    on_cpu = cpu_share * wall
    # GC time is on the CPU; the sampled share may miss it (no samples
    # while the collector holds the GIL), so count the larger.
    gc_part = gc_seconds
    cpu = max(0.0, on_cpu - gc_part)
    off = max(0.0, wall - cpu - gc_part)
    states = clock.in_call + clock.runnable
    in_call_share = clock.in_call / states if states else 1.0
    waiting, descheduled = off * in_call_share, off * (1 - in_call_share)
    parts = {"cpu": cpu, "gc": gc_part, "syscall": waiting}
    if descheduled > 0 and sum(parts.values()) < threshold:
        kind = "descheduled"
    else:
        kind = max(parts, key=parts.get)
    syscall = max(clock.syscalls, key=clock.syscalls.get) if clock.syscalls else None
    return Cause(wall, cpu, gc_part, off, kind, function,
                 call=call if kind == "syscall" else None,
                 syscall=syscall if kind == "syscall" else None,
                 descheduled=descheduled)


# -- which call a frame sits in --------------------------------------------------

_NAME_LOADS = ("LOAD_METHOD", "LOAD_ATTR", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF",
               "LOAD_FAST")
_instructions: dict = {}


def called_name(frame) -> str | None:
    """The name of the function ``frame`` is calling now ("recv" for a frame
    stopped at ``data = sock.recv(self.size)``), read from its bytecode:
    walking back from the call instruction over the instructions that
    pushed its arguments, the name load that pushed the callable. None if
    the frame is not at a call or the code is too unusual to read."""
    code = frame.f_code
    instructions = _instructions.get(code)
    if instructions is None:
        instructions = _instructions[code] = list(dis.get_instructions(code))
    lasti = frame.f_lasti
    # (f_lasti may point into the inline caches that follow the call)
    at = None
    for index, ins in enumerate(instructions):
        if ins.offset > lasti:
            break
        at = index
    if at is None or instructions[at].opname not in ("CALL", "PRECALL", "CALL_FUNCTION",
                                                     "CALL_METHOD", "CALL_KW"):
        return None
    args = instructions[at].arg or 0
    depth = 0
    adjacent = True   # the call's own PRECALL/KW_NAMES (3.11) are not arguments
    for ins in reversed(instructions[max(0, at - 64):at]):
        if adjacent and ins.opname in ("PRECALL", "KW_NAMES"):
            continue
        adjacent = False
        if depth >= args and ins.opname in _NAME_LOADS:
            return str(ins.argval)
        try:
            depth += dis.stack_effect(ins.opcode, ins.arg) if ins.opcode >= dis.HAVE_ARGUMENT \
                else dis.stack_effect(ins.opcode)
        except ValueError:
            return None
    return None
