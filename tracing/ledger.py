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

Cost: the records are read the way :mod:`tracing.live_timeline` reads them
(``numpy.frombuffer`` of the raw bytes, :data:`RECORD_DTYPE`)
and a batch is folded in a fixed number of numpy passes (one sort by
greenlet id, then per-incarnation reductions), with Python only per
greenlet incarnation met and per exit. Under the 50-connection echo load
on the 2-core VM (load ~11) that was ~0.3 us of the hub thread's time per
record, against ~0.5 us for one Python pass per record (a batch has a
fixed cost of ~0.3-0.5 ms: some forty numpy calls and Python per greenlet
met). Batches of fewer than :data:`NUMPY_FROM` records, and all of them
without numpy (a production process need not have it), are folded one by
one in Python (:meth:`Ledger._fold_python`, the reference the numpy fold
is tested against). Records overwritten before they were read are counted
(``lost``), and after such a gap every greenlet counts as touched.
Record kinds this module does not know (a newer recorder's) are read as
"the thread went elsewhere": they end the running slice, like HOST.

One fold for everyone: each record is folded once (``Ledger.folded``),
whoever brings the ledger up to date -- the console's snapshot, the lints,
the timeline's :class:`~tracing.dashboard.Dashboard`. A timeline does not
fold the records again: it asks for a :class:`Tap` (:meth:`Ledger.tap`) and
gets, per batch folded, :class:`Slices` -- who ran from when to when, where
each wait began and what ended it, the hub's passes, spawns and exits --
computed in the same numpy passes as the accounts (:meth:`Ledger._emit`;
with a tap every batch is folded with numpy). ``Ledger()`` without a
recorder folds records read elsewhere (:meth:`Ledger.fold`).
"""
from __future__ import annotations

import struct
import weakref
from collections import deque

from labkit._loop import ffi, lib

try:
    import numpy as _np
except ImportError:     # the one-by-one fold below
    _np = None

#: The raw record layout (tracing.recorder._RECORD, "=qIIqq") as a numpy
#: dtype: how the ring's records are read with numpy, here and by
#: :mod:`tracing.live_timeline` (None without numpy).
RECORD_DTYPE = None if _np is None else _np.dtype(
    [("ts", "<i8"), ("kind", "<u4"), ("arg", "<u4"), ("a", "<i8"), ("b", "<i8")])

__all__ = ["Ledger", "Account", "Slices", "Tap", "ledger_for", "ZERO_TIMEOUT_NS", "NOTABLE_NS",
           "RECORD_DTYPE", "OWNER_POLL", "OWNER_HUB"]

_RECORD = struct.Struct("=qIIqq")
_RESUME, _SPAWN, _EXIT = lib.LK_TR_RESUME, lib.LK_TR_SPAWN, lib.LK_TR_EXIT
_POLL_ENTER, _POLL_LEAVE = lib.LK_TR_POLL_ENTER, lib.LK_TR_POLL_LEAVE
_PASS, _MARK = lib.LK_TR_PASS, lib.LK_TR_MARK
_WHY_START, _WHY_READY, _WHY_TIMER = lib.LK_WHY_START, lib.LK_WHY_READY, lib.LK_WHY_TIMER

#: Batches of at least this many records are folded with numpy, smaller
#: ones one by one: the numpy fold has a fixed cost of ~0.3-0.5 ms a batch
#: here (some forty numpy calls, and Python per greenlet met), the
#: one-by-one fold ~0.3 us a record. Both give the same (tested).
NUMPY_FROM = 1500
#: An update in pieces (with a ``pace``) reads at most this many records at
#: a time when what is left is too few for numpy: folded one by one, a
#: record costs ~0.3-0.7 us, so a refresh's few hundred records in one
#: batch were one step of ~0.4 ms, longer than a piece by itself.
PIECE_RECORDS = 256

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

    #: records read per lk_trace_read (128 KiB of buffer). Folded a batch at a
    #: time: numpy's temporaries of a few thousand records stay in the
    #: allocator's pools (a batch of 16,384 cost ~1.6x as much per record here)
    BATCH = 4096

    def __init__(self, recorder=None):
        # (weak: ledgers are kept in a map keyed weakly by their recorder)
        self._recorder = weakref.ref(recorder) if recorder is not None else _no_recorder
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
        self._window_start = recorder.start_ns if recorder is not None else 0
        #: the process the ring's records were read in (see _forked)
        self._pid = recorder.pid if recorder is not None else None
        #: records folded so far: each record read is folded once, by one
        #: of the two folds, whoever asked for the update (the console's
        #: snapshot, the lints, the timeline's Dashboard)
        self.folded = 0
        self._taps: list = []         # Tap: a timeline's Slices of each batch
        self._tail = None             # the newest record's run, for the taps (see _emit)
        self._mark_ends: dict = {}    # gid -> end of its trace-start run (see _emit)
        self._window()

    def _window(self) -> None:
        self.polls = self.passes = self.callbacks = 0
        self.poll_ns = self.lag_max = self.lag_sum = self.lags = 0

    def update(self, pace=None) -> int:
        """Read the records written since the last update; the new count.

        ``pace``: called after each batch of :data:`BATCH` records -- of
        :data:`PIECE_RECORDS` when fewer than :data:`NUMPY_FROM` are left (a
        :class:`tracing.pace.Pace`, which may let the hub run); then
        only the records written before the call are read (the loop does
        not chase the hub), and the ring is looked up again after each
        batch (the recorder may have stopped meanwhile). Each batch is
        folded whole, so an update of the same ledger running meanwhile
        reads on from where this one stopped."""
        recorder = self._recorder()
        ring = recorder.ring if recorder is not None else None
        if ring is None:
            return 0
        if recorder.pid != self._pid:
            self._forked(recorder)
        target = lib.lk_trace_count(ring) if pace is not None else None
        total = 0
        size = self.BATCH
        while True:
            if pace is not None:
                if total:
                    pace()
                    ring = recorder.ring
                    if ring is None or self.seq >= target:
                        break
                left = target - self.seq
                size = self.BATCH if left >= NUMPY_FROM or left <= 0 else \
                    min(left, PIECE_RECORDS, self.BATCH)
            n = lib.lk_trace_read(ring, self._buffer, size, self.seq, self._first)
            first = self._first[0]
            if first > self.seq:          # overwritten before we read them
                self.lost += first - self.seq
                self.touched = _Everything()   # anyone may have run in what was lost
                self._running = None      # the slice in progress is unknown now
                self._poll_start = self._poll_left = None
                self._tail = None
            if n <= 0:
                break
            self._fold_batch(ffi.buffer(self._buffer, n * _RECORD.size), n, first)
            total += n
            if n < size:
                break
        return total

    def _forked(self, recorder) -> None:
        """In a forked child: the recorder emptied its copy of the ring and
        numbers records from 0 again (tracing/recorder.py, fork), so read
        from 0. The accounts stay -- the parent's greenlets live on in the
        child until the child's own records say they ran or exited -- but
        nothing in flight at the fork is known."""
        self._pid = recorder.pid
        self.seq = 0
        self.touched = _Everything()
        self._running = None
        self._poll_start = self._poll_left = None
        self._tail = None
        self._window_start = recorder.start_ns

    def fold(self, data: bytes) -> int:
        """Fold raw records (the ring's layout, :data:`RECORD_DTYPE`, oldest
        first) that follow those folded so far, as :meth:`update` does with
        the ring's: for a ledger made without a recorder (``Ledger()``),
        fed a recording read elsewhere. Returns the count."""
        n = len(data) // _RECORD.size
        if n * _RECORD.size != len(data):
            raise ValueError(f"data must be whole records of {_RECORD.size} bytes, "
                             f"not {len(data)} bytes")
        if n:
            self._fold_batch(data, n, self.seq)
        return n

    def _fold_batch(self, data, n: int, first: int) -> None:
        if _np is not None and n >= NUMPY_FROM:
            self._fold(_np.frombuffer(data, RECORD_DTYPE), first)
        elif self._taps:
            # (small batches: the snapshot's second look after its pieces,
            # a refresh of an idle hub -- numpy's fixed cost would be most of it)
            records, starts = list(_RECORD.iter_unpack(data)), []
            self._fold_python(records, starts)
            self._emit_python(records, first, starts)
        else:
            self._fold_python(_RECORD.iter_unpack(data))
            self._tail = None     # (the taps' carried run is not kept without taps)
        self.seq = first + n
        self.folded += n

    def tap(self, limit: int = 1 << 18) -> "Tap":
        """Also keep, for a timeline, what each batch folded from now on
        says about time (:class:`Slices`); take them with
        :meth:`Tap.take`, and :meth:`untap` when done. At most ``limit``
        records' worth is kept untaken (older batches are dropped and
        counted in ``Tap.dropped``; ~100 bytes a record: the default is
        ~6 s of a busy echo server's records). Needs numpy."""
        if _np is None:
            raise RuntimeError("a ledger's tap needs numpy")
        if not (isinstance(limit, int) and limit > 0):
            raise ValueError(f"limit must be a positive int, not {limit!r}")
        tap = Tap(limit)
        self._taps.append(tap)
        return tap

    def untap(self, tap: "Tap") -> None:
        """Stop keeping Slices for ``tap`` (idempotent)."""
        if tap in self._taps:
            self._taps.remove(tap)

    def take_touched(self) -> set:
        """The ``touched`` set, and start a new one."""
        touched, self.touched = self.touched, set()
        return touched

    def _fold_python(self, records, starts: list | None = None) -> None:
        """Fold ``records`` ((ts, kind, arg, a, b) tuples, oldest first)
        one by one: the reading rules written out plainly. Used without
        numpy, for small batches, and by the tests as the reference for
        :meth:`_fold`. ``starts``: if a list, gets where each resume's wait
        began (as :meth:`_resumes` returns it, for :meth:`_emit_python`)."""
        # State lives in locals (written back at the end) and the slice
        # that ends is closed inline.
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
                if starts is not None:
                    starts.append(out if out is not None and arg != START else 0)
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

    def _fold(self, recs, first: int | None = None) -> None:
        """Fold ``recs`` (a numpy array of :data:`RECORD_DTYPE`, oldest
        first; ``first``: the sequence number of its first record) into the
        accounts and the window: the same reading as
        :meth:`_fold_python`, in a fixed number of numpy passes over the
        batch (one sort, by greenlet id), with Python only per greenlet
        incarnation met and per exit. With taps, the batch's
        :class:`Slices` too, from the same passes (:meth:`_emit`)."""
        n = len(recs)
        if n == 0:
            return
        waits = self._fold_accounts(recs, n)
        if self._taps:
            self._emit(recs, self.seq if first is None else first, *waits)

    def _fold_accounts(self, recs, n: int) -> tuple:
        """The accounts and the window (see _fold); returns what
        :meth:`_emit` reuses: (kind, ts, following, is_spawn, is_resume,
        is_pass, is_leave, is_enter, wait_start or None)."""
        np = _np
        kind, ts = recs["kind"], recs["ts"].copy()
        is_resume, is_spawn, is_exit = kind == _RESUME, kind == _SPAWN, kind == _EXIT
        is_pass, is_enter, is_leave = kind == _PASS, kind == _POLL_ENTER, kind == _POLL_LEAVE
        # HOST, MARK and kinds this reading does not know: the thread goes elsewhere
        is_other = ~(is_resume | is_spawn | is_exit | is_pass | is_enter | is_leave)
        index = np.arange(n)
        accounts = self.accounts
        # The record that ends the slice record i begins: the next one that
        # is not a spawn (n: none yet).
        ends_slice = np.where(is_spawn, n, index)
        following = np.empty(n + 1, np.int64)
        following[n] = n
        following[:n] = np.minimum.accumulate(ends_slice[::-1])[::-1]
        # The slice running when the previous batch ended ends at this
        # batch's first record other than a spawn.
        if self._running is not None and following[0] < n:
            acc, start = self._running
            end = int(ts[following[0]])
            ran = end - start
            acc.busy += ran
            acc.out = end
            if ran > acc.longest:
                acc.longest, acc.longest_at = ran, start
            self._running = None
        segment = self._segment    # (before the batch: the resumes need it)
        self._loop_figures(ts, recs["arg"], index, is_pass, is_enter, is_leave, is_other)
        shared = (kind, ts, following, is_spawn, is_resume, is_pass, is_leave, is_enter)
        rel = np.flatnonzero(is_resume | is_spawn | is_exit)
        if not len(rel):
            return shared + (None,)
        # One key per greenlet incarnation met (a spawn under an id starts
        # a new one): the records sorted by id, in time order within an id.
        gids = recs["a"][rel]
        order = np.argsort(gids, kind="stable")
        rel = rel[order]                      # record indices, grouped by key
        gids = gids[order]
        spawned = is_spawn[rel]
        starts = np.empty(len(rel), bool)
        starts[0] = True
        np.not_equal(gids[1:], gids[:-1], out=starts[1:])
        new_gid = starts.copy()
        starts |= spawned
        key = np.cumsum(starts) - 1
        heads = np.flatnonzero(starts)
        key_gid = gids[heads].tolist()
        self.touched.update(gids[new_gid].tolist())
        # Per key: its first resume (an unknown greenlet's account is made there)
        resumed = is_resume[rel]
        first_resume = np.full(len(heads), n, np.int64)
        res_pos = np.flatnonzero(resumed)
        res_keys = key[res_pos]
        if len(res_pos):
            group = np.empty(len(res_pos), bool)
            group[0] = True
            np.not_equal(res_keys[1:], res_keys[:-1], out=group[1:])
            first_resume[res_keys[group]] = rel[res_pos[group]]
        accs, made_at, out0, known0 = [], [], [], []
        for gid, fresh, spawn_ts, first in zip(key_gid, spawned[heads].tolist(),
                                               ts[rel[heads]].tolist(), first_resume.tolist()):
            made = -1
            if fresh:
                acc = accounts[gid] = Account(spawned=spawn_ts)
            else:
                acc = accounts.get(gid)
                if acc is None and first < n:
                    acc = accounts[gid] = Account()
                    made = first
            accs.append(acc)
            made_at.append(made)
            known = acc is not None and made < 0 and acc.out is not None
            out0.append(acc.out if known else 0)
            known0.append(known)
        wait_start = None
        if len(res_pos):
            res, start_at = self._resumes(ts, recs["arg"], rel[res_pos], res_keys, following,
                                          is_pass | is_leave, segment, accs, out0, known0)
            if self._taps:
                wait_start = np.zeros(n, np.int64)
                wait_start[res] = start_at
        # Exits (few): one by one, in time order.
        exits = np.flatnonzero(is_exit[rel])
        if len(exits):
            exits = exits[np.argsort(rel[exits])]
            for i, k in zip(rel[exits].tolist(), key[exits].tolist()):
                acc = accs[k]
                if acc is None or made_at[k] > i:
                    continue        # no account yet when it exited
                acc.exited = int(ts[i])
                self._exited.append(key_gid[k])
        return shared + (wait_start,)

    def _resumes(self, ts, arg, res, keys, following, is_segment, carried_segment, accs,
                 out0, known0) -> None:
        """Switches, slices and the waits before them (see _fold): ``res``
        the resume records' indices grouped by key (``keys``, non-decreasing),
        in time order within a key."""
        np = _np
        n = len(ts)
        when = ts[res]
        why = arg[res]
        # Each slice ends at the next record other than a spawn; the last
        # resume's may still run.
        nxt = following[res + 1]
        closed = nxt < n
        end = ts[np.minimum(nxt, n - 1)]
        ran = end - when
        # When each greenlet's previous slice ended: its previous resume's
        # end in this batch, else its account's ``out``.
        heads = np.empty(len(res), bool)
        heads[0] = True
        np.not_equal(keys[1:], keys[:-1], out=heads[1:])
        head_pos = np.flatnonzero(heads)
        head_keys = keys[head_pos]
        out = np.empty(len(res), np.int64)
        out[1:] = end[:-1]
        out[head_pos] = np.array(out0, np.int64)[head_keys]
        known = np.ones(len(res), bool)
        known[head_pos] = np.array(known0, bool)[head_keys]
        # The start of the hub's pass (or the end of the poll) before each resume.
        last = np.maximum.accumulate(np.where(is_segment, np.arange(n), -1))[res]
        segment = np.where(last >= 0, ts[np.maximum(last, 0)], carried_segment)
        start, ready = why == _WHY_START, why == _WHY_READY
        gap = when - out
        # ready since: the end of its slice (START, READY), else the later of
        # that and the start of the pass that resumed it
        waited = when - np.maximum(segment, out)
        plain = start | ready
        waited[plain] = gap[plain]
        waited[~known] = 0
        wake = known & ~start
        self_wake = wake & (ready | ((why == _WHY_TIMER) & (gap < ZERO_TIMEOUT_NS)))
        idle = np.where(wake, gap - waited, 0)
        busy = np.where(closed, ran, 0)
        # Per key: sums and maxima over its run of resumes (reduceat).
        switches = np.diff(np.append(head_pos, len(res))).tolist()
        sums = [np.add.reduceat(values, head_pos).tolist()
                for values in (wake.astype(np.int64), self_wake.astype(np.int64), waited, idle,
                               busy)]
        ends = np.where(closed, end, -1)
        last_end = np.maximum.reduceat(ends, head_pos).tolist()
        longest, longest_at = _first_max(ran, closed, when, head_pos)
        most, most_at = _first_max(waited, wake, when, head_pos)
        for j, k in enumerate(head_keys.tolist()):
            acc = accs[k]
            acc.switches += switches[j]
            acc.wakes += sums[0][j]
            acc.self_wakes += sums[1][j]
            acc.scheduled += sums[2][j]
            acc.idle += sums[3][j]
            acc.busy += sums[4][j]
            if last_end[j] >= 0:
                acc.out = last_end[j]
            if longest[j] > acc.longest:
                acc.longest, acc.longest_at = longest[j], longest_at[j]
            if most[j] > acc.most_scheduled:
                acc.most_scheduled, acc.most_scheduled_at = most[j], most_at[j]
        still = np.flatnonzero(~closed)     # at most one: the newest record
        if len(still):
            self._running = (accs[int(keys[still[0]])], int(when[still[0]]))
        # For the taps: where each wait began (0: unknown, or a first start)
        return res, np.where(known & ~start, out, 0)

    def _loop_figures(self, ts, arg, index, is_pass, is_enter, is_leave, is_other) -> None:
        """The window's polls, passes and lag, and the state carried to
        the next batch (see _fold)."""
        np = _np
        n = len(ts)
        self.passes += int(is_pass.sum())
        self.callbacks += int(arg[is_pass].sum())
        # poll_left (when the loop last left poll) before each record: set
        # by a POLL_LEAVE, cleared by HOST/MARK, set by a PASS while clear.
        anchor = np.maximum.accumulate(np.where(is_leave | is_other, index, -1))
        following = np.empty(n + 1, np.int64)       # the first PASS at or after i
        following[n] = n
        following[:n] = np.minimum.accumulate(np.where(is_pass, index, n)[::-1])[::-1]
        carried = self._poll_left

        def poll_left_at(query, at):
            # query: record indices; at: the anchor before each (-1: none)
            from_leave = (at >= 0) & is_leave[np.maximum(at, 0)]
            value = np.where(from_leave, ts[np.maximum(at, 0)], 0)
            valid = from_leave.copy()
            if carried is not None:
                value = np.where(at < 0, carried, value)
                valid |= at < 0
                need_pass = (at >= 0) & ~from_leave
            else:
                need_pass = ~from_leave
            nxt = following[at + 1]
            by_pass = need_pass & (nxt < query)
            value = np.where(by_pass, ts[np.minimum(nxt, n - 1)], value)
            return value, valid | by_pass

        enters = np.flatnonzero(is_enter)
        if len(enters):
            left, valid = poll_left_at(enters, anchor[enters])
            if valid.any():
                lags = ts[enters][valid] - left[valid]
                self.lags += int(valid.sum())
                self.lag_sum += int(lags.sum())
                self.lag_max = max(self.lag_max, int(lags.max()))
        # poll_start before each POLL_LEAVE: the POLL_ENTER since the last LEAVE.
        marks = np.maximum.accumulate(np.where(is_enter | is_leave, index, -1))
        leaves = np.flatnonzero(is_leave)
        if len(leaves):
            before = np.where(leaves > 0, marks[np.maximum(leaves - 1, 0)], -1)
            entered = (before >= 0) & is_enter[np.maximum(before, 0)]
            start = np.where(entered, ts[np.maximum(before, 0)], 0)
            if self._poll_start is not None:
                start = np.where(before < 0, self._poll_start, start)
                entered |= before < 0
            self.polls += int(entered.sum())
            self.poll_ns += int((ts[leaves][entered] - start[entered]).sum())
        # The state after the batch.
        segments = np.flatnonzero(is_pass | is_leave)
        if len(segments):
            self._segment = int(ts[segments[-1]])
        if marks[-1] >= 0:
            self._poll_start = int(ts[marks[-1]]) if is_enter[marks[-1]] else None
        left, valid = poll_left_at(np.array([n]), anchor[-1:])
        self._poll_left = int(left[0]) if valid[0] else None

    def _emit_python(self, records, seq0: int, starts: list) -> None:
        """:meth:`_emit` one record at a time, for a batch folded by
        :meth:`_fold_python` (``starts``: where each resume's wait began).
        The same Slices, the same carried ``_tail`` (tested against it)."""
        np = _np
        RESUME, SPAWN, PASS, ENTER, LEAVE, EXIT, MARK, START = (
            _RESUME, _SPAWN, _PASS, _POLL_ENTER, _POLL_LEAVE, _EXIT, _MARK, _WHY_START)
        marks = self._mark_ends
        tail = self._tail
        runs, waits, passes, spawns, exits = [], [], [], [], []
        resumes = iter(starts)
        for i, (ts, kind, arg, a, b) in enumerate(records):
            seq = seq0 + i
            if kind == SPAWN:
                spawns.append((seq, a, arg))
                continue
            if tail is not None:     # the previous record's run ends here
                t_seq, t_owner, t_start, t_wait, t_pass, t_mark = tail
                if t_owner != _OWNER_NONE:
                    runs.append((t_seq, t_owner, t_start, ts))
                if t_mark:
                    marks[t_owner] = ts
                if t_wait is not None:
                    if marks and t_wait[2] == 0 and t_wait[4] != START:
                        end = marks.get(t_wait[1])
                        if end is not None and end < t_wait[3]:
                            del marks[t_wait[1]]
                            t_wait = t_wait[:2] + (end,) + t_wait[3:]
                    waits.append(t_wait)
                if t_pass is not None:
                    passes.append(t_pass)
            wait = pass_ = None
            mark = False
            if kind == RESUME:
                owner = a
                wait = (seq, a, next(resumes), ts, arg, b)
            elif kind == PASS:
                owner, pass_ = OWNER_HUB, (ts, arg)
            elif kind == LEAVE:
                owner = OWNER_HUB
            elif kind == ENTER:
                owner = OWNER_POLL
            elif kind == MARK and arg == 0:
                owner, mark = a, True
            else:
                owner = _OWNER_NONE
                if kind == EXIT:
                    exits.append((seq, a))
            tail = (seq, owner, ts, wait, pass_, mark)
        self._tail = tail

        def columns(rows, width):
            array = np.array(rows, np.int64).reshape(len(rows), width)
            return [array[:, j] for j in range(width)]

        batch = Slices(seq0, len(records), *columns(runs, 4), *columns(waits, 6),
                       *columns(passes, 2), *columns(spawns, 3), *columns(exits, 2))
        for tap in self._taps:
            tap._put(batch)

    def _emit(self, recs, seq0, kind, ts, following, is_spawn, is_resume, is_pass, is_leave,
              is_enter, wait_start) -> None:
        """The batch's :class:`Slices`, to each tap: the runs, waits and
        passes of the records whose run ended in this batch (the newest
        record's run ends at the next batch's first record: it is carried
        in ``_tail``, with its wait or pass, and comes with that batch),
        and the batch's spawns and exits. ``wait_start``: per record, where
        the wait its resume ended began (_resumes: the end of that
        greenlet's previous slice), None if the batch has no resume."""
        np = _np
        n = len(ts)
        a, arg, b = recs["a"], recs["arg"], recs["b"]
        is_mark0 = (kind == _MARK) & (arg == 0)   # trace start: the caller runs
        owner = np.full(n, _OWNER_NONE, np.int64)
        owner[is_pass | is_leave] = OWNER_HUB
        owner[is_enter] = OWNER_POLL
        opens = is_resume | is_mark0
        owner[opens] = a[opens]
        if wait_start is None:
            wait_start = np.zeros(n, np.int64)
        nonspawn = np.flatnonzero(~is_spawn)
        body = nonspawn[:-1]
        r = body[owner[body] != _OWNER_NONE]
        run = [seq0 + r, owner[r], ts[r], ts[following[r + 1]]]
        w = body[is_resume[body]]
        wait = [seq0 + w, a[w], wait_start[w], ts[w], arg[w], b[w]]
        p = body[is_pass[body]]
        passes = [ts[p], arg[p]]
        # trace-start runs: (index of the record that ends them, greenlet, end)
        marks = [(int(following[i + 1]), int(owner[i]), int(ts[following[i + 1]]))
                 for i in r[is_mark0[r]].tolist()]
        wait_close = None   # (index of the record that ends each wait's run: see below)
        tail = self._tail
        if tail is not None and len(nonspawn):
            t_seq, t_owner, t_start, t_wait, t_pass, t_mark = tail
            end = int(ts[nonspawn[0]])
            if t_owner != _OWNER_NONE:
                run = [np.concatenate(([v], col)) for v, col in
                       zip((t_seq, t_owner, t_start, end), run)]
            if t_wait is not None:
                wait = [np.concatenate(([v], col)) for v, col in zip(t_wait, wait)]
                wait_close = [int(nonspawn[0])]
            if t_pass is not None:
                passes = [np.concatenate(([v], col)) for v, col in zip(t_pass, passes)]
            if t_mark:
                marks.insert(0, (int(nonspawn[0]), t_owner, end))
        if len(nonspawn):
            i = int(nonspawn[-1])
            self._tail = (
                seq0 + i, int(owner[i]), int(ts[i]),
                (seq0 + i, int(a[i]), int(wait_start[i]), int(ts[i]), int(arg[i]), int(b[i]))
                if is_resume[i] else None,
                (int(ts[i]), int(arg[i])) if is_pass[i] else None,
                bool(is_mark0[i]))
        # A greenlet that started the trace ran from its mark: its first
        # wait begins where that run ended (it has no slice in the accounts).
        # (Rare: in the order the records end their runs, as one by one.)
        unknown = np.flatnonzero((wait[2] == 0) & (wait[4] != _WHY_START)) \
            if (marks or self._mark_ends) and len(wait[0]) else np.empty(0, np.int64)
        if len(unknown) or marks:
            closes = (wait_close or []) + following[w + 1].tolist()
            events = sorted([(close, 0, gid, end) for close, gid, end in marks] +
                            [(closes[j], 1, j, 0) for j in unknown.tolist()])
            wait[2] = wait[2].copy()
            for _close, what, key, end in events:
                if what == 0:
                    self._mark_ends[key] = end
                    continue
                gid = int(wait[1][key])
                end = self._mark_ends.get(gid)
                if end is not None and end < wait[3][key]:
                    del self._mark_ends[gid]
                    wait[2][key] = end
        spawns = np.flatnonzero(is_spawn)
        exits = np.flatnonzero(kind == _EXIT)
        batch = Slices(seq0, n, *run, *wait, *passes, seq0 + spawns, a[spawns], arg[spawns],
                       seq0 + exits, a[exits])
        for tap in self._taps:
            tap._put(batch)

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


#: Owners of a run in :class:`Slices` other than a greenlet id: the poll,
#: and the hub's passes and dispatch.
OWNER_POLL, OWNER_HUB = -1, -2
_OWNER_NONE = -3     # after an exit, a host hand-off, a trace stop: nobody


class Slices:
    """What one batch of the ledger's fold says about time, for a timeline
    (:class:`tracing.live_timeline.Strip`): numpy arrays in time order,
    each entry with the sequence number (``*_seq``) of the record it came
    from. The reading is the ledger's (the module docstring), computed in
    the same passes as the accounts.

    - runs: ``run_owner`` (a greenlet id, :data:`OWNER_POLL` or
      :data:`OWNER_HUB`) ran from ``run_start`` to ``run_end`` (ns): each
      record that starts a run (a resume, a pass, poll enter or leave, the
      trace-start mark) until the next record other than a spawn;
    - waits, one per resume: greenlet ``wait_owner`` waited from
      ``wait_start`` (the end of its previous run; 0 if unknown or its
      first start) to ``wait_end`` (the resume), ended by ``wait_why``
      (``LK_WHY_*``) with ``wait_detail`` (the record's ``b``: a label,
      or a sleep's lateness);
    - passes of the hub: ``pass_ts``, ``pass_ready`` (callbacks run);
    - ``spawn_seq``/``spawn_gid``/``spawn_index`` (index in the
      recorder's spawn table) and ``exit_seq``/``exit_gid``.

    A batch holds the records ``first`` .. ``first + count - 1``; the
    newest record's run (and its wait or pass) comes with the next batch,
    when it has ended."""

    __slots__ = ("first", "count", "run_seq", "run_owner", "run_start", "run_end",
                 "wait_seq", "wait_owner", "wait_start", "wait_end", "wait_why", "wait_detail",
                 "pass_ts", "pass_ready", "spawn_seq", "spawn_gid", "spawn_index",
                 "exit_seq", "exit_gid")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)

    @classmethod
    def joined(cls, batches) -> "Slices":
        """One Slices of consecutive ``batches`` (oldest first)."""
        return cls(batches[0].first, sum(b.count for b in batches),
                   *(_np.concatenate([getattr(b, name) for b in batches])
                     for name in cls.__slots__[2:]))


