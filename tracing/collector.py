"""The cyclic garbage collector while a capture runs in pieces.

    held = collector.shared.hold()          # the first capture turns it off
    ... a piece ...
    if held and collector.shared.young_piece_due():
        collector.shared.collect_young()    # (a piece of its own)
    ... the last piece ...
    if held and collector.shared.settle():  # age or collect what is young
        ...                                 # (it collected: a piece of its own)
    if held:
        collector.shared.release()          # the last one turns it back on

A capture of the console (:func:`tracing.frames.capture`) walks every
greenlet in pieces of a fraction of a millisecond and lets the loop run
between them. Left to itself, the collector would run inside those pieces
and undo that: a young collection of what the capture holds, then, every
few dozen refreshes, a full collection of the whole heap -- milliseconds to
tens of them in the target. This module owns the policy that keeps it out:
:class:`Hold` (why, and what it costs the program, is in its docstring),
:func:`age_young_generations`, and the two numbers that tune them. The
frames module only calls the five methods above, in that order.
"""
from __future__ import annotations

import collections
import gc
import sys
import threading

#: A capture in pieces that made more objects than it freed, by more than
#: this and by half as many again as any of the last eight (see
#: Hold), moves the young generations into the oldest without a
#: collection when it ends. Counted as the collector counts
#: (``gc.get_count()[0]``: objects it could track, made less freed): a
#: refresh of N greenlets keeps its frame's N rows, a first one ~8N (at
#: 10,000 greenlets 80,000, of which ~60,000 tracked and young at its end).
AGE_KEPT = 2000
#: Where that cannot be done (objects the program froze), such a capture
#: runs a young collection as a piece of its own every this many objects
#: made instead (see Hold).
YOUNG_PIECE = 2000


#: The fewest objects a program's own ``gc.freeze()`` leaves frozen.
#: CPython 3.12 itself keeps the immortal objects its collector meets in
#: the permanent generation (its static types' tuples of bases and MROs,
#: 375 on 3.12.1), at every full collection. Unfreezing those is harmless:
#: they are immortal, and the next full collection parks them again. A
#: program's ``gc.freeze()`` freezes every object the collector tracks,
#: thousands at the least (4,600 in a bare ``python -I -S`` 3.12; tens of
#: thousands once labkit is imported), so fewer than 1,000 frozen are the
#: interpreter's own. (3.13 untracks its immortal objects instead: nothing
#: is frozen unless the program froze it.)
PROGRAM_FROZE_AT_LEAST = 1000 if sys.version_info[:2] == (3, 12) else 1


