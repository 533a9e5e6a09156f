"""The blocking monitor: a watchdog thread that catches code stalling the loop.

A cooperative program hands control back to the hub often: every switch into
a greenlet, every hub pass and every poll writes a record into the trace
ring (tracing/recorder.py). So "the loop is blocked" has a precise meaning:
*no record for longer than the threshold, and the last one was not "poll
entered"* (waiting in poll is the loop's job, not a block; nor is a host
loop's wait between two ``tick()`` calls).

Who measures what:

- the C ring measures the block. Each record compares its timestamp with
  the previous one; a gap >= threshold is a *stall*, kept as the exact pair
  (timestamp of the record before, timestamp of the record that ended it).
  The reported duration is that pair's difference -- not the watchdog's
  sampling instants, so it is as exact as the clock;
- the watchdog thread looks at the ring's state when a block could first be
  worth a sample: half the threshold after the newest record (or after now,
  while the loop waits in poll: a block starts only when the poll returns),
  at most ``MAX_SLEEP`` later. So a loop that makes progress costs one wake
  per half threshold, not more (each wake of a thread costs ~20-50 us of
  CPU on a VM). While the newest record is older than half the threshold it
  samples the loop thread's stack (``sys._current_frames()``) every
  ``threshold / 4`` to learn *where* the time goes;
  when the stall count moves it reports the block: duration, greenlet, and
  the line in user code (frames inside labkit/, tracing/, the standard
  library and site-packages are skipped when a frame outside them exists).
  A sample counts only if the ring wrote no record between the snapshot
  that called for it and a second one read after it: on a loaded machine
  the watchdog can be descheduled between the two steps, and a stack taken
  after the block ended shows the hub (or whoever ran next), not the
  culprit. The report names the place sampled most often, with the greenlet,
  "in the hub" and stack of that place's samples.

Where the block *started* is not something a sampler can see: by the time
it looks, the frame where the greenlet resumed may have moved on or
returned. The ring knows it exactly. When the stall is noted, the C side
keeps who ran when the gap began (the greenlet of the newest resume record,
set by whoever switched to it: the hub or another greenlet) and that
greenlet's resume record; and while the monitor watches, each resume writer
notes the resumed greenlet's *resume site* (its frames from the park
function out to the first frame of user code: code, last instruction and
id, loop_c/lk_trace_py.c). So each block carries ``started`` (the user
frame and line where the blocking run began: the line after its last
switch), ``resumed_from`` ("sleep() (timer)", "wait() (Event)", "recv() (fd
7 read)") and, when a sample saw the block, whether that frame was still on
the sampled stack -- and the greenlet's name even when the watchdog got no
CPU at all while the block lasted (a loaded machine, or a block that held
the GIL throughout: one long C call). A block in a greenlet's *first* run
has no resume site (the greenlet had no frame yet when it was switched
to): its start is the first line of the function the greenlet runs
(:func:`run_place`, read from the spawn table while it runs; where it was
spawned, if it exited before anyone read it), and ``block.first_run`` says
so. ``block.first`` (the never-yielded lint's line) is the start when
known, else the first sample's place.

Each block also gets a cause (``block.cause``, a :class:`tracing.causes.Cause`):
its wall time split into the loop thread's CPU time, garbage collection
(exact, from ``gc.callbacks``) and time off the CPU, read by the same samples
(the thread's CPU clock and its /proc state), so that a report says
"CPU-bound in parse()", "GC pause" or "a blocking syscall (recv) in f()".

A block in a hub callback is found the same way (the hub's pass record is
the last record before it); its greenlet is reported as "hub". The main
greenlet running user code while the loop has nothing at all to do (no
ready callback, timer or fd) blocks nobody and is not reported.

Reports go to ``monitor.blocks``, to the recorder's trace, to ``callback``
(called from the watchdog thread) and, with ``report=True``, to stderr as
one line: ``labkit: blocked the loop for 203 ms at file.py:12 in func (name)``,
followed by ``; started at file.py:9 in func after sleep() (timer)`` when the
block began on another line than the one sampled most.

A block that goes on (a greenlet that never yields) is also reported *while*
it lasts: once it has lasted ``stuck_after`` seconds, ``on_stuck`` gets a
:class:`Stuck` (from the watchdog thread: the loop thread is the stuck one),
and ``monitor.stuck`` says how long and where until the block ends;
``monitor.last_stuck`` keeps the last one.
"""
from __future__ import annotations