class Tap:
    """A timeline's subscription to a ledger's folds (:meth:`Ledger.tap`):
    the :class:`Slices` of each batch folded since the last :meth:`take`.
    Used from the hub's thread (where the ledger folds); the Slices taken
    are never changed afterwards, so another thread may read them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.pending = 0      #: records in the batches not taken yet
        self.dropped = 0      #: records whose batch was dropped, untaken past ``limit``
        self._batches: deque = deque()

    def _put(self, batch: Slices) -> None:
        self._batches.append(batch)
        self.pending += batch.count
        while self.pending > self.limit and len(self._batches) > 1:
            old = self._batches.popleft()
            self.pending -= old.count
            self.dropped += old.count

    def take(self) -> list:
        """The batches folded since the last call, oldest first."""
        batches, self._batches = list(self._batches), deque()
        self.pending = 0
        return batches


def _no_recorder():
    return None


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


def _first_max(values, where, when, heads):
    """Per run of ``heads`` (the start of each key's resumes): the largest
    of ``values[where]`` and the ``when`` of its first occurrence (a later
    equal one does not replace it, as in the one-by-one reading); -1 for
    a key without one."""
    np = _np
    masked = np.where(where, values, -1)
    best = np.maximum.reduceat(masked, heads)
    size = np.diff(np.append(heads, len(values)))
    hit = masked == np.repeat(best, size)
    # the first hit of each run: positions, with misses pushed past the end
    first = np.minimum.reduceat(np.where(hit, np.arange(len(values)), len(values)), heads)
    at = when[np.minimum(first, len(values) - 1)]
    return best.tolist(), np.where(best >= 0, at, -1).tolist()
