"""What a switch costs on this machine, with tracing off and on.

:func:`measure_switch_overhead` times four operations in the calling
thread's hub, first untraced and then while a recorder writes every switch:

- ``raw_switch``: a bare ``greenlet.switch()`` round trip (no hub; tracing
  does not see it unless ``settrace`` is on, so its two numbers should agree);
- ``sleep0``: ``sleep(0)`` between two greenlets, per yield (a hub round trip);
- ``spawn_join``: spawn a trivial Greenlet and join it;
- ``wakeup``: one greenlet waking another through a Waiter (what an Event or a
  Queue does), per wake-up.

Each figure is the best of ``repeats`` runs, in nanoseconds per operation.
Call it from the main greenlet while no trace is being recorded.
"""
from __future__ import annotations

import gc
from time import perf_counter

from labkit.bench.switchcost import greenlet_switch, sleep0


# The two switch measurements have their home in labkit.bench.switchcost.
_raw_switch, _sleep0 = greenlet_switch, sleep0


def _spawn_join(n: int) -> float:
    import labkit
    start = perf_counter()
    labkit.joinall([labkit.spawn(int) for _ in range(n)])
    return (perf_counter() - start) / n


def _wakeup(n: int) -> float:
    import labkit
    from labkit.hub import Waiter
    hub = labkit.get_hub()
    box = {}

    def sleeper():
        for _ in range(n):
            box["w"] = Waiter(hub, "wakeup")
            box["w"].get()

    def waker():
        for _ in range(n):
            while "w" not in box:
                labkit.sleep(0)
            hub.run_callback(box.pop("w").switch, None)
            labkit.sleep(0)

    start = perf_counter()
    labkit.joinall([labkit.spawn(sleeper), labkit.spawn(waker)])
    return (perf_counter() - start) / n


OPERATIONS = {"raw_switch": _raw_switch, "sleep0": _sleep0,
              "spawn_join": _spawn_join, "wakeup": _wakeup}


def _best(fn, n: int, repeats: int) -> float:
    fn(max(1, n // 10))   # warm-up
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            best = min(best, fn(n))
        finally:
            gc.enable()
    return best * 1e9


def measure_switch_overhead(n: int = 20_000, repeats: int = 3) -> dict:
    """``{operation: {"untraced_ns", "traced_ns", "ratio"}}``; see the module doc."""
    from tracing.recorder import background_paused
    with background_paused():   # the detector %load_ext labkit turned on
        return _measure(n, repeats)


def _measure(n: int, repeats: int) -> dict:
    from tracing.recorder import Recorder, active
    if active() is not None:
        raise RuntimeError("stop the running trace before measuring the overhead")
    results = {}
    for name, fn in OPERATIONS.items():
        untraced = _best(fn, n, repeats)
        recorder = Recorder().start()
        try:
            traced = _best(fn, n, repeats)
        finally:
            recorder.stop(read=False)
        results[name] = {"untraced_ns": untraced, "traced_ns": traced,
                         "ratio": traced / untraced}
    return results
