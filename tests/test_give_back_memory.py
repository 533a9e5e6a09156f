"""The loop gives back the memory a burst of greenlets freed
(loop_c/lk_arena_cache.c, lk_poll's phase give_memory_back).

glibc returns memory to the system only from the top of its heap; after
thousands of greenlets end, what they malloc'd stays resident below any
block still in use. When the greenlets alive (the frame-stack blocks
outstanding) fall to half their peak or less, by at least
LABKIT_GIVE_BACK_AFTER, the loop calls malloc_trim(0) before it next sleeps.

Each test runs in a fresh interpreter: resident memory depends on the
heap's whole history.
"""
import json
import subprocess
import sys

import pytest

from helpers import run_python

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11),
                       reason="before 3.11 greenlets allocate no frame-stack block to count"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's"),
]

BURST = """
    import gc, json, os, sys
    import labkit
    from labkit._loop import memory_stats
    from labkit.bench.micro import resident_bytes

    N = int(sys.argv[1])
    labkit.sleep(0)
    gc.collect()
    before = resident_bytes()
    greenlets = [labkit.spawn(labkit.sleep, 60) for _ in range(N)]
    labkit.sleep(0)                       # every one starts and parks
    parked = resident_bytes()
    labkit.killall(greenlets)
    del greenlets
    gc.collect()
    labkit.sleep(0.01)                    # the hub sleeps once
    print(json.dumps({"taken": (parked - before) / N, "left": (resident_bytes() - before) / N,
                      **memory_stats()}))
"""


def _burst(n: int, give_back_after: str) -> dict:
    code = "import os; os.environ['LABKIT_GIVE_BACK_AFTER'] = %r\n" % give_back_after
    return json.loads(run_python(code + BURST.replace("\n    ", "\n"), str(n), timeout=120))


def test_what_a_burst_of_greenlets_freed_goes_back_to_the_system():
    kept = _burst(20_000, "0")
    given = _burst(20_000, "4096")
    # Without it, glibc keeps most of what the greenlets malloc'd (~1.6 KiB
    # each here) resident; with it, what is left is the allocator's noise.
    assert kept["trims"] == 0 and given["trims"] == 1, (kept, given)
    assert given["taken"] > 4096 and kept["taken"] > 4096     # (they all parked)
    assert kept["left"] > 800, kept
    assert given["left"] < kept["left"] / 3, (kept, given)
    assert given["outstanding"] < 100 and given["high_water"] == given["outstanding"]


def test_fewer_greenlets_ending_than_the_threshold_gives_nothing_back():
    stats = _burst(3_000, "4096")
    assert stats["trims"] == 0 and stats["high_water"] >= 3_000, stats


def test_a_steady_number_of_greenlets_never_sets_it_off():
    # 40,000 greenlets start and end, never more than 200 at once: the
    # count falls by 200 at most, far from the threshold.
    out = run_python("""
        import labkit
        from labkit._loop import memory_stats
        for _ in range(200):
            labkit.joinall([labkit.spawn(labkit.sleep, 0.0001) for _ in range(200)])
        print(memory_stats()["trims"])
    """, timeout=120)
    assert int(out) == 0


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_a_bad_LABKIT_GIVE_BACK_AFTER_is_refused_with_its_name(value):
    done = subprocess.run([sys.executable, "-c", "import labkit"], capture_output=True,
                          text=True, timeout=60,
                          env={"LABKIT_GIVE_BACK_AFTER": value, "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "LABKIT_GIVE_BACK_AFTER" in done.stderr, done.stderr
