"""Where a switch's time goes: ``sleep(0)`` taken apart, with median and spread.

``python -m labkit.bench.switchcost`` (or :func:`measure` in a notebook, as
notebooks/04 does) times, in the calling thread:

- ``greenlet switch``: one bare ``greenlet.switch()`` (one way), the floor;
- ``sleep(0)``: one yield in a ``labkit.sleep(0)`` ping-pong between two
  greenlets, untraced, and again while ``tracing`` records every switch;
- ``poll``: one zero-timeout poll of the C loop (a syscall), timed inside a
  hub callback, where the hub polls; and how many polls a yield pays for --
  a busy hub polls at most every ``hub.IO_CHECK_INTERVAL_NS``, not every pass.

A yield is two greenlet switches (the yielding greenlet to the hub, the hub
to the next one), the hub's share of polls, and the rest: the hub's pass --
``sleep()``'s own Python code, the ready queue, the hub's loop body. So the
breakdown of one untraced yield is::

    sleep(0) = 2 x greenlet switch + polls per yield x poll + hub's pass

and the tracer adds ``sleep(0) traced - sleep(0)`` on top. The hub's pass is
what is left over, so it carries the other figures' noise.

Every figure is measured ``rounds`` times, the operations alternating within
a round (so that a burst of load from elsewhere hits all of them, not one),
and reported as the median with the lowest and highest round. Differences
(the tracer's cost, the hub's pass) are taken round by round, then summarised.
When a figure's runs spread wider than :data:`NOISE_SPREAD` of its median,
:attr:`SwitchCost.noisy` says so and :meth:`SwitchCost.format` prints a
warning: the machine is busy, and differences smaller than the spread are
noise. The figures are this machine's, now; nothing is assumed.

Call :func:`measure` from a thread's main greenlet (a script, or a cell after
``%load_ext labkit``) while no trace records.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
from dataclasses import dataclass, field
from time import perf_counter

from greenlet import getcurrent, greenlet

__all__ = ["Figure", "SwitchCost", "measure", "NOISE_SPREAD", "main"]

#: A figure whose (highest - lowest) / median exceeds this is called noisy.
NOISE_SPREAD = 0.2


@dataclass(frozen=True)
class Figure:
    """One measured quantity over the rounds, in nanoseconds."""

    samples: tuple

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """(highest - lowest) / |median|: 0.1 means the rounds vary by 10%."""
        median = abs(self.median)
        return (self.high - self.low) / median if median else float("inf")

    def __str__(self) -> str:
        return f"{self.median:8.1f} ns  ({self.low:.1f} .. {self.high:.1f})"


@dataclass
class SwitchCost:
    """What :func:`measure` found; ``format()`` is the report."""

    rounds: int
    n: int
    figures: dict = field(default_factory=dict)     # name -> Figure
    polls_per_yield: float = 0.0
    breakdown: dict = field(default_factory=dict)   # part -> Figure (per yield)

    @property
    def noisy(self) -> list:
        """The names of the measured figures whose rounds spread wider than
        NOISE_SPREAD (empty when the numbers are steady)."""
        return [name for name, figure in self.figures.items()
                if figure.spread > NOISE_SPREAD]

    def format(self) -> str:
        lines = [f"median of {self.rounds} rounds of {self.n} operations "
                 f"(lowest .. highest round), per operation:"]
        width = max(map(len, self.figures))
        for name, figure in self.figures.items():
            lines.append(f"  {name:<{width}}  {figure}  spread {figure.spread:.0%}")
        sleep0 = self.figures["sleep(0)"].median
        lines.append("")
        lines.append(f"one sleep(0) yield, taken apart "
                     f"({self.polls_per_yield:.4f} polls per yield):")
        width = max(map(len, self.breakdown))
        for part, figure in self.breakdown.items():
            share = figure.median / sleep0 if sleep0 else float("nan")
            lines.append(f"  {part:<{width}}  {figure}  {share:5.0%} of an untraced yield")
        if self.noisy:
            worst = max(self.noisy, key=lambda name: self.figures[name].spread)
            lines.append("")
            lines.append(f"NOISE WARNING: the rounds of {', '.join(self.noisy)} spread by "
                         f"up to {self.figures[worst].spread:.0%} (more than "
                         f"{NOISE_SPREAD:.0%}): this machine is busy. Treat differences "
                         f"smaller than the spread as noise, and run again when it is quiet.")
        return "\n".join(lines)


# -- the operations (each returns seconds per operation) ----------------------

def greenlet_switch(n: int) -> float:
    """Seconds per raw greenlet switch (one direction), over n round trips."""
    main = getcurrent()

    def partner():
        while True:
            main.switch()

    other = greenlet(partner)
    other.switch()
    start = perf_counter()
    for _ in range(n):
        other.switch()
    elapsed = perf_counter() - start
    other.throw()
    return elapsed / (2 * n)


def sleep0(n: int) -> float:
    """Seconds per labkit.sleep(0) of two greenlets taking turns, n each."""
    import labkit

    def yield_n():
        for _ in range(n):
            labkit.sleep(0)

    start = perf_counter()
    labkit.joinall([labkit.spawn(yield_n), labkit.spawn(yield_n)])
    return (perf_counter() - start) / (2 * n)


def _sleep0_traced(n: int) -> float:
    from tracing.recorder import Recorder
    recorder = Recorder().start()
    try:
        return sleep0(n)
    finally:
        recorder.stop(read=False)


def _poll(n: int) -> float:
    """A zero-timeout poll, timed where the hub polls: in a hub callback."""
    import labkit
    hub = labkit.get_hub()
    loop = hub.loop
    box = {}

    def ignore(_callback):
        pass

    def in_the_hub():
        poll = loop.poll
        start = perf_counter()
        for _ in range(n):
            poll(0, ignore)
        box["seconds"] = perf_counter() - start

    hub.run_callback(in_the_hub)
    while "seconds" not in box:
        labkit.sleep(0.001)
    return box["seconds"] / n


def _polls_per_yield(n: int) -> float:
    """How many polls the hub makes per yield of a sleep(0) ping-pong
    (hub.last_poll_ns changes once per poll)."""
    import labkit
    hub = labkit.get_hub()
    seen = {"polls": 0, "last": hub.last_poll_ns}

    def yield_n():
        for _ in range(n):
            labkit.sleep(0)
            if hub.last_poll_ns != seen["last"]:
                seen["last"] = hub.last_poll_ns
                seen["polls"] += 1

    labkit.joinall([labkit.spawn(yield_n), labkit.spawn(yield_n)])
    return seen["polls"] / (2 * n)


_OPERATIONS = {
    "greenlet switch": greenlet_switch,
    "sleep(0)": sleep0,
    "sleep(0) traced": _sleep0_traced,
    "poll": _poll,
}


def _timed(fn, n: int) -> float:
    gc.collect()
    gc.disable()
    try:
        return fn(n) * 1e9
    finally:
        gc.enable()


def measure(n: int = 20_000, rounds: int = 5) -> SwitchCost:
    """Measure every figure ``rounds`` times (alternating), ``n`` operations
    each (polls: n // 10); return a :class:`SwitchCost`."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 10:
        raise ValueError(f"n must be an int >= 10, not {n!r}")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, not {rounds!r}")
    from tracing.recorder import active, background_paused
    with background_paused():   # the detector %load_ext labkit turned on
        if active() is not None:
            raise RuntimeError("stop the running trace before measuring switch costs")
        counts = {name: (n // 10 if name == "poll" else n) for name in _OPERATIONS}
        for name, fn in _OPERATIONS.items():      # warm-up: imports, caches
            fn(max(10, counts[name] // 10))
        samples = {name: [] for name in _OPERATIONS}
        for _ in range(rounds):
            for name, fn in _OPERATIONS.items():
                samples[name].append(_timed(fn, counts[name]))
        polls_per_yield = _polls_per_yield(n)
    figures = {name: Figure(tuple(values)) for name, values in samples.items()}
    switches, polls = samples["greenlet switch"], samples["poll"]
    untraced, traced = samples["sleep(0)"], samples["sleep(0) traced"]
    each = range(rounds)
    breakdown = {
        "2 greenlet switches": Figure(tuple(2 * switches[i] for i in each)),
        "the poll (its share)": Figure(tuple(polls[i] * polls_per_yield for i in each)),
        "the hub's pass (the rest)": Figure(tuple(
            untraced[i] - 2 * switches[i] - polls[i] * polls_per_yield for i in each)),
        "the tracer (traced - untraced)": Figure(tuple(traced[i] - untraced[i] for i in each)),
    }
    return SwitchCost(rounds=rounds, n=n, figures=figures,
                      polls_per_yield=polls_per_yield, breakdown=breakdown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.bench.switchcost",
        description="What a greenlet switch and a sleep(0) cost here, taken apart, "
                    "median and spread over alternating rounds.")
    parser.add_argument("--n", type=int, default=20_000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        cost = measure(args.n, args.rounds)
    except ValueError as exc:
        parser.error(str(exc))
    print(cost.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
