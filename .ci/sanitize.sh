#!/usr/bin/env bash
# Sanitizer target: the C loop under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   .ci/sanitize.sh            # from anywhere; exit status 0 = no report
#   KEEP=1 .ci/sanitize.sh     # keep the scratch directory for a post-mortem
#   SANITIZE_TESTS=tests/test_hub.py .ci/sanitize.sh   # other pytest targets
#
# What it does, and why each step is there:
#
# 1. Copies the sources into a scratch directory and compiles loop_c/ there
#    with -fsanitize=address,undefined: the cffi loop and the three CPython
#    builtins (trace writer; poll, timers and Timeout; the HTTP server's
#    per-field work).  It never touches the editable build
#    in the checkout (labkit/_lk_loop*.so), which other people's test runs
#    and notebooks are importing at the same time.
# 2. A C-level leak check: a small driver (below) links loop_c/*.c directly
#    and exercises every entry point, including fork and the error paths,
#    with LeakSanitizer ON.  Inside Python, leak detection has to be off:
#    CPython keeps interned strings, types and arenas until exit, and that
#    noise would drown any real report.  Built twice: eventfd and pipe wake-up.
# 3. Runs the loop and hub tests in Python against the sanitized extension.
#    The ASan runtime must be the first library loaded, so it is preloaded;
#    libstdc++ is preloaded with it because greenlet (C++) throws exceptions
#    across its stack switch and ASan's __cxa_throw interceptor needs the real
#    one resolved at start-up.  PYTHONMALLOC=malloc sends Python's small
#    objects (cffi's lk_event arrays included) through ASan's malloc, so an
#    overrun of a caller-owned array by lk_poll is caught.
# 4. Every report goes to a file (log_path); subprocesses and forked children
#    of the tests write there too.  Any ASan/LSan/UBSan report fails the run,
#    even if the test that triggered it passed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"
SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
PYTEST_TARGETS=(
    tests/test_loop_c.py
    tests/test_io_table.py
    tests/test_socket_args.py
    tests/test_socket.py
    tests/test_timer_heap.py
    tests/test_loop_fuzz.py
    tests/test_hub.py
    tests/test_timeout.py
    tests/test_sleep_timers.py
    tests/test_tracing_recorder.py
    tests/test_faults.py
    tests/test_tracing_block_start.py
    tests/test_tracing_ledger_fold.py
    tests/test_tracing_timeline_fold.py
    tests/test_frame_locals.py
    tests/test_http_fields.py
    tests/test_wsgi.py
)
# SANITIZE_TESTS="tests/a.py tests/b.py" runs those instead.
if [ -n "${SANITIZE_TESTS:-}" ]; then read -ra PYTEST_TARGETS <<<"$SANITIZE_TESTS"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/labkit-sanitize.XXXXXX")"
REPORTS="$WORK/reports"
mkdir -p "$REPORTS"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "sanitize: kept $WORK"; fi; }
trap cleanup EXIT

ASAN_RT="$(gcc -print-file-name=libasan.so)"
STDCXX_RT="$(gcc -print-file-name=libstdc++.so)"
if [ ! -e "$ASAN_RT" ]; then
    echo "sanitize: no ASan runtime ($ASAN_RT); install gcc's libasan" >&2
    exit 2
fi

# ---------------------------------------------------------------- 1. build
echo "sanitize: copying sources to $WORK"
tar -C "$ROOT" --exclude='*.so' --exclude='__pycache__' --exclude='.pytest_cache' \
    -cf - labkit loop_c tests tracing pyproject.toml setup.py | tar -C "$WORK" -xf -

