"""The loop gives back the memory a burst of greenlets freed
(loop_c/lk_memory.c, lk_poll's phase give_memory_back).

glibc returns memory to the system only from the top of its heap; after
thousands of greenlets end, what they malloc'd stays resident below any
block still in use. When the greenlets alive (the frame-stack blocks
outstanding) fall to half their peak or less, by at least
LABKIT_GIVE_BACK_AFTER, the loop calls malloc_trim(0) before its next wait
of 10 ms or more, at most once a second.

Each test runs in a fresh interpreter, with none of the environment
variables that change how malloc behaves: resident memory depends on the
heap's whole history and on the allocator.
"""
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from helpers import run_python

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11),
                       reason="before 3.11 greenlets allocate no frame-stack block to count"),
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"),
]

#: what a test's interpreter starts with: the burst helpers below
PRELUDE = """
    import gc, json, os, sys
    import labkit
    from labkit._loop import memory_stats
    from labkit.bench.micro import resident_bytes

    def burst(n):
        greenlets = [labkit.spawn(labkit.sleep, 60) for _ in range(n)]
        labkit.sleep(0)                   # every one starts and parks
        return greenlets

    def end(greenlets):
        labkit.killall(greenlets)
        greenlets.clear()
        gc.collect()

    def trims():
        return memory_stats()["trims"]
"""


def run(code: str, give_back_after: str = "4096", **env) -> str:
    """Run PRELUDE + ``code`` in a fresh interpreter with
    LABKIT_GIVE_BACK_AFTER set and no malloc tuning; its stdout."""
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith(("MALLOC_", "PYTHONMALLOC", "LD_PRELOAD", "GLIBC_TUNABLES"))}
    clean.update(LABKIT_GIVE_BACK_AFTER=give_back_after, **env)
    return run_python(textwrap.dedent(PRELUDE) + textwrap.dedent(code), timeout=120, env=clean)


BURST_AND_IDLE = """
    labkit.sleep(0)
    gc.collect()
    before = resident_bytes()
    greenlets = burst(20_000)
    parked = resident_bytes()
    end(greenlets)
    labkit.sleep(0.05)                    # the loop goes idle once
    print(json.dumps({"taken": (parked - before) / 20_000,
                      "left": (resident_bytes() - before) / 20_000, **memory_stats()}))
"""


def test_what_a_burst_of_greenlets_freed_goes_back_to_the_system():
    kept = json.loads(run(BURST_AND_IDLE, "0"))
    given = json.loads(run(BURST_AND_IDLE))
    # Without it, glibc keeps most of what the greenlets malloc'd (~1.6 KiB
    # each here) resident; with it, what is left is the allocator's noise.
    assert kept["trims"] == 0 and given["trims"] == 1, (kept, given)
    assert given["taken"] > 4096 and kept["taken"] > 4096     # (they all parked)
    assert kept["left"] > 800, kept
    assert given["left"] < kept["left"] / 3, (kept, given)
    assert given["outstanding"] < 100 and given["high_water"] == given["outstanding"]


def test_it_waits_for_a_long_enough_sleep_and_a_timer_due_sooner_is_not_made_late():
    out = run("""
        end(burst(20_000))
        for _ in range(5):
            labkit.sleep(0.001)           # a timer due in 1 ms: no trim before it
        print(trims())
        labkit.sleep(0.05)
        print(trims())
    """)
    assert out.split() == ["0", "1"]


def test_only_a_fall_to_half_the_peak_or_less_gives_back():
    out = run("""
        greenlets = burst(20_000)
        end(greenlets[:5_000])            # 5,000 of 20,000 end: not half
        labkit.sleep(0.05)
        print(trims())
        end(greenlets[5_000:15_000])      # 5,000 left of 20,000
        labkit.sleep(0.05)
        print(trims())
        end(greenlets)
    """)
    assert out.split() == ["0", "1"]


def test_a_second_burst_within_the_cool_down_waits_for_its_end():
    out = run("""
        import time
        end(burst(20_000))
        labkit.sleep(0.05)
        first = time.monotonic()
        end(burst(20_000))
        labkit.sleep(0.05)
        print(trims())                    # within a second of the first: none
        labkit.sleep(max(0.0, first + 1.1 - time.monotonic()))
        labkit.sleep(0.05)                # the first long wait after it
        print(trims())
    """)
    assert out.split() == ["1", "2"]


def test_a_steady_number_of_greenlets_never_sets_it_off():
    # 10,000 greenlets alive, and 20,000 more replacing them one for one:
    # the count never falls, even with a threshold of 100.
    out = run("""
        from labkit.event import Event
        event = Event()
        alive = [labkit.spawn(event.wait) for _ in range(10_000)]
        labkit.sleep(0)
        for i in range(20_000):
            alive[i % 10_000].kill(block=False)
            alive[i % 10_000] = labkit.spawn(event.wait)
            if i % 1000 == 0:
                labkit.sleep(0.02)        # long waits, where a trim could run
        labkit.sleep(0.02)
        stats = memory_stats()
        print(stats["trims"], stats["high_water"])
        event.set()
    """, "100")
    trims, high_water = map(int, out.split())
    assert trims == 0 and high_water >= 10_000, out


def test_without_the_block_cache_nothing_is_counted_or_given_back():
    out = run("""
        end(burst(20_000))
        labkit.sleep(0.05)
        print(json.dumps(memory_stats()))
    """, LABKIT_ARENA_CACHE="0")
    stats = json.loads(out)
    assert stats["trims"] == 0 and stats["high_water"] == 0, stats


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "99999999999999999999"])
def test_a_bad_LABKIT_GIVE_BACK_AFTER_is_refused_with_its_name(value):
    done = subprocess.run([sys.executable, "-c", "import labkit"], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, LABKIT_GIVE_BACK_AFTER=value))
    assert done.returncode != 0 and "LABKIT_GIVE_BACK_AFTER" in done.stderr, done.stderr