class Hold:
    """Keeps the cyclic garbage collector off while any capture in pieces
    runs (in any thread), and turns it back on when the last one ends --
    unless it was off when the first began (the program's own choice,
    left alone).

    Why: a young collection moves what survives it into an older
    generation, and after ten of them CPython (3.10 to 3.13) collects the
    whole heap once the objects moved into the oldest generation since
    the last full collection exceed a quarter of those that were there
    (``long_lived_pending > long_lived_total / 4``). A capture of N
    greenlets holds ~2N tracked objects for the length of a refresh, and
    it is what allocates the most while it runs, so a young collection
    nearly always fell inside one: every tenth one moved ~2,000 objects
    into the oldest generation for no reason, and every ~60 refreshes a
    full collection paused the target. With the collector off, the
    allocation count still grows, and the young collection it calls for
    runs at the first allocation after the capture ends, when the capture's
    objects are freed (their reference counts, no collector needed).
    Others' garbage waits for it no longer than one capture (a refresh:
    milliseconds to tens of them).

    But a refresh that makes more than it frees -- the first one, which
    meets every greenlet and makes what lasts: the weak references that
    number greenlets, the tracer's tuples; ~60,000 tracked objects at
    10,000 greenlets -- left them to the collections after it: one young
    collection of ~8-14 ms in the target, or young collections run as
    pieces of the capture (0.3-1.4 ms each), then one generation-1
    collection of 1.3-2.3 ms that walked them all again. They are going to
    live as long as their greenlets, in the oldest generation. So when a
    holding ends having made more than it freed, by more than
    :data:`AGE_KEPT` objects and by half as many again as any of the last
    eight holdings, :func:`age_young_generations` moves them there at
    once, without a collection (and what else was young at that moment
    with them; tuples of numbers among them, which a young collection
    would have untracked, stay tracked until the next full collection
    looks at them). A refresh like the last ones moves nothing: a program's
    young garbage is collected young as before, and the collection its
    allocations call for runs as a piece of its own (:meth:`settle`).

    Where the young generations cannot be moved so -- the program froze
    objects (``gc.freeze()`` before a fork), which unfreezing would hand to
    the collector; the interpreter's own immortal ones do not count
    (:data:`PROGRAM_FROZE_AT_LEAST`) -- a capture that makes more than the last
    ones collects young as it goes instead, a piece of its own every
    :data:`YOUNG_PIECE` objects (:meth:`young_piece_due`): 0.3-1.4 ms
    pieces at 10,000 greenlets, then one generation-1 collection of
    1.3-3 ms in the target's own time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._made = 0    # -(the collector's young count when the first began)
        self._frozen_seen = False  # the program froze objects (see _frozen)
        #: what the last holdings made less what they freed
        self._recent = collections.deque([0], maxlen=8)

    def hold(self) -> bool:
        """Count one more capture; turn the collector off if this is the
        first and it is on. False (nothing to release) if it was off."""
        with self._lock:
            if self._holders == 0:
                if not gc.isenabled():
                    return False
                gc.disable()
                self._made = -gc.get_count()[0]
                self._frozen_seen = False
            self._holders += 1
            return True

    def young_piece_due(self) -> bool:
        """Whether a young collection should run now as a piece of its own:
        the young generations cannot be aged (the program froze objects),
        the young count is at :data:`YOUNG_PIECE`, and the holding has made
        more than it freed by more than :data:`AGE_KEPT` and half again as
        much as any of the last eight holdings."""
        young = gc.get_count()[0]
        return young >= YOUNG_PIECE \
            and self._made + young > AGE_KEPT + 1.5 * max(self._recent) \
            and self._frozen()

    def _frozen(self) -> bool:
        """Whether the program froze objects (see
        :data:`PROGRAM_FROZE_AT_LEAST`), asked only of a holding that keeps
        much. ``gc.get_freeze_count()`` walks the frozen objects (~9 ms for
        1,000,000: a heap frozen before a fork), so a yes is remembered for
        the rest of the holding; a no is asked again (it walks the few
        the interpreter froze, if any), for the program's greenlets run
        while a capture yields, and one may freeze."""
        if not self._frozen_seen:
            self._frozen_seen = gc.get_freeze_count() >= PROGRAM_FROZE_AT_LEAST
        return self._frozen_seen

    def collect_young(self) -> None:
        """A young collection now (the collector stays off); what it
        found made still counts as made."""
        with self._lock:
            self._made += gc.get_count()[0]
        gc.collect(0)

    def settle(self) -> bool:
        """What the last holder calls before it releases, between two of
        its pieces: if the holdings made more than they freed, by more than
        :data:`AGE_KEPT` and half as many again as any of the last eight,
        move the young generations into the oldest (no collection); else,
        if the collector's young count calls for a young collection, run
        it now and say so (True): it is a piece of the caller's own. Left
        to the first allocation after the release, it fell inside
        whichever piece came first, the caller's or another greenlet's
        (~0.1-0.5 ms at 10,000 greenlets: the frame's rows are alive)."""
        with self._lock:
            if self._holders != 1:
                return False    # (the last one to go settles)
            made = self._made + gc.get_count()[0]
            age = made > AGE_KEPT + 1.5 * max(self._recent)
            self._recent.append(made)
        # (outside the lock: a collection runs finalizers and weak
        # references' callbacks, which may start a capture of their own)
        collected = False
        if age and not self._frozen():
            age_young_generations()
        else:
            threshold = gc.get_threshold()[0]
            if not 0 < threshold < gc.get_count()[0]:
                return False
            gc.collect(0)
            collected = True
        with self._lock:
            # Both emptied the young count: a holding going on from here
            # counts what it makes from here.
            self._made = -gc.get_count()[0]
        return collected

    def release(self) -> None:
        """Count one capture fewer; the last one turns the collector back
        on (if its :meth:`hold` turned it off)."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                gc.enable()


def age_young_generations() -> None:
    """Move every object of the collector's two young generations into the
    oldest, in O(1) and without walking any: ``gc.freeze()`` moves all
    generations into the permanent one and ``gc.unfreeze()`` moves that
    into the oldest (both documented so, 3.7 on). Only when the program
    froze nothing (the caller asks): unfreezing a program's own frozen
    objects (``gc.freeze()`` before a fork, say) is not ours to do. (The
    interpreter's own, on 3.12, go into the oldest generation with the
    rest, and back to the permanent one at the next full collection.)

    The price: a cycle that was garbage in a young generation at this
    moment is freed by the next full collection instead of the next young
    one. It is one-off, bounded by what was young then, and a full
    collection comes in any program that keeps making objects. (Freezing
    also sets the collector's counts back to zero, as a full collection
    does, so the next one comes as much later; and a thread that freezes
    or forks between the two calls here is not guarded against: the
    program's own freezing is checked once, before.)"""
    gc.freeze()
    gc.unfreeze()


#: The one holding every capture of the process shares.
shared = Hold()
