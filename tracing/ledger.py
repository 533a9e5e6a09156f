"""The ledger: per-greenlet running totals read from a recorder's ring.

A :class:`Ledger` belongs to one running :class:`~tracing.recorder.Recorder`
(:func:`ledger_for`). Each :meth:`Ledger.update` reads only the records
written since the previous one (``lk_trace_read`` from a sequence number)
and adds them to an :class:`Account` per greenlet incarnation: switches,
busy / scheduled / idle time, wake-ups and how many were its own
(``sleep(0)``, zero timeouts), its longest slice and its longest ready
stretch -- and to the loop's window figures (polls, poll time, passes,
callbacks per pass, lag). :mod:`tracing.snapshot` turns them into columns,
:mod:`tracing.lints` into findings.

The reading rules are the model's (tracing/model.py): a greenlet runs from
its resume record to the next record other than a spawn; between two of
its slices it is off the CPU -- *scheduled* if it was ready, *idle* if it
waited. The ring holds resumes, not wake-ups, so "ready since" is exact for
a ``sleep(0)`` (ready the whole gap) and otherwise bounded below by the
start of the hub's pass (or the end of the poll) that resumed it.

Cost: ~0.2-0.3 us of the hub thread's time per record (one Python pass with
its state in locals). Records overwritten before they were read are counted
(``lost``), and after such a gap every greenlet counts as touched.
"""
from __future__ import annotations

import struct
import weakref
from collections import deque

from labkit._loop import ffi, lib

__all__ = ["Ledger", "Account", "ledger_for", "ZERO_TIMEOUT_NS", "NOTABLE_NS"]

_RECORD = struct.Struct("=qIIqq")
_RESUME, _SPAWN, _EXIT = lib.LK_TR_RESUME, lib.LK_TR_SPAWN, lib.LK_TR_EXIT
_POLL_ENTER, _POLL_LEAVE = lib.LK_TR_POLL_ENTER, lib.LK_TR_POLL_LEAVE
_PASS = lib.LK_TR_PASS
_WHY_START, _WHY_READY, _WHY_TIMER = lib.LK_WHY_START, lib.LK_WHY_READY, lib.LK_WHY_TIMER

#: A timer wake-up after a park shorter than this counts as a zero timeout
#: (a self wake-up, for the spinning lint), in ns.
ZERO_TIMEOUT_NS = 1_000_000


class Account:
    """One greenlet incarnation's totals in a :class:`Ledger` (ns)."""

    __slots__ = ("switches", "busy", "scheduled", "idle", "wakes", "self_wakes", "out",
                 "longest", "longest_at", "most_scheduled", "most_scheduled_at",
                 "spawned", "exited")

    def __init__(self, spawned: int | None = None):
        self.switches = 0
        self.busy = self.scheduled = self.idle = 0
        self.wakes = 0              #: resumes other than the first start
        self.self_wakes = 0         #: of them: sleep(0) and zero timeouts
        self.out = spawned          #: when its last slice ended (or it was spawned)
        self.longest = 0            #: its longest slice without a switch
        self.longest_at = 0         #: when that slice began
        self.most_scheduled = 0     #: its longest stretch ready but not running (woken, not started)
        self.most_scheduled_at = 0  #: when that stretch ended (it resumed)
        self.spawned = spawned
        self.exited = None


