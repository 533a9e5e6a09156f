"""The ledger: per-greenlet running totals read from a recorder's ring.

A :class:`Ledger` belongs to one running :class:`~tracing.recorder.Recorder`
(:func:`ledger_for`). Each :meth:`Ledger.update` reads only the records
written since the previous one (``lk_trace_read`` from a sequence number)
and adds them to an account per greenlet incarnation (a tuple, read by
:class:`Account`'s indices): switches,
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

Cost: a batch of records is folded in C (loop_c/lk_fold.c: one pass over
the records in time order, the same reading), with Python only per
greenlet incarnation met in the batch and per exit: ~50 ns a record here
under an echo-like load of 50 greenlets (~80 with a timeline's tap),
where the numpy passes it replaced took ~240-340 ns (~400-440 tapped);
315 instructions a record (497 tapped) against numpy's 1,227 (1,775);
``python -m labkit.bench.fold`` measures it against the one-by-one
reading. The one-by-one Python reading is kept as
the reference the C fold is tested against (:meth:`Ledger._fold_python`,
:meth:`Ledger._emit_python`). Records overwritten before they were read
are counted (``lost``), and after such a gap every greenlet counts as
touched. Record kinds this module does not know (a newer recorder's) are
read as "the thread went elsewhere": they end the running slice, like HOST.

One fold for everyone: each record is folded once (``Ledger.folded``),
whoever brings the ledger up to date -- the console's snapshot, the lints,
the timeline's :class:`~tracing.dashboard.Dashboard`. A timeline does not
fold the records again: it asks for a :class:`Tap` (:meth:`Ledger.tap`) and
gets, per batch folded, :class:`Slices` -- who ran from when to when, where
each wait began and what ended it, the hub's passes, spawns and exits --
computed in the same pass as the accounts. ``Ledger()`` without a
recorder folds records read elsewhere (:meth:`Ledger.fold`).
"""
from __future__ import annotations

import array
import struct
import weakref
from collections import deque

from labkit._loop import ffi, lib
from labkit._longlived import LongLivedDict

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

#: A timer wake-up after a park shorter than this counts as a zero timeout
#: (a self wake-up, for the spinning lint), in ns.
ZERO_TIMEOUT_NS = 1_000_000


class Account:
    """How to read one greenlet incarnation's totals in a :class:`Ledger`
    (ns): an account is a plain tuple, its fields by these indices
    (``acc[Account.BUSY]``), replaced by a new tuple when they change.

    Why a tuple: a console attaching to a process meets every greenlet at
    once, and each account lives as long as its greenlet. The collector
    untracks a tuple of numbers (and None) at the first collection it
    survives; an object of a Python class stays tracked for life: 10,000
    accounts were 10,000 objects in every generation-1 collection after
    an attach, and towards the full collection enough of them set off."""

    __slots__ = ()
    SWITCHES = 0
    BUSY = 1
    SCHEDULED = 2
    IDLE = 3
    WAKES = 4               #: resumes other than the first start
    SELF_WAKES = 5          #: of them: sleep(0) and zero timeouts
    OUT = 6                 #: when its last slice ended (or it was spawned), or None
    LONGEST = 7             #: its longest slice without a switch
    LONGEST_AT = 8          #: when that slice began
    MOST_SCHEDULED = 9      #: its longest stretch ready but not running (woken, not started)
    MOST_SCHEDULED_AT = 10  #: when that stretch ended (it resumed)
    SPAWNED = 11            #: when it was spawned, or None (before the recording)
    EXITED = 12             #: when it exited, or None

    @staticmethod
    def new(spawned: int | None = None) -> tuple:
        """A new account: nothing counted yet."""
        return (0, 0, 0, 0, 0, 0, spawned, 0, 0, 0, 0, spawned, None)

    @staticmethod
    def ended(acc: tuple, start: int, end: int) -> tuple:
        """``acc`` with the slice that ran from ``start`` to ``end`` added."""
        new, ran = list(acc), end - start
        new[Account.BUSY] += ran
        new[Account.OUT] = end
        if ran > new[Account.LONGEST]:
            new[Account.LONGEST], new[Account.LONGEST_AT] = ran, start
        return tuple(new)


