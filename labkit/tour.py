"""``python -m labkit tour``: a short scripted scenario that shows the hub at work.

Three greenlets share one thread. Each step prints the time since the start
and which greenlet is speaking, so the interleaving is visible:

1. two workers alternate with ``sleep(0)`` -- cooperative multitasking;
2. three sleepers wake in deadline order, not spawn order -- the timer heap;
3. a ``Timeout`` interrupts a greenlet that waits too long;
4. a greenlet that fails is reported, and only it dies;
5. the loop's own counters: iterations, time spent waiting in the kernel.
"""
from __future__ import annotations

import argparse
import io
import time

import labkit


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, who: str, what: str) -> None:
        print(f"  {1000 * (time.monotonic() - self.start):7.1f} ms  {who:<10} {what}")


def _cooperative_workers(clock: _Clock) -> None:
    print("1. Two workers take turns: each sleep(0) lets the other run.")

    def worker(name: str) -> None:
        for step in range(3):
            clock.say(name, f"step {step}")
            labkit.sleep(0)

    labkit.joinall([labkit.spawn(worker, "worker-A"), labkit.spawn(worker, "worker-B")])


def _sleepers(clock: _Clock) -> None:
    print("\n2. Sleepers spawned in the order 30, 10, 20 ms wake in deadline order.")

    def sleeper(ms: int) -> None:
        labkit.sleep(ms / 1000)
        clock.say(f"sleep-{ms}", f"woke after {ms} ms")

    labkit.joinall([labkit.spawn(sleeper, ms) for ms in (30, 10, 20)])


def _timeout(clock: _Clock) -> None:
    print("\n3. A Timeout interrupts a greenlet that waits too long.")

    def impatient() -> None:
        try:
            with labkit.Timeout(0.02):
                clock.say("impatient", "waiting for something slow (1 s)")
                labkit.sleep(1)
        except labkit.Timeout as t:
            clock.say("impatient", f"gave up: Timeout({t})")

    labkit.spawn(impatient).join()


def _failure(clock: _Clock) -> None:
    print("\n4. A failing greenlet is reported; the others carry on.")
    hub = labkit.get_hub()
    hub.exception_stream = report = io.StringIO()

    def fails() -> None:
        raise ValueError("something went wrong")

    survivor = labkit.spawn(lambda: labkit.sleep(0.01) or "still running")
    failed = labkit.spawn(fails)
    clock.say("survivor", survivor.get())
    clock.say("failed", f"exception recorded: {failed.exception!r}")
    last_line = report.getvalue().strip().splitlines()[-1]
    clock.say("hub", f"reported: {last_line}")
    hub.exception_stream = None


def _loop_stats() -> None:
    loop = labkit.get_hub().loop
    stats = loop.stats()
    print(f"\n5. The C loop ({loop.backend_name}): {stats['iterations']} iterations, "
          f"{stats['poll_ns'] / 1e6:.1f} ms waiting in the kernel, "
          f"{stats['timer_events']} timers fired.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit tour",
                                     description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print("labkit tour: greenlets on one thread, scheduled by the hub.\n")
    clock = _Clock()
    _cooperative_workers(clock)
    _sleepers(clock)
    _timeout(clock)
    _failure(clock)
    _loop_stats()
    print("\nNext: python -m labkit bench  -- what a switch, a spawn, a timer cost.")
    return 0