class Ledger:
    """Running totals of one recorder's ring, brought up to date by
    :meth:`update` (hub's thread). Used by :func:`snapshot` and the lints;
    get the one of a recorder with :func:`ledger_for`."""

    BATCH = 16384   # records read per lk_trace_read (512 KiB of buffer)

    def __init__(self, recorder):
        # (weak: ledgers are kept in a map keyed weakly by their recorder)
        self._recorder = weakref.ref(recorder)
        self.seq = 0                  #: the next record to read
        self.accounts: dict[int, Account] = {}
        #: (name, Account) of greenlets that exited, worth a lint (see forget_exited)
        self.finished: deque = deque(maxlen=1000)
        self.lost = 0
        #: ids of the greenlets that ran, were spawned or exited since the
        #: last take_touched() (after lost records: a set that holds everything)
        self.touched: set = set()
        self._exited: list = []      # ids whose EXIT was read, for forget_exited
        self._buffer = ffi.new("lk_trace_entry[]", self.BATCH)
        self._first = ffi.new("uint64_t *")
        self._running = None          # (Account, start ns) of the open slice
        self._segment = 0             # start of the hub's current pass / dispatch
        self._poll_start = None
        self._poll_left = None        # when the loop last left poll (lag)
        self._window_start = recorder.start_ns
        self._window()

    def _window(self) -> None:
        self.polls = self.passes = self.callbacks = 0
        self.poll_ns = self.lag_max = self.lag_sum = self.lags = 0

    def update(self) -> int:
        """Read the records written since the last update; the new count."""
        recorder = self._recorder()
        ring = recorder.ring if recorder is not None else None
        if ring is None:
            return 0
        total = 0
        while True:
            n = lib.lk_trace_read(ring, self._buffer, self.BATCH, self.seq, self._first)
            first = self._first[0]
            if first > self.seq:          # overwritten before we read them
                self.lost += first - self.seq
                self.touched = _Everything()   # anyone may have run in what was lost
                self._running = None      # the slice in progress is unknown now
                self._poll_start = self._poll_left = None
            if n <= 0:
                break
            self._consume(_RECORD.iter_unpack(ffi.buffer(self._buffer, n * _RECORD.size)))
            self.seq = first + n
            total += n
            if n < self.BATCH:
                break
        return total

    def take_touched(self) -> set:
        """The ``touched`` set, and start a new one."""
        touched, self.touched = self.touched, set()
        return touched

    def _consume(self, records) -> None:
        # One pass over the new records. Hot: state lives in locals (written
        # back at the end) and the slice that ends is closed inline.
        accounts, touched, exited = self.accounts, self.touched, self._exited
        RESUME, SPAWN, PASS, POLL_ENTER, POLL_LEAVE, EXIT = (
            _RESUME, _SPAWN, _PASS, _POLL_ENTER, _POLL_LEAVE, _EXIT)
        START, READY, TIMER, ZERO = _WHY_START, _WHY_READY, _WHY_TIMER, ZERO_TIMEOUT_NS
        run_acc, run_start = self._running if self._running is not None else (None, 0)
        segment, poll_start, poll_left = self._segment, self._poll_start, self._poll_left
        for ts, kind, arg, a, b in records:
            if run_acc is not None and kind != SPAWN:   # the running slice ends here
                ran = ts - run_start
                run_acc.busy += ran
                run_acc.out = ts
                if ran > run_acc.longest:
                    run_acc.longest, run_acc.longest_at = ran, run_start
                run_acc = None
            if kind == RESUME:
                acc = accounts.get(a)
                if acc is None:
                    acc = accounts[a] = Account()
                acc.switches += 1
                out = acc.out
                if out is not None:
                    if arg == START:      # its first start: ready since spawned
                        waited = ts - out
                    else:
                        gap = ts - out
                        acc.wakes += 1
                        if arg == READY:
                            waited = gap
                            acc.self_wakes += 1
                        else:
                            waited = ts - (segment if segment > out else out)
                            if arg == TIMER and gap < ZERO:
                                acc.self_wakes += 1
                        acc.idle += gap - waited
                    acc.scheduled += waited
                    # (the wait to start is not starving: a spawn storm
                    # makes the last of a thousand wait for the others)
                    if waited > acc.most_scheduled and arg != START:
                        acc.most_scheduled, acc.most_scheduled_at = waited, ts
                run_acc, run_start = acc, ts
                touched.add(a)
            elif kind == SPAWN:
                accounts[a] = Account(spawned=ts)
                touched.add(a)
            elif kind == PASS:
                segment = ts
                if poll_left is None:   # the first pass of a tick: lag starts
                    poll_left = ts
                self.passes += 1
                self.callbacks += arg
            elif kind == POLL_ENTER:
                poll_start = ts
                if poll_left is not None:
                    lag = ts - poll_left
                    self.lags += 1
                    self.lag_sum += lag
                    if lag > self.lag_max:
                        self.lag_max = lag
            elif kind == POLL_LEAVE:
                if poll_start is not None:
                    self.poll_ns += ts - poll_start
                    self.polls += 1
                poll_start = None
                poll_left = segment = ts
            elif kind == EXIT:
                acc = accounts.get(a)
                if acc is not None:
                    acc.exited = ts
                    exited.append(a)
                touched.add(a)
            else:   # HOST, MARK: the thread goes elsewhere
                poll_left = None
        self._running = (run_acc, run_start) if run_acc is not None else None
        self._segment, self._poll_start, self._poll_left = segment, poll_start, poll_left

    def take_window(self, now_ns: int) -> dict:
        """The loop's figures for the window that ends now (seconds; the
        fields of :class:`tracing.snapshot.LoopStats` of the same names),
        and start a new window."""
        window = max(0, now_ns - self._window_start)
        figures = dict(
            window=window / 1e9, polls=self.polls, poll_time=self.poll_ns / 1e9,
            passes=self.passes,
            callbacks_per_pass=self.callbacks / self.passes if self.passes else 0.0,
            lag_max=self.lag_max / 1e9,
            lag_mean=self.lag_sum / self.lags / 1e9 if self.lags else 0.0,
            lost_records=self.lost)
        self._window_start = now_ns
        self._window()
        return figures

    def forget_exited(self) -> None:
        """Drop the accounts of greenlets that exited (after a snapshot showed
        them); the ones with a slice or a ready stretch of 10 ms or more go
        to ``finished`` (name, Account; the last 1,000), for the lints."""
        exited, self._exited = self._exited, []
        for gid in exited:
            acc = self.accounts.get(gid)
            if acc is None or acc.exited is None:
                continue   # its id was reused by a newer spawn since
            del self.accounts[gid]
            if max(acc.longest, acc.most_scheduled) >= NOTABLE_NS or \
                    acc.wakes >= 20:
                recorder = self._recorder()
                name = recorder.name_of(gid) if recorder is not None else f"greenlet-{gid:#x}"
                self.finished.append((name, acc))


#: A finished greenlet's account is kept for the lints if it ran or waited
#: ready this long in one stretch (ns), or was woken 20 times or more.
NOTABLE_NS = 10_000_000

class _Everything(set):
    """A touched set after lost records: every greenlet counts as touched."""

    def __contains__(self, item) -> bool:
        return True


_ledgers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def ledger_for(recorder) -> Ledger:
    """The :class:`Ledger` of ``recorder`` (created on first use: it reads
    from the start of the ring)."""
    ledger = _ledgers.get(recorder)
    if ledger is None:
        ledger = _ledgers[recorder] = Ledger(recorder)
    return ledger