echo "sanitize: building labkit's four extensions with $SAN_FLAGS"
# setup.py builds all four: the cffi loop (_lk_loop) and the three CPython
# builtins (_lk_trace_py, _lk_poll_py, _lk_http_py), in place in the scratch copy.
# (Before, only _lk_loop was rebuilt, and the other two were imported
# unsanitized from the checkout through the editable install's finder.)
(cd "$WORK" && LABKIT_CFLAGS="$SAN_FLAGS" CFLAGS="$SAN_FLAGS" \
    LDFLAGS="-fsanitize=address,undefined" \
    "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) \
    || { cat "$WORK/build.log"; exit 1; }
for ext in _lk_loop _lk_trace_py _lk_poll_py _lk_http_py; do
    so=("$WORK"/labkit/"$ext".*so)
    # (Read ldd's whole output before matching: with pipefail, "grep -q"
    # exiting at the first match can kill ldd with SIGPIPE and fail a
    # linked build.)
    LINKED="$(ldd "${so[0]}")"
    if ! grep -q libasan <<<"$LINKED"; then
        echo "sanitize: ${so[0]} is not linked against libasan" >&2
        exit 1
    fi
done

# ------------------------------------------------------- 2. C leak check
cat >"$WORK/leakcheck.c" <<'EOF'
/* Drive every entry point of loop_c with LeakSanitizer on.  Exits non-zero
 * on a broken contract; ASan/LSan/UBSan report on their own. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lk_loop.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "leakcheck: %s:%d: %s\n", \
                                          __FILE__, __LINE__, #c); exit(3); } } while (0)

static void *waker(void *loop) { usleep(1000); lk_wake(loop); return NULL; }

static int drain(lk_loop *loop, int max_events, int64_t timeout_ns)
{
    lk_event ev[64];
    int n = lk_poll(loop, timeout_ns, ev, max_events);
    CHECK(n >= 0);
    return n;
}

static void exercise(int backend)
{
    CHECK(lk_loop_new(99) == NULL);
    lk_loop *loop = lk_loop_new(backend);
    CHECK(loop != NULL);
    lk_trace *tr = lk_trace_new(64);
    CHECK(tr != NULL);
    lk_loop_set_trace(loop, tr);

    /* io: many fds so the tables grow, every mask, removal, errors */
    int pairs[40][2];
    for (int i = 0; i < 40; i++) {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]) == 0);
        CHECK(lk_io_set(loop, pairs[i][0], (uint32_t)(i % 4)) == 0);
        CHECK(write(pairs[i][1], "x", 1) == 1);
    }
    CHECK(lk_io_set(loop, -1, LK_READ) == -EINVAL);
    CHECK(lk_io_set(loop, pairs[0][0], 64) == -EINVAL);
    CHECK(lk_io_set(loop, 4000, LK_READ) == -EBADF);
    for (int max = 1; max <= 64; max *= 2)
        drain(loop, max, 0);
    /* close one end behind the loop's back, and the peer of another */
    close(pairs[1][0]);
    close(pairs[2][1]);
    for (int k = 0; k < 3; k++)
        drain(loop, 64, 0);
    for (int i = 0; i < 40; i++) {
        if (i != 1) {
            CHECK(lk_io_set(loop, pairs[i][0], 0) == 0);
            close(pairs[i][0]);
        }
        if (i != 2)
            close(pairs[i][1]);
    }

    /* timers: grow the heap, cancel half, fire the rest in small batches */
    int32_t ids[2000];
    for (int i = 0; i < 2000; i++) {
        ids[i] = lk_timer_start(loop, (int64_t)(i % 7) * 100000);
        CHECK(ids[i] >= 0);
    }
    for (int i = 0; i < 2000; i += 2)
        CHECK(lk_timer_cancel(loop, ids[i]) == 1);
    CHECK(lk_timer_cancel(loop, -5) == 0);
    CHECK(lk_timer_cancel(loop, 1 << 30) == 0);
    int fired = 0;
    while (fired < 1000)
        fired += drain(loop, 1 + fired % 17, 2000000);
    CHECK(lk_timer_count(loop) == 0);
    (void)lk_timer_start(loop, 1000000000);   /* left pending: freed with the loop */
    (void)lk_timer_start_at(loop, INT64_MAX);

    /* wake-up from another thread, and the bad-argument paths of lk_poll */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, waker, loop) == 0);
    drain(loop, 4, 5000000000LL);
    pthread_join(t, NULL);
    /* the same, caught while spinning; then a spin cut short by a timer */
    lk_loop_set_spin(loop, 2000000000LL);
    CHECK(pthread_create(&t, NULL, waker, loop) == 0);
    drain(loop, 4, 5000000000LL);
    pthread_join(t, NULL);
    drain(loop, 4, 1000000);
    lk_loop_set_spin(loop, 0);
    /* the learned spin: a quick wake-up, then a wait that spins for it */
    lk_loop_set_wake_spin(loop, 2000000000LL);
    for (int k = 0; k < 2; k++) {
        CHECK(pthread_create(&t, NULL, waker, loop) == 0);
        drain(loop, 4, 5000000000LL);
        pthread_join(t, NULL);
    }
    drain(loop, 4, 1000000);
    lk_loop_set_wake_spin(loop, 0);
    lk_event one;
    CHECK(lk_poll(loop, 0, NULL, 1) == -EINVAL);
    CHECK(lk_poll(loop, 0, &one, 0) == -EINVAL);

    /* fork: the child rebuilds its poller, uses it, frees everything */
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    CHECK(lk_io_set(loop, sp[0], LK_READ | LK_WRITE) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* -EBADF: the fd closed behind the loop's back above is still in
         * epoll's table and cannot be replayed (documented; it is dropped) */
        int rc = lk_loop_after_fork(loop);
        CHECK(rc == 0 || rc == -EBADF);
        drain(loop, 8, 0);
        lk_loop_set_trace(loop, NULL);
        lk_trace_free(tr);
        lk_loop_free(loop);
        exit(0);   /* exit, not _exit: LeakSanitizer checks the child too */
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    drain(loop, 8, 0);
    CHECK(lk_io_set(loop, sp[0], 0) == 0);
    close(sp[0]);
    close(sp[1]);

    lk_trace_entry entries[8];
    uint64_t first;
    CHECK(lk_trace_read(tr, entries, 8, 0, &first) >= 0);
    lk_loop_set_trace(loop, NULL);
    lk_trace_free(tr);
    lk_loop_free(loop);
}