_OUT, _EXITED = Account.OUT, Account.EXITED


class Ledger:
    """Running totals of one recorder's ring, brought up to date by
    :meth:`update` (hub's thread). Used by :func:`snapshot` and the lints;
    get the one of a recorder with :func:`ledger_for`."""

    #: records read per lk_trace_read (128 KiB of buffer). Folded a batch at a
    #: time: numpy's temporaries of a few thousand records stay in the
    #: allocator's pools (a batch of 16,384 cost ~1.6x as much per record here)
    BATCH = 4096
    #: greenlets (keys) a paced batch may meet: past this many the batch is
    #: cut before the record that meets the next one, and the rest read
    #: 4 * PACED_KEYS records at a time while batches are cut so. Each key
    #: costs Python work (its Account found or made, its totals added:
    #: 1.6-3 us for a new one here, ~2.3 measured in
    #: an attached target of 10,000 greenlets), so a batch of 4,096 records
    #: of new greenlets -- a console attaching to a process that just
    #: started a thousand -- would otherwise be one piece of several ms; at
    #: 128 keys a batch took ~0.3 ms, and a piece two of them.
    PACED_KEYS = 64

    def __init__(self, recorder=None):
        # (weak: ledgers are kept in a map keyed weakly by their recorder)
        self._recorder = weakref.ref(recorder) if recorder is not None else _no_recorder
        self.seq = 0                  #: the next record to read
        self.accounts: dict[int, tuple] = LongLivedDict()   #: id -> its account (see Account)
        #: (name, account) of greenlets that exited, worth a lint (see forget_exited)
        self.finished: deque = deque(maxlen=1000)
        self.lost = 0
        #: ids of the greenlets that ran, were spawned or exited since the
        #: last take_touched() (after lost records: a set that holds everything)
        self.touched: set = set()
        self._exited: list = []      # ids whose EXIT was read, for forget_exited
        self._buffer = ffi.new("lk_trace_entry[]", self.BATCH)
        self._first = ffi.new("uint64_t *")
        self._running = None          # (id, start ns) of the open slice: see running()
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
        # _Scratch: lk_fold.c's buffers, grown as needed. Made now, for a
        # batch: ~350 KB touched for the first time, ~0.3 ms of page faults,
        # which a ledger made ahead of its first update (tracing.snapshot.track)
        # keeps out of a console's first refresh.
        self._scratch = _Scratch(self.BATCH)
        self._carry = ffi.new("lk_fold_carry *")
        self._tail = None             # the newest record's run, for the taps (see _emit)
        self._mark_ends: dict = {}    # gid -> end of its trace-start run (see _emit)
        self._window()

    def _window(self) -> None:
        self.polls = self.passes = self.callbacks = 0
        self.poll_ns = self.lag_max = self.lag_sum = self.lags = 0

    def update(self, pace=None) -> int:
        """Read the records written since the last update; the new count.

        ``pace``: called after each batch of at most :data:`BATCH` records
        and :data:`PACED_KEYS` greenlets (a :class:`tracing.pace.Pace`,
        which may let the hub run); then only the records written before
        the call are read (the loop does not chase the hub), and the ring
        is looked up again after each batch (the recorder may have stopped
        meanwhile). Each batch is folded whole, so an update of the same
        ledger running meanwhile reads on from where this one stopped."""
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
            if pace is not None and total:
                pace()
                ring = recorder.ring
                if ring is None or self.seq >= target:
                    break
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
            folded = self._fold_c(self._buffer, n, first,
                                  self.PACED_KEYS if pace is not None else 0)
            total += folded
            if folded == n < size:
                break
            # Cut short by its keys (records of many greenlets: the first
            # update after an attach): read the next few at a time, not a
            # whole batch read and scanned again for each PACED_KEYS of it.
            size = self.BATCH if folded == n else min(self.BATCH, 4 * self.PACED_KEYS)
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
            self._fold_c(ffi.from_buffer("lk_trace_entry[]", data), n, self.seq)
        return n

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

    def running(self) -> tuple | None:
        """(id, start ns) of the greenlet whose slice the records read so
        far leave open (it ran last, and no record says it stopped), or None."""
        return self._running

    def take_touched(self) -> set:
        """The ``touched`` set, and start a new one."""
        touched, self.touched = self.touched, set()
        return touched

    def _fold_c(self, recs, n: int, first: int, max_keys: int = 0) -> int:
        """Fold the ``n`` records at ``recs`` (cdata ``lk_trace_entry[]``;
        ``first``: the sequence number of the first) with loop_c/lk_fold.c,
        as :meth:`_fold_python` and :meth:`_emit_python` read them one by
        one: keys (greenlet incarnations) in C, their accounts here, the
        pass over the records in C, its totals added here. ``max_keys``
        (0: no limit): fold only the records before the one that meets
        key number ``max_keys`` (greenlets are met in record order), at
        least one. Returns how many records were folded."""
        scratch = self._scratch
        if scratch is None or scratch.size < n:
            scratch = self._scratch = _Scratch(max(n, self.BATCH))
        keys, n_exits, first_nonspawn = scratch.keys, scratch.found, scratch.found + 1
        nkeys = lib.lk_fold_keys(recs, n, scratch.rec_key, keys, scratch.table,
                                 scratch.table_size, scratch.exits, n_exits, first_nonspawn)
        if 0 < max_keys < nkeys:
            # Keys are numbered as met: the first record of key max_keys is
            # where this batch ends; the keys of the records before it again.
            rec_key = array.array(_INT32)
            rec_key.frombytes(ffi.buffer(scratch.rec_key, n * 4))
            n = rec_key.index(max_keys)
            nkeys = lib.lk_fold_keys(recs, n, scratch.rec_key, keys, scratch.table,
                                     scratch.table_size, scratch.exits, n_exits,
                                     first_nonspawn)
        # The slice running when the previous batch ended ends at this
        # batch's first record other than a spawn.
        accounts, touched = self.accounts, self.touched
        if self._running is not None and first_nonspawn[0] < n:
            gid, start = self._running
            acc = accounts.get(gid)
            if acc is not None:
                accounts[gid] = Account.ended(acc, start, recs[first_nonspawn[0]].ts_ns)
            self._running = None
        # Each key's account (made as the one-by-one reading makes it: at a
        # spawn, or at the first resume of a greenlet it has not met), and
        # when its previous slice ended. (An id met twice in one batch, an
        # incarnation spawned after an exit, has a key for each: ``accs``
        # holds each key's account, and a key's account that a newer one
        # replaced in ``accounts`` is no longer written there.)
        gids, accs, made_at, out0 = [], [], [], scratch.out0
        for k, (gid, spawn_ts, spawned, first_resume, *_) in enumerate(_KEY.iter_unpack(
                ffi.buffer(keys, nkeys * _KEY.size))):
            made = -1
            if spawned:
                acc = accounts[gid] = Account.new(spawn_ts)
            else:
                acc = accounts.get(gid)
                if acc is None and first_resume >= 0:
                    acc = accounts[gid] = Account.new()
                    made = first_resume
            out0[k] = acc[_OUT] if made < 0 and acc is not None and acc[_OUT] is not None \
                else _UNKNOWN
            gids.append(gid)
            accs.append(acc)
            made_at.append(made)
            touched.add(gid)
        carry = self._carry_in()
        cols = scratch.cols() if self._taps else ffi.NULL
        lib.lk_fold_run(recs, n, first, scratch.rec_key, keys, nkeys, scratch.out0_c, carry,
                        cols, scratch.size + 1, scratch.counts)
        for k, (_, _, _, _, out, closed, _, switches, wakes, self_wakes, scheduled, idle,
                busy, longest, longest_at, most, most_at) in enumerate(
                    _KEY.iter_unpack(ffi.buffer(keys, nkeys * _KEY.size))):
            if not switches:
                continue      # a spawn or an exit only
            acc = accs[k]
            (s0, busy0, scheduled0, idle0, wakes0, self_wakes0, out0_, longest0, longest_at0,
             most0, most_at0, spawned0, exited0) = acc
            if longest <= longest0:
                longest, longest_at = longest0, longest_at0
            if most <= most0:
                most, most_at = most0, most_at0
            new = accs[k] = (s0 + switches, busy0 + busy, scheduled0 + scheduled, idle0 + idle,
                             wakes0 + wakes, self_wakes0 + self_wakes, out if closed else out0_,
                             longest, longest_at, most, most_at, spawned0, exited0)
            if accounts.get(gids[k]) is acc:
                accounts[gids[k]] = new
        if carry.running_key >= 0:
            self._running = (gids[carry.running_key], carry.running_start)
        # Exits (few), in time order.
        for j in range(n_exits[0]):
            i = scratch.exits[j]
            k = scratch.rec_key[i]
            acc = accs[k]
            if acc is None or made_at[k] > i:
                continue        # no account yet when it exited
            gid = gids[k]
            if accounts.get(gid) is acc:    # (an exit read twice: the last one's time)
                accs[k] = accounts[gid] = acc[:_EXITED] + (recs[i].ts_ns,)
            self._exited.append(gid)
        self._carry_out(carry)
        if self._taps:
            self._put_slices(scratch, first, n)
        else:
            self._tail = None     # (the taps' carried run is not kept without taps)
        self.seq = first + n
        self.folded += n
        return n

    def _carry_in(self):
        """The one-by-one reading's carried state, for lk_fold_run."""
        c = self._carry
        c.segment = self._segment
        c.has_poll_start = self._poll_start is not None
        c.poll_start = self._poll_start or 0
        c.has_poll_left = self._poll_left is not None
        c.poll_left = self._poll_left or 0
        c.polls, c.poll_ns, c.passes, c.callbacks = (self.polls, self.poll_ns, self.passes,
                                                     self.callbacks)
        c.lags, c.lag_sum, c.lag_max = self.lags, self.lag_sum, self.lag_max
        c.zero_timeout_ns = ZERO_TIMEOUT_NS   # (a self wake-up: one home, here)
        tail = self._tail
        c.has_tail = tail is not None
        if tail is not None:
            c.tail_seq, c.tail_owner, c.tail_start, wait, pass_, c.tail_mark = tail
            c.tail_has_wait = wait is not None
            if wait is not None:
                c.tail_wait = wait
            c.tail_has_pass = pass_ is not None
            if pass_ is not None:
                c.tail_pass = pass_
        return c

    def _carry_out(self, c) -> None:
        self._segment = c.segment
        self._poll_start = c.poll_start if c.has_poll_start else None
        self._poll_left = c.poll_left if c.has_poll_left else None
        self.polls, self.poll_ns, self.passes, self.callbacks = (c.polls, c.poll_ns, c.passes,
                                                                 c.callbacks)
        self.lags, self.lag_sum, self.lag_max = c.lags, c.lag_sum, c.lag_max
        if c.has_tail:
            self._tail = (c.tail_seq, c.tail_owner, c.tail_start,
                          tuple(c.tail_wait) if c.tail_has_wait else None,
                          tuple(c.tail_pass) if c.tail_has_pass else None,
                          bool(c.tail_mark))

    def _put_slices(self, scratch, seq0: int, n: int) -> None:
        """The batch's :class:`Slices` (lk_fold_run's columns), to each tap;
        first the waits whose start only a trace-start mark knows (rare: a
        greenlet that started the trace ran from its mark, and its first
        wait begins where that run ended -- it has no slice in the accounts)."""
        runs, waits, passes, spawns, exits, events = ffi.unpack(scratch.counts, 6)
        matrix = scratch.matrix
        # one copy a group of columns (its rows: views of that copy)
        run, wait, pass_, spawn, exit_ = (
            matrix[lo:hi, :rows].copy() for lo, hi, rows in (
                (0, 4, runs), (4, 10, waits), (10, 12, passes), (12, 15, spawns),
                (15, 17, exits)))
        if events:
            marks = self._mark_ends
            for what, a, b in zip(*matrix[17:20, :events].tolist()):
                if what == lib.LK_FOLD_EVENT_MARK_END:
                    marks[a] = b
                elif marks:
                    gid = int(wait[1, a])
                    end = marks.get(gid)
                    if end is not None and end < wait[3, a]:
                        del marks[gid]
                        wait[2, a] = end
        batch = Slices(seq0, n, *run, *wait, *pass_, *spawn, *exit_)
        for tap in self._taps:
            tap._put(batch)

    def _fold_one_by_one(self, data) -> None:
        """:meth:`fold` with the reference reading (:meth:`_fold_python`
        and, with taps, :meth:`_emit_python`) instead of lk_fold.c: what
        the tests compare the C fold against."""
        records, starts, first = list(_RECORD.iter_unpack(data)), [], self.seq
        self._fold_python(records, starts)
        if self._taps:
            self._emit_python(records, first, starts)
        else:
            self._tail = None
        self.seq = first + len(records)
        self.folded += len(records)

    def _fold_python(self, records, starts: list | None = None) -> None:
        """Fold ``records`` ((ts, kind, arg, a, b) tuples, oldest first)
        one by one: the reading rules written out plainly, the reference
        loop_c/lk_fold.c is tested against. ``starts``: if a list, gets where each resume's wait
        began (as :meth:`_resumes` returns it, for :meth:`_emit_python`)."""
        # State lives in locals (written back at the end) and the slice
        # that ends is closed inline. The accounts this batch changes are
        # lists here (a field by Account's index), made tuples at the end.
        accounts, touched, exited = self.accounts, self.touched, self._exited
        RESUME, SPAWN, PASS, POLL_ENTER, POLL_LEAVE, EXIT = (
            _RESUME, _SPAWN, _PASS, _POLL_ENTER, _POLL_LEAVE, _EXIT)
        START, READY, TIMER, ZERO = _WHY_START, _WHY_READY, _WHY_TIMER, ZERO_TIMEOUT_NS
        A = Account
        SWITCHES, BUSY, SCHEDULED, IDLE, WAKES, SELF_WAKES, OUT = (
            A.SWITCHES, A.BUSY, A.SCHEDULED, A.IDLE, A.WAKES, A.SELF_WAKES, A.OUT)
        LONGEST, LONGEST_AT, MOST, MOST_AT, EXITED = (
            A.LONGEST, A.LONGEST_AT, A.MOST_SCHEDULED, A.MOST_SCHEDULED_AT, A.EXITED)
        work: dict = {}     # id -> its account as a list, while this batch changes it

        def account(gid):
            acc = work.get(gid)
            if acc is None:
                old = accounts.get(gid)
                if old is not None:
                    acc = work[gid] = list(old)
            return acc

        run_acc, run_gid, run_start = None, None, 0
        if self._running is not None:
            run_gid, run_start = self._running
            run_acc = account(run_gid)
        segment, poll_start, poll_left = self._segment, self._poll_start, self._poll_left
        for ts, kind, arg, a, b in records:
            if run_acc is not None and kind != SPAWN:   # the running slice ends here
                ran = ts - run_start
                run_acc[BUSY] += ran
                run_acc[OUT] = ts
                if ran > run_acc[LONGEST]:
                    run_acc[LONGEST], run_acc[LONGEST_AT] = ran, run_start
                run_acc = None
            if kind == RESUME:
                acc = account(a)
                if acc is None:
                    acc = work[a] = list(Account.new())
                acc[SWITCHES] += 1
                out = acc[OUT]
                if starts is not None:
                    starts.append(out if out is not None and arg != START else 0)
                if out is not None:
                    if arg == START:      # its first start: ready since spawned
                        waited = ts - out
                    else:
                        gap = ts - out
                        acc[WAKES] += 1
                        if arg == READY:
                            waited = gap
                            acc[SELF_WAKES] += 1
                        else:
                            waited = ts - (segment if segment > out else out)
                            if arg == TIMER and gap < ZERO:
                                acc[SELF_WAKES] += 1
                        acc[IDLE] += gap - waited
                    acc[SCHEDULED] += waited
                    # (the wait to start is not starving: a spawn storm
                    # makes the last of a thousand wait for the others)
                    if waited > acc[MOST] and arg != START:
                        acc[MOST], acc[MOST_AT] = waited, ts
                run_acc, run_start = acc, ts
                run_gid = a
                touched.add(a)
            elif kind == SPAWN:
                work[a] = list(Account.new(ts))
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
                acc = account(a)
                if acc is not None:
                    acc[EXITED] = ts
                    exited.append(a)
                touched.add(a)
            else:   # HOST, MARK: the thread goes elsewhere
                poll_left = None
        for gid, acc in work.items():
            accounts[gid] = tuple(acc)
        self._running = (run_gid, run_start) if run_acc is not None else None
        self._segment, self._poll_start, self._poll_left = segment, poll_start, poll_left

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
        to ``finished`` (name, account; the last 1,000), for the lints."""
        exited, self._exited = self._exited, []
        for gid in exited:
            acc = self.accounts.get(gid)
            if acc is None or acc[_EXITED] is None:
                continue   # its id was reused by a newer spawn since
            del self.accounts[gid]
            if max(acc[Account.LONGEST], acc[Account.MOST_SCHEDULED]) >= NOTABLE_NS or \
                    acc[Account.WAKES] >= 20:
                recorder = self._recorder()
                name = recorder.name_of(gid) if recorder is not None else f"greenlet-{gid:#x}"
                self.finished.append((name, acc))


#: Owners of a run in :class:`Slices` other than a greenlet id: the poll,
#: and the hub's passes and dispatch.
OWNER_POLL, OWNER_HUB = lib.LK_FOLD_OWNER_POLL, lib.LK_FOLD_OWNER_HUB
_OWNER_NONE = lib.LK_FOLD_OWNER_NONE   # after an exit, a host hand-off, a trace stop: nobody


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


#: lk_fold_key's layout (loop_c/lk_loop.cdef): gid, spawn_ts, spawned,
#: first_resume, out, closed, has_out, then the batch's totals (switches,
#: wakes, self_wakes, scheduled, idle, busy, longest, longest_at, most,
#: most_at). Read with struct: one tuple a key, no cdata per field.
_KEY = struct.Struct("=qqiiqiiqqqqqqqqqq")
_UNKNOWN = -(1 << 63)    # lk_fold_run's out0 of a greenlet whose last run is unknown


class _Scratch:
    """The buffers of lk_fold.c for batches of up to ``size`` records."""

    def __init__(self, size: int):
        if ffi.sizeof("lk_fold_key") != _KEY.size:
            raise RuntimeError("tracing.ledger does not match loop_c's lk_fold_key: rebuild")
        self.size = size
        self.rec_key = ffi.new("int32_t[]", size)
        self.keys = ffi.new("lk_fold_key[]", size)
        # (a power of two >= 2 * size: the keys, at most one a record, fill
        # at most half of it; cleared each batch, so no bigger)
        self.table_size = 1 << (2 * size - 1).bit_length()
        self.table = ffi.new("int32_t[]", self.table_size)
        self.exits = ffi.new("int32_t[]", size)
        self.out0 = array.array("q", bytes(8 * size))    # lk_fold_run's out0, by key
        self.out0_c = ffi.from_buffer("int64_t[]", self.out0)
        self.found = ffi.new("int64_t[]", 2)      # lk_fold_keys: exits, first non-spawn
        self.counts = ffi.new("int64_t[]", 6)     # lk_fold_run: rows of the slices
        self.matrix = None

    def cols(self):
        """The slices' columns: ``matrix`` (numpy, a row per column, each
        ``size + 1`` long: a batch's records and the carried one), as
        lk_fold_run's int64_t *."""
        if self.matrix is None:
            self.matrix = _np.empty((lib.LK_FOLD_COLUMNS, self.size + 1), _np.int64)
        return ffi.cast("int64_t *", self.matrix.ctypes.data)


def _no_recorder():
    return None


#: A finished greenlet's account is kept for the lints if it ran or waited
#: ready this long in one stretch (ns), or was woken 20 times or more.
NOTABLE_NS = 10_000_000

#: the array typecode of lk_fold_keys' int32_t record keys
_INT32 = next(code for code in "ihl" if array.array(code).itemsize == 4)


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