import collections
import functools
import os
import site
import sys
import sysconfig
import threading

from labkit import _native
from labkit._loop import ffi, lib
import labkit.hub as _lk_hub

from tracing.causes import BlockClock, ThreadProbe, called_name, classify, gc_times
from tracing.model import Block, describe_reason
from tracing.recorder import Recorder, frame_key, resume_site

_LABKIT_DIR = os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep
_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_INTERNAL = (_LABKIT_DIR, _TRACING_DIR)
_LIBRARY = tuple(
    {os.path.abspath(p) + os.sep for p in
     [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
      *getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()]
     if p})
#: frozen standard modules (os, genericpath ...) name no file
_LIBRARY = _LIBRARY + ("<frozen ",)
_NOT_BLOCKING = (lib.LK_TR_POLL_ENTER, lib.LK_TR_HOST)
#: a gap that begins with one of these records is the hub's: it runs ready
#: callbacks (a pass), handles what a poll returned, or a greenlet just ended
_HUB_STARTS = (lib.LK_TR_PASS, lib.LK_TR_POLL_LEAVE, lib.LK_TR_EXIT)
_NO_SEQ = (1 << 64) - 1
#: The longest the watchdog sleeps (seconds): a short block is reported at
#: most this long after it ended, whatever the threshold.
MAX_SLEEP = 0.25


def user_frame(frame):
    """The frame to blame: innermost outside labkit/tracing and libraries,
    else innermost outside labkit/tracing, else the innermost."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    for skip in (_INTERNAL + _LIBRARY, _INTERNAL):
        for f in frames:
            if not f.f_code.co_filename.startswith(skip):
                return f, frames
    return (frames[0] if frames else None), frames


def _line_of(code, lasti: int) -> int:
    """The source line of instruction offset ``lasti`` in ``code``."""
    if lasti >= 0:
        for start, end, line in code.co_lines():
            if start <= lasti < end:
                return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


def _qualname(code) -> str:
    return getattr(code, "co_qualname", code.co_name)


def run_place(recorder, gid: int) -> tuple | None:
    """(file, line, function) where greenlet ``gid``'s first run starts:
    the first line of the function it runs (its ``def``), from the
    recorder's spawn table -- else, if the greenlet is gone, where it was
    spawned; None if the recorder did not see it spawned, or the function
    is labkit's or a library's (a server's handler: the user's code it
    calls is found by the samples). A greenlet's
    first run has no resume site to tell (it had no frame yet), and its
    block must not be placed wherever a sample found it later. Any thread
    (reads the side table only)."""
    if not gid:
        return None
    for info in reversed(list(recorder.spawns)):   # its newest incarnation
        if info.gid != gid:
            continue
        run = info.ref
        if run is not None:
            run = getattr(run, "_run", None) or getattr(run, "run", None)
            while isinstance(run, functools.partial):
                run = run.func
            code = getattr(getattr(run, "__func__", run), "__code__", None)
            if code is not None:
                if code.co_filename.startswith(_INTERNAL + _LIBRARY):
                    # (labkit's own -- a server's connection handler -- or a
                    # library's: the user's code starts deeper, where a
                    # sample finds it)
                    return None
                return (code.co_filename, code.co_firstlineno, _qualname(code))
        if info.path:
            _, _, line = info.site.rpartition(":")
            return (info.path, int(line) if line.isdigit() else 0, info.function)
        return None
    return None


class _Stall:
    """A copy of the ring's record of its last stall (lk_trace_state)."""
    __slots__ = ("start_ns", "end_ns", "current", "start_kind", "resume_seq",
                 "resume_why", "resume_b", "resume_ns")

    def __init__(self, state):
        self.start_ns, self.end_ns = state.stall_start_ns, state.stall_end_ns
        self.current, self.start_kind = state.stall_current, state.stall_start_kind
        self.resume_seq, self.resume_ns = state.stall_resume_seq, state.stall_resume_ns
        self.resume_why, self.resume_b = state.stall_resume_why, state.stall_resume_b

    @property
    def in_hub(self) -> bool:
        return self.start_kind in _HUB_STARTS