int main(void)
{
#ifdef __linux__
    exercise(LK_BACKEND_EPOLL);
#endif
    exercise(LK_BACKEND_POLL);
    puts("leakcheck: ok");
    return 0;
}
EOF

# Every loop_c/*.c except those that need Python (the arena cache and any
# other glue that includes Python.h): the driver is plain C.
C_SOURCES=()
for f in "$WORK"/loop_c/*.c; do
    grep -q '#include <Python.h>' "$f" || C_SOURCES+=("$f")
done
run_leakcheck() {  # $1: label, rest: extra compiler flags
    local label="$1"; shift
    # shellcheck disable=SC2086
    gcc $SAN_FLAGS -std=c11 -Wall -Wextra -pthread "$@" -I"$WORK/loop_c" \
        -o "$WORK/leakcheck-$label" "$WORK/leakcheck.c" "${C_SOURCES[@]}"
    echo "sanitize: C leak check ($label wake-up)"
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$REPORTS/leakcheck-$label" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/leakcheck-$label" \
        "$WORK/leakcheck-$label"
}
status=0
run_leakcheck eventfd || status=1
run_leakcheck pipe -DLK_WAKEUP_PIPE || status=1

# ------------------------------------------- 3. Python tests, sanitized loop
echo "sanitize: pytest ${PYTEST_TARGETS[*]}"
(
    cd "$WORK"
    export PYTHONPATH="$WORK"
    export PYTHONMALLOC=malloc
    export LD_PRELOAD="$ASAN_RT:$STDCXX_RT"
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$REPORTS/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan"
    # Prove that the sanitized build is the one imported, not the checkout's.
    "$PY" -c "
import labkit._lk_loop, labkit._lk_trace_py, labkit._lk_poll_py, labkit._lk_http_py
for m in (labkit._lk_loop, labkit._lk_trace_py, labkit._lk_poll_py, labkit._lk_http_py):
    assert m.__file__.startswith('$WORK/'), m.__file__
"
    "$PY" -m pytest -q -p no:cacheprovider "${PYTEST_TARGETS[@]}"
) || status=1

# --------------------------------------------------------------- 4. verdict
# ASan may note stack switches (greenlet) as warnings; only errors count.
reports=$(grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:|CHECK failed' \
          "$REPORTS"/* 2>/dev/null || true)
if [ -n "$reports" ]; then
    for r in $reports; do
        echo "===== sanitizer report: $r"
        cat "$r"
    done
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "sanitize: OK (no ASan/LSan/UBSan report)"
else
    echo "sanitize: FAILED" >&2
fi
exit "$status"
