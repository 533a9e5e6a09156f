"""loop_c/lk_arena_cache.c: the frame-stack block cache.

Importing labkit wraps CPython's arena allocator with a small cache of freed
16 KiB blocks, so that a fresh greenlet reuses a dead one's frame stack
instead of paying an mmap and a munmap. ``LABKIT_ARENA_CACHE=0`` leaves the
allocator alone. The allocator is process-wide: since 3.12, isolated
subinterpreters, each with its own GIL, call it at the same time, and the
cache must survive that.

Every test runs in a subprocess: a broken cache crashes the interpreter,
and a crash must fail one test, not kill pytest.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import run_python


def test_importing_labkit_installs_the_cache_and_fresh_greenlets_reuse_blocks():
    out = run_python("""
        import os
        os.environ["LABKIT_ARENA_CACHE"] = "1"
        from greenlet import greenlet
        import labkit
        from labkit._loop import arena_cache_stats

        assert arena_cache_stats()["installed"]
        for i in range(100):
            greenlet(lambda: None).switch()
        print(arena_cache_stats()["hits"])
    """)
    # Only 3.11+ gives each greenlet a frame stack of its own to allocate.
    if sys.version_info >= (3, 11):
        assert int(out) >= 99


def test_LABKIT_ARENA_CACHE_0_leaves_the_allocator_alone():
    out = run_python("""
        import os
        os.environ["LABKIT_ARENA_CACHE"] = "0"
        from labkit._loop import arena_cache_stats
        print(arena_cache_stats())
    """)
    assert "'installed': False" in out


def test_a_fork_child_and_its_parent_both_keep_using_the_cache():
    # The cache's lock is held across fork() so that the child never inherits
    # it locked; the child and the parent must both still start greenlets.
    out = run_python("""
        import os
        os.environ["LABKIT_ARENA_CACHE"] = "1"
        from greenlet import greenlet
        import labkit

        pid = os.fork()
        for i in range(100):
            greenlet(lambda: None).switch()
        if pid == 0:
            os._exit(0)
        print(os.waitpid(pid, 0)[1])
    """)
    assert out.split() == ["0"]


# --- several interpreters, several GILs, one cache ---------------------------
#
# Two isolated subinterpreters (own GIL each) recurse at the same time, each
# return across a 16 KiB chunk boundary freeing a block and each descent
# allocating one, while two threads of the main interpreter start fresh
# greenlets. All three GILs go through the cache at once. Before the cache
# had a lock, this crashed within a second in most runs (SIGSEGV, "double
# free or corruption", "Executing a cache").

STRESS_SECONDS = 1.5   # per participant; the whole test takes ~2-3 s
MAX_ROUNDS = 200_000   # a bound on the work too, should a clock misbehave

RECURSE = textwrap.dedent("""
    import time

    def down(n):
        return 0 if n == 0 else down(n - 1)

    deadline = time.monotonic() + {seconds}
    rounds = 0
    while rounds < {max_rounds} and time.monotonic() < deadline:
        down(100 + rounds % 400)   # 100-500 frames: crosses chunk boundaries
        rounds += 1
""")

STRESS = textwrap.dedent("""
    import sys
    import threading
    import time

    from greenlet import greenlet
    import labkit
    from labkit._loop import arena_cache_stats

    assert arena_cache_stats()["installed"], "the cache must be on for this test"
    SECONDS, MAX_ROUNDS = float(sys.argv[1]), int(sys.argv[2])
    RECURSE = sys.argv[3].format(seconds=SECONDS, max_rounds=MAX_ROUNDS)


    def isolated_interpreter_runner():
        \"\"\"run(code): run code in a new isolated interpreter with its own GIL,
        in the calling thread.\"\"\"
        try:
            from concurrent import interpreters          # 3.14+
        except ImportError:
            pass
        else:
            def run(code):
                interp = interpreters.create()           # isolated, own GIL
                try:
                    interp.exec(code)
                finally:
                    interp.close()
            return run
        try:
            import _interpreters                         # 3.13
        except ImportError:
            pass
        else:
            config = _interpreters.new_config("isolated")
            assert config.gil == "own", config

            def run(code):
                interp = _interpreters.create(config)
                try:
                    failure = _interpreters.exec(interp, code)
                    assert failure is None, failure.formatted
                finally:
                    _interpreters.destroy(interp)
            return run
        import _xxsubinterpreters                        # 3.12

        def run(code):
            interp = _xxsubinterpreters.create(isolated=True)   # own GIL in 3.12
            try:
                _xxsubinterpreters.run_string(interp, code)
            finally:
                _xxsubinterpreters.destroy(interp)
        return run


    def start_fresh_greenlets():
        deadline = time.monotonic() + SECONDS
        rounds = 0
        while rounds < MAX_ROUNDS and time.monotonic() < deadline:
            greenlet(lambda: None).switch()
            rounds += 1


    run_isolated = isolated_interpreter_runner()
    errors = []

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=guarded, args=(run_isolated, RECURSE))
               for _ in range(2)]
    threads += [threading.Thread(target=guarded, args=(start_fresh_greenlets,))
                for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    print(arena_cache_stats())
""")


def has_isolated_interpreters():
    """Whether this CPython can run subinterpreters with their own GIL."""
    if sys.version_info < (3, 12):   # PEP 684 arrived in 3.12
        return False
    for name in ("concurrent.interpreters", "_interpreters", "_xxsubinterpreters"):
        try:
            __import__(name)
            return True
        except ImportError:
            pass
    return False


@pytest.mark.skipif(not has_isolated_interpreters(),
                    reason="needs subinterpreters with their own GIL (PEP 684, CPython 3.12+)")
def test_isolated_subinterpreters_and_greenlet_threads_share_the_cache_without_crashing():
    env = dict(os.environ, LABKIT_ARENA_CACHE="1", PYTHONFAULTHANDLER="1")
    done = subprocess.run(
        [sys.executable, "-c", STRESS, str(STRESS_SECONDS), str(MAX_ROUNDS), RECURSE],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, (
        f"exit status {done.returncode} (negative: killed by that signal)\n"
        f"{done.stderr[-3000:]}")
    assert "'hits'" in done.stdout