class _Start:
    """Where a greenlet's run began, from its resume site (recorder.resume_site).

    ``levels``: (code, lasti, frame key) innermost first; the start is the
    innermost level outside labkit/tracing and libraries, else outside
    labkit/tracing; none (``place`` None) if every level is labkit's own
    (a greenlet's first run: its function has not been called yet)."""

    def __init__(self, site):
        self.seq, self.gid, levels = site
        self.levels = levels
        self.index = -1
        for skip in (_INTERNAL + _LIBRARY, _INTERNAL):
            found = [i for i, (code, _, _) in enumerate(levels)
                     if code is not None and not code.co_filename.startswith(skip)]
            if found:
                self.index = found[0]
                break
        code, lasti, self.frame_key = levels[self.index] if self.index >= 0 else (None, -1, 0)
        self.code = code
        self.place = (code.co_filename, _line_of(code, lasti), _qualname(code)) \
            if code is not None else None
        #: the call the start frame made: the level just inside it
        self.call = _qualname(levels[self.index - 1][0]).rsplit(".", 1)[-1] \
            if self.index > 0 and levels[self.index - 1][0] is not None else None
        #: whether the sampled stack still held the start frame (set by a sample)
        self.in_sample: bool | None = None

    def walk(self, frames) -> None:
        """Walk a sampled stack (live frames, innermost first) out to the
        frame where the run started: was it still there (the same call, by
        its frame's key and code), or had it returned?"""
        self.in_sample = any(f.f_code is self.code and frame_key(f) == self.frame_key
                             for f in frames)


class Stuck:
    """The loop has been stuck for ``seconds`` (so far), in ``greenlet``, at
    the line sampled most often."""

    __slots__ = ("seconds", "greenlet", "file", "line", "function", "since_ns")

    def __init__(self, seconds: float, greenlet: str, file: str, line: int, function: str,
                 since_ns: int | None = None):
        self.seconds, self.greenlet = seconds, greenlet
        self.file, self.line, self.function = file, line, function
        #: the time of the ring's newest record when the block began (the
        #: loop writes none while it lasts): see BlockingMonitor.stuck_now
        self.since_ns = since_ns

    @property
    def location(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"

    def __str__(self) -> str:
        who = "a hub callback" if self.greenlet == "hub" else f"greenlet {self.greenlet}"
        return (f"loop stuck for {self.seconds:.1f} s in {who} at {self.location} "
                f"in {self.function}")

    def __repr__(self) -> str:
        return f"<Stuck {self}>"


class _Sampling:
    """What the watchdog learnt about the block in progress."""

    def __init__(self, start_ns: int, current: int, current_seq: int = _NO_SEQ):
        self.start_ns = start_ns
        self.current = current
        #: seq of current's resume record: its resume site's key
        self.current_seq = current_seq
        #: where current's run began (_Start), read at the first sample
        self.start = None
        #: (file, line, func, in_hub) -> how many samples saw it
        self.places = collections.Counter()
        #: the same key -> (stack, loop_idle) of its latest sample
        self.latest: dict[tuple, tuple[list[str], bool]] = {}
        #: the loop thread's CPU clock and kernel state, sampled in the block
        self.clock = BlockClock()
        #: the same key -> the call its innermost frame was in ("recv")
        self.calls: dict[tuple, str | None] = {}
        #: the first valid sample's place: where the block was first seen
        self.first_place = None
        #: where current's first run starts (run_place), read at the first
        #: sample while it runs (its side-table entry goes when it exits)
        self.run_place = None


class BlockingMonitor:
    """Watch the loop of the calling thread's hub; see the module docstring.

    Use :func:`tracing.monitor_blocking` (or ``trace(blocking=...)``).
    ``stop()`` must be called from the thread that started it.
    """

    def __init__(self, threshold: float = 0.05, callback=None, report: bool = True,
                 recorder: Recorder | None = None, stuck_after: float | None = None,
                 on_stuck=None):
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, not {threshold!r}")
        self.threshold = threshold
        self.callback = callback
        self.report = report
        #: report a block still going on after this many seconds (None: never)
        self.stuck_after = stuck_after
        self.on_stuck = on_stuck
        #: the block going on now, once it has lasted stuck_after (else None)
        self.stuck: Stuck | None = None
        #: the latest block that lasted stuck_after, going on or ended
        self.last_stuck: Stuck | None = None
        self._stuck_reported = None   # start_ns of the block on_stuck was told about
        self.blocks: list[Block] = []
        self._recorder = recorder
        self._own_recorder = recorder is None
        self._stop = threading.Event()
        self._thread = None
        self._seen_stalls = 0

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "BlockingMonitor":
        if self._own_recorder:
            # The monitor only reads the ring's state, not its records: a
            # small ring does.
            self._recorder = Recorder(capacity=1024).start()
        rec = self._recorder
        rec.monitor = self
        self._ring = rec.ring
        self._hub = rec._hub
        self._thread_id = _native.get_ident()
        self._probe = ThreadProbe()   # the loop thread's CPU clock and /proc state
        gc_times.acquire()
        self._start_ns = rec.start_ns
        self._state = ffi.new("lk_trace_state *")
        self._after_sample = ffi.new("lk_trace_state *")
        lib.lk_trace_get_state(self._ring, self._state)
        self._seen_stalls = self._state.stalls
        lib.lk_trace_set_stall_threshold(self._ring, int(self.threshold * 1e9))
        # a real thread even under green patching (labkit._native)
        self._thread = _native.start_thread(self._watch, name="labkit-blocking-monitor")
        return self

    def stop(self) -> None:
        """Stop watching. A block that ended just now is still reported."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        self._stop.set()
        thread.join()
        self._check(ffi.new("lk_trace_state *"), final=True)
        gc_times.release()
        lib.lk_trace_set_stall_threshold(self._ring, 0)
        if self._own_recorder and self._recorder.ring is not None:
            self._recorder.monitor = None
            self._recorder.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stuck_now(self) -> Stuck | None:
        """:attr:`stuck`, unless the block it describes has ended: the
        watchdog clears ``stuck`` only when it next looks (a sample period
        later, or more on a busy machine), so a caller on the loop thread,
        which the block has let go, reads the ring itself: a record written
        since the block began means it ended. Any thread."""
        stuck = self.stuck
        if stuck is None or stuck.since_ns is None or self._thread is None:
            return stuck
        state = ffi.new("lk_trace_state *")
        lib.lk_trace_get_state(self._ring, state)
        return stuck if state.last_ns == stuck.since_ns else None

    # -- the watchdog thread ----------------------------------------------
    def _watch(self) -> None:
        period = self._sample_period()
        state = ffi.new("lk_trace_state *")
        self._sampling = None
        wait = period
        while not self._stop.wait(wait):
            try:
                wait = self._check(state)
            except Exception:   # never let the watchdog die silently
                import traceback
                traceback.print_exc()
                wait = period

    def _sample_period(self) -> float:
        """Seconds between two stack samples of a block in progress."""
        return min(max(self.threshold / 4, 0.001), 0.05)

    def _check(self, state, final: bool = False) -> float:
        """Report a stall the ring has seen, sample a block in progress;
        return how long the watchdog may sleep before it looks again."""
        lib.lk_trace_get_state(self._ring, state)
        sampling = getattr(self, "_sampling", None)
        if state.stalls != self._seen_stalls:
            self._seen_stalls = state.stalls
            self.stuck = None
            if sampling is not None and sampling.start_ns != state.stall_start_ns:
                sampling = None
            self._report(_Stall(state), sampling)
            self._sampling = None
            sampling = None
        if final:
            return 0.0
        half_ns = self.threshold * 0.5e9
        if state.last_kind in _NOT_BLOCKING:
            # Waiting in poll: a block can only start after the poll
            # returns, so it is worth a sample half a threshold from now
            # at the earliest.
            return min(half_ns / 1e9, MAX_SLEEP)
        stalled_for = state.now_ns - state.last_ns
        if stalled_for < half_ns:
            # The gap since the newest record (or a block starting after
            # it) is worth a sample at last_ns + threshold/2, not before.
            return min(max((half_ns - stalled_for) / 1e9, 0.001), MAX_SLEEP)
        if sampling is None or sampling.start_ns != state.last_ns:
            sampling = self._sampling = _Sampling(state.last_ns, state.current,
                                                  state.current_seq)
            self.stuck = None
        self._sample(sampling, state.count)
        if self.stuck_after is not None and stalled_for >= self.stuck_after * 1e9:
            self._still_stuck(sampling, stalled_for / 1e9)
        return self._sample_period()

    def _still_stuck(self, sampling: _Sampling, seconds: float) -> None:
        if not sampling.places:
            return   # no sample has seen the culprit yet
        place = sampling.places.most_common(1)[0][0]
        file, line, function, in_hub = place
        who = "hub" if in_hub else self._recorder.name_of(sampling.current)
        if who == "main" and sampling.latest[place][1]:
            return   # main ran while the loop had nothing to do: no victim
        self.stuck = self.last_stuck = Stuck(seconds, who, file, line, function,
                                             sampling.start_ns)
        if self._stuck_reported == sampling.start_ns:
            return   # once per block
        self._stuck_reported = sampling.start_ns
        if self.on_stuck is not None:
            try:
                self.on_stuck(self.stuck)
            except Exception:
                import traceback
                traceback.print_exc()
        elif self.report:
            try:
                print(f"labkit: {self.stuck}", file=sys.stderr, flush=True)
            except Exception:
                pass

    def _sample(self, sampling: _Sampling, count: int) -> None:
        """Sample the loop thread's stack for the block that was in progress
        when the ring had written ``count`` records."""
        clock_sample = sampling.clock.sample(self._probe)
        frame = sys._current_frames().get(self._thread_id)
        if frame is None:
            return
        call = called_name(frame)
        blame, frames = user_frame(frame)
        hub = self._hub
        in_hub = bool(frames) and hub.owns_frame(frames[-1])
        loop_idle = not (hub.ready_count or hub.loop.active_timers or hub.loop.io_waiters)
        stack = [f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
                 for f in reversed(frames)]
        place = None
        if blame is not None:
            code = blame.f_code
            place = (code.co_filename, blame.f_lineno, code.co_name, in_hub)
        start = None
        if sampling.start is None and not in_hub:
            # The first sample: where did this run begin, and is that frame
            # still on the stack? (Frame ids mean something only now.)
            site = resume_site(self._ring, sampling.current_seq)
            if site is not None and site[1] == sampling.current and site[2]:
                start = _Start(site)
                start.walk(frames)
            if (start is None or start.place is None) and sampling.run_place is None:
                # maybe its first run (no user frame to resume in)
                sampling.run_place = run_place(self._recorder, sampling.current) or ()
        del frame, frames, blame
        # Was the block still going on? Only if no record was written since
        # the snapshot that asked for this sample (read now, after the stack).
        after = self._after_sample
        lib.lk_trace_get_state(self._ring, after)
        if after.count != count or place is None:
            return
        sampling.places[place] += 1
        sampling.latest[place] = (stack, loop_idle)
        sampling.clock.keep(clock_sample)
        sampling.calls[place] = call
        if sampling.first_place is None or (sampling.first_place[0].startswith(_INTERNAL)
                                            and not place[0].startswith(_INTERNAL)):
            # (a first sample inside labkit -- a greenlet about to call its
            # function, the hub about to run a callback -- gives way to the
            # first one in the code that then ran)
            sampling.first_place = place
        if start is not None:
            sampling.start = start

    def _tell_subscribers(self, block: Block) -> None:
        """labkit.events' subscribers get an EventLoopBlocked (gevent's
        event): ``greenlet`` is the blocker's name here (the tracer keeps
        names, not the objects), ``info`` the sampled stack."""
        from labkit import events
        if not events.subscribers:
            return
        try:
            events.notify(events.EventLoopBlocked(
                block.greenlet, block.duration,
                [f"{block.greenlet} blocked the loop for {block.duration:.3f}s at "
                 f"{block.location}" + (f" in {block.function}" if block.sampled else "")]
                + list(block.stack),
                hub=self._hub))
        except Exception:   # a subscriber's error must not stop the watchdog
            import traceback
            traceback.print_exc()

    def _report(self, stall: _Stall, sampling: _Sampling | None) -> None:
        names = self._recorder
        start_ns, end_ns = stall.start_ns, stall.end_ns
        sampled = sampling is not None and bool(sampling.places)
        if sampled:
            place, _ = sampling.places.most_common(1)[0]
            file, line, function, in_hub = place
            stack, loop_idle = sampling.latest[place]
        else:
            # No sample caught it (the watchdog got no CPU): the ring still
            # says who ran when the gap began.
            file, line, function, stack = "?", 0, "?", []
            in_hub, loop_idle = stall.in_hub, False
        current = stall.current or (sampling.current if sampling is not None else 0)
        if in_hub:
            who = "hub"
        else:
            who = names.name_of(current) if current else "?"
            if who == "main" and loop_idle:
                return   # main ran while the loop had nothing to do: no victim
        block = Block(start=(start_ns - self._start_ns) / 1e9,
                      duration=(end_ns - start_ns) / 1e9, greenlet=who, file=file,
                      line=line, function=function, stack=stack)
        if not in_hub:
            self._place_start(block, stall, sampling)
        first = sampling.first_place if sampling is not None else None
        #: where it started when known, else the first sample that saw the
        #: block (the report's line is the most sampled)
        block.first = block.started or (first[:3] if first is not None
                                        else (file, line, function))
        block.cause = self._cause(start_ns, end_ns, sampling, function,
                                  sampling.calls.get(place) if sampling is not None
                                  and sampling.places else None)
        self.blocks.append(block)
        if not self._own_recorder:
            self._recorder.blocks.append(block)
        if self.callback is not None:
            try:
                self.callback(block)
            except Exception:
                import traceback
                traceback.print_exc()
        self._tell_subscribers(block)
        if self.report:
            try:
                print(f"labkit: {block} -- {block.cause}", file=sys.stderr, flush=True)
            except Exception:
                pass

    def _place_start(self, block: Block, stall: _Stall, sampling) -> None:
        """Fill ``block.started`` (and what it resumed from) from the
        resume site of the greenlet that ran when the stall began; in its
        first run (no frame of it existed when it was switched to), from
        the function it runs."""
        start = sampling.start if sampling is not None else None
        first_run = stall.resume_ns and stall.resume_why == lib.LK_WHY_START
        if start is None or start.seq != stall.resume_seq:
            site = resume_site(self._ring, stall.resume_seq) \
                if stall.resume_seq != _NO_SEQ else None
            if site is None or site[1] != stall.current or not site[2]:
                # (a resume site without frames: a greenlet not started yet)
                first_run = first_run or (site is not None and site[1] == stall.current)
                start = None
            else:
                start = _Start(site)
        if start is None or start.place is None:
            if first_run or (start is not None and start.place is None):
                place = sampling.run_place if sampling is not None and \
                    sampling.current == stall.current else None
                place = place or run_place(self._recorder, stall.current)
                if place:
                    block.started = place
                    block.first_run = True
            return
        block.started = start.place
        block.started_frame_sampled = start.in_sample
        reason = None
        if stall.resume_ns:   # the resume record was still in the ring
            labels = {number: label for label, number in list(self._recorder.labels.items())}
            reason = describe_reason(stall.resume_why, stall.resume_b, labels)
        if start.call and reason:
            block.resumed_from = f"{start.call}() ({reason})"
        else:
            block.resumed_from = f"{start.call}()" if start.call else reason

    def _cause(self, start_ns: int, end_ns: int, sampling, function: str, call):
        """The block's :class:`~tracing.causes.Cause`: its wall time split
        into CPU, GC (exact, from gc.callbacks) and off-CPU time."""
        clock = sampling.clock if sampling is not None else BlockClock()
        gc_ns = gc_times.within(self._probe.ident, start_ns, end_ns)
        return classify((end_ns - start_ns) / 1e9, clock.cpu_share(), gc_ns / 1e9, clock,
                        function, call, threshold=self.threshold)
