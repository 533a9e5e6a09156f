/* lk_loop.c -- the loop object, the fd table, and lk_poll.
 *
 * What the loop is: a poller (a backend behind a vtable), a table of the
 * fds it watches, a heap of timers and a wake-up fd.  What it is not: a
 * dispatcher.  lk_poll writes fired events (fd or timer id, bits) into the
 * caller's array and returns; Python maps ids to objects and runs them.
 * The C code never calls into Python, so there is one crossing per loop
 * iteration and no exception ever unwinds through a C frame.
 *
 * Threads: the loop belongs to one thread.  The single exception is
 * lk_wake(), which any thread may call (see the protocol at the bottom).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lk_loop_internal.h"

/* ============================================================ lifecycle */

static const lk__backend *choose_backend(int which)
{
    switch (which) {
    case LK_BACKEND_DEFAULT:
#ifdef __linux__
    case LK_BACKEND_EPOLL:
        return &lk__backend_epoll;
#else
        return &lk__backend_poll;
    case LK_BACKEND_EPOLL:
        errno = ENOSYS;
        return NULL;
#endif
    case LK_BACKEND_POLL:
        return &lk__backend_poll;
    default:
        errno = EINVAL;
        return NULL;
    }
}

/* The poller and the wake-up fd, which it watches.  Opened by lk_loop_new
 * and again by lk_loop_after_fork.  The wake-up fd is registered with the
 * backend directly, not through the fd table: it is the loop's own, never
 * reported and never counted. */
static int open_poller(lk_loop *loop)
{
    int rc = loop->backend->create(&loop->backend_state);
    if (rc < 0)
        return rc;
    rc = lk__wakeup_open(&loop->wakeup);
    if (rc < 0)
        return rc;
    return loop->backend->set_interest(loop->backend_state, loop->wakeup.read_fd, 0, LK_READ);
}

static void close_poller(lk_loop *loop)
{
    if (loop->backend_state != NULL)
        loop->backend->destroy(loop->backend_state);
    loop->backend_state = NULL;
    lk__wakeup_close(&loop->wakeup);
}

lk_loop *lk_loop_new(int backend)
{
    const lk__backend *b = choose_backend(backend);
    if (b == NULL)
        return NULL;
    lk_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL)
        return NULL;
    loop->backend = b;
    loop->wakeup = (lk__wakeup){ .read_fd = -1, .write_fd = -1 };
    lk__timers_init(&loop->timers);
    atomic_init(&loop->wake_pending, false);
    atomic_init(&loop->wakeups, 0);

    int rc = open_poller(loop);
    if (rc < 0) {
        lk_loop_free(loop);
        errno = -rc;
        return NULL;
    }
    return loop;
}

void lk_loop_free(lk_loop *loop)
{
    if (loop == NULL)
        return;
    close_poller(loop);
    free(loop->io_masks);
    lk__timers_destroy(&loop->timers);
    free(loop);
}

const char *lk_loop_backend_name(lk_loop *loop)
{
    return loop->backend->name;
}

int lk_loop_backend_fd(lk_loop *loop)
{
    return loop->backend_state ? loop->backend->backend_fd(loop->backend_state) : -1;
}

/* Attach a tracer's ring (NULL detaches).  The loop does not own it: the
 * caller detaches before freeing it. */
void lk_loop_set_trace(lk_loop *loop, lk_trace *t)
{
    loop->trace = t;
}

/* The next polls that may sleep poll without sleeping instead, for up to
 * spin_ns, until one of them catches nothing (0, the default: never).  The
 * hub sets it whenever a reply from another thread becomes due within
 * microseconds; see spin_before_sleeping. */
void lk_loop_set_spin(lk_loop *loop, int64_t spin_ns)
{
    loop->spin_ns = spin_ns < 0 ? 0 : spin_ns;
}

/* The same, learned: spin up to spin_ns while other threads' lk_wake calls
 * keep ending sleeping polls within spin_ns (0, the default: never).  See
 * adapt_spin. */
void lk_loop_set_wake_spin(lk_loop *loop, int64_t spin_ns)
{
    loop->wake_spin_ns = spin_ns < 0 ? 0 : spin_ns;
    if (loop->wake_spin_ns == 0)
        loop->spin_for_wake = false;
}

void lk_loop_get_stats(lk_loop *loop, lk_stats *out)
{
    *out = loop->stats;
    out->wakeups = atomic_load(&loop->wakeups);
}

/* ============================================================= fd table
 *
 * io_masks[fd] is the interest the kernel has been told about.  It is the
 * loop's memory of what it watches: lk_io_set compares against it to skip
 * syscalls that change nothing, lk_poll widens errors with it, and
 * lk_loop_after_fork replays it into a fresh poller.
 */

uint32_t lk_io_get(lk_loop *loop, int fd)
{
    return (fd >= 0 && (size_t)fd < loop->io_capacity) ? loop->io_masks[fd] : 0;
}

int lk_io_count(lk_loop *loop)
{
    return loop->io_count;
}

static int reserve_io_slot(lk_loop *loop, int fd)
{
    if ((size_t)fd < loop->io_capacity)
        return 0;
    size_t cap = loop->io_capacity ? loop->io_capacity : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    uint32_t *m = realloc(loop->io_masks, cap * sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    memset(m + loop->io_capacity, 0, (cap - loop->io_capacity) * sizeof *m);
    loop->io_masks = m;
    loop->io_capacity = cap;
    return 0;
}

static void remember_mask(lk_loop *loop, int fd, uint32_t old_mask, uint32_t new_mask)
{
    loop->io_count += (new_mask != 0) - (old_mask != 0);
    loop->io_masks[fd] = new_mask;
}

int lk_io_set(lk_loop *loop, int fd, uint32_t mask)
{
    if (fd < 0 || (mask & ~(uint32_t)LK__IO_MASK))
        return -EINVAL;
    if (loop->backend_state == NULL)
        return -EBADF;   /* a failed lk_loop_after_fork left no poller */
    if (fd == loop->wakeup.read_fd || fd == loop->wakeup.write_fd)
        return -EINVAL;  /* the loop's own fd */
    uint32_t old = lk_io_get(loop, fd);
    if (old == mask)
        return 0;

    /* Kernel first: it validates the fd, so a bogus fd number never makes
     * us grow the table to its size.  If the table then cannot grow, undo,
     * so that the kernel and the table never disagree. */
    int rc = loop->backend->set_interest(loop->backend_state, fd, old, mask);
    if (rc < 0)
        return rc;
    if (reserve_io_slot(loop, fd) < 0) {
        loop->backend->set_interest(loop->backend_state, fd, mask, old);
        return -ENOMEM;
    }
    remember_mask(loop, fd, old, mask);
    return 0;
}

/* ================================================================ timers
 *
 * Thin wrappers: the heap (lk_timer_heap.c) knows nothing about clocks.
 */

int32_t lk_timer_start_at(lk_loop *loop, int64_t deadline_ns)
{
    return lk__timers_start(&loop->timers, deadline_ns);
}

int32_t lk_timer_start(lk_loop *loop, int64_t delay_ns)
{
    int64_t now = lk_now_ns();
    if (delay_ns < 0)
        delay_ns = 0;
    int64_t deadline = delay_ns > INT64_MAX - now ? INT64_MAX : now + delay_ns;
    return lk_timer_start_at(loop, deadline);
}

int lk_timer_cancel(lk_loop *loop, int32_t id)
{
    return lk__timers_cancel(&loop->timers, id);
}

int lk_timer_count(lk_loop *loop)
{
    return loop->timers.heap_len;
}

int64_t lk_next_timeout_ns(lk_loop *loop)
{
    int64_t deadline;
    if (!lk__timers_earliest(&loop->timers, &deadline))
        return -1;
    int64_t now = lk_now_ns();
    return deadline <= now ? 0 : deadline - now;
}

/* =============================================================== lk_poll
 *
 * One loop iteration, as named phases in the order they run:
 *
 *   1. release_fired_timer_ids  ids fired last time become reusable
 *   2. compute_poll_timeout     min(caller's timeout, next timer)
 *      give_memory_back         before a long wait, after a burst of
 *                               greenlets ended: malloc_trim (see
 *                               lk_memory.c)
 *   3. poll_for_io              block in the backend (GIL released by cffi)
 *                               for that long, rounded up to ms; or, if
 *                               asked or learned to, spin instead
 *   4. process_io_events        drain the wake-up fd, widen errors,
 *                               forget fds the kernel no longer knows
 *   5. collect_expired_timers   due timers, in (deadline, start) order
 *   6. adapt_spin               spin next time if a wake-up came quickly
 *   7. update_stats
 *
 * With a tracer attached, "poll entered" and "poll left" records bracket
 * phases 3-7 (two branches when not traced).
 *
 * io events come first in `out`, then timers.  Returns how many were
 * written; 0 on timeout, wake-up, signal or a spin that caught nothing
 * (callers poll again: the next wait sleeps); -errno on error.
 */

static void release_fired_timer_ids(lk_loop *loop)
{
    lk__timers_release_quarantine(&loop->timers);
}

/* How long this call may wait, in ns (-1: forever).  The backend gets it
 * in ms, rounded up (see poll_for_io); the spin uses it as is. */
static int64_t compute_poll_timeout(lk_loop *loop, int64_t timeout_ns)
{
    int64_t wait_ns = timeout_ns < 0 ? -1 : timeout_ns;
    int64_t until_timer = lk_next_timeout_ns(loop);
    if (until_timer >= 0 && (wait_ns < 0 || until_timer < wait_ns))
        wait_ns = until_timer;
    return wait_ns;
}

/* Tell the CPU we are in a spin-wait loop (cheaper for a hyperthread
 * sibling, and no memory-order mis-speculation on exit). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Poll without sleeping, for at most `budget` and at most the wait the
 * caller allows.  Why: a thread that sleeps in epoll_wait lets its CPU go
 * idle, and on a virtual machine waking an idle CPU for the other thread's
 * eventfd write costs tens of microseconds -- more than the whole job a
 * thread pool ran.  Spinning keeps this CPU awake for a reply that is due
 * within microseconds.  The GIL is released (cffi), so the thread we wait
 * for runs Python meanwhile.
 *
 * A spin that catches nothing returns 0 rather than going on to sleep,
 * and turns the asked-for spin off (the hub asks again with the next job):
 *   - a signal that lands during the spin interrupts no syscall (each
 *     poll takes no time), so only a return to Python runs its handler --
 *     a sleep here would hold Ctrl-C until the next event;
 *   - the caller comes straight back, and its next poll sleeps: a reply
 *     that is late (a long job) costs one spin, not one per poll.
 * Returns what the backend returned (events, or -errno), or 0. */
static int spin_before_sleeping(lk_loop *loop, int64_t budget, int64_t wait_ns,
                                lk_event *out, int max_events)
{
    /* Cut short by the caller's timeout or a timer, a spin that catches
     * nothing is not a miss: the reply may still be due. */
    bool cut_short = wait_ns >= 0 && wait_ns < budget;
    if (cut_short)
        budget = wait_ns;
    int64_t start = lk_now_ns(), now = start;
    int n = 0;
    loop->stats.spins++;
    while (now - start < budget) {
        n = loop->backend->poll(loop->backend_state, 0, out, max_events);
        if (n != 0)
            break;
        cpu_relax();
        now = lk_now_ns();
    }
    if (n > 0)
        loop->stats.spin_hits++;
    else if (n == 0 && !cut_short)
        loop->spin_ns = 0;
    return n;
}

static int poll_for_io(lk_loop *loop, int64_t wait_ns, lk_event *out, int max_events)
{
    int64_t before = lk_now_ns();
    int n;
    int64_t spin_ns = loop->spin_ns;
    if (loop->spin_for_wake && loop->wake_spin_ns > spin_ns)
        spin_ns = loop->wake_spin_ns;
    if (spin_ns > 0 && wait_ns != 0)
        n = spin_before_sleeping(loop, spin_ns, wait_ns, out, max_events);
    else
        n = loop->backend->poll(loop->backend_state, (int)lk__ns_to_ms_ceil(wait_ns),
                                out, max_events);
    loop->waited_ns = lk_now_ns() - before;
    loop->stats.poll_ns += (uint64_t)loop->waited_ns;
    /* A signal interrupted the wait.  Do NOT retry: Python only runs its
     * signal handlers (Ctrl-C!) once we return to the interpreter. */
    if (n == -EINTR)
        return 0;
    return n;
}

static void consume_wakeup(lk_loop *loop);

/* Rewrite the backend's events in place, keeping the caller's ones. */
static int process_io_events(lk_loop *loop, lk_event *out, int n)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        lk_event ev = out[i];
        if (ev.id == loop->wakeup.read_fd) {
            consume_wakeup(loop);
            loop->woken = true;
            continue;
        }
        uint32_t mask = lk_io_get(loop, ev.id);
        if (mask == 0)
            continue;   /* epoll's stale registration of a closed fd: not ours */
        /* A hang-up or error concerns every waiter on the fd: report it
         * with all the registered bits, so a reader and a writer both wake
         * and each learns what happened from its next syscall. */
        if (ev.events & LK_ERROR)
            ev.events |= mask;
        if (ev.events & LK__GONE) {
            ev.events &= ~LK__GONE;
            lk_io_set(loop, ev.id, 0);   /* report once, then forget */
        }
        out[kept++] = ev;
    }
    return kept;
}

static int collect_expired_timers(lk_loop *loop, lk_event *out, int room)
{
    return lk__timers_collect_expired(&loop->timers, lk_now_ns(), out, room);
}

/* A wait that another thread's lk_wake ended within wake_spin_ns says that
 * thread is in a conversation with us (it posts, we answer, it posts
 * again): spin before the next sleep, as the hub asks for thread-pool
 * replies.  Stop as soon as a wait ends any other way or takes longer, so
 * an occasional wake-up costs one spin at most.  Only waits that could
 * sleep count. */
static void adapt_spin(lk_loop *loop, int64_t wait_ns)
{
    if (wait_ns != 0 && loop->wake_spin_ns > 0)
        loop->spin_for_wake = loop->woken && loop->waited_ns <= loop->wake_spin_ns;
    loop->woken = false;
}

/* Before a wait that would sleep long enough (or forever): if a burst of
 * greenlets has ended, hand the memory they freed back to the system
 * (lk_memory.c says when and why).  Not while the loop spins for
 * another thread's reply, which is due in microseconds.  It runs inside
 * the traced wait, in time the loop would have slept; a wait shorter than
 * the trim would take leaves it for a later one.  Returns the ns it took. */
static int64_t give_memory_back(lk_loop *loop, int64_t wait_ns)
{
    if (wait_ns == 0 || loop->spin_ns > 0 || loop->spin_for_wake)
        return 0;
    int64_t least = lk__memory_give_back_least_wait_ns();
    if (least < 0 || (wait_ns > 0 && wait_ns < least))
        return 0;
    return lk__memory_give_back();
}

static void update_stats(lk_loop *loop, int n_io, int n_timers)
{
    loop->stats.io_events += (uint64_t)n_io;
    loop->stats.timer_events += (uint64_t)n_timers;
}

int lk_poll(lk_loop *loop, int64_t timeout_ns, lk_event *out, int max_events)
{
    loop->stats.iterations++;   /* every call counts, even a failed one */
    if (out == NULL || max_events < 1)
        return -EINVAL;
    if (loop->backend_state == NULL)
        return -EBADF;          /* a failed lk_loop_after_fork left no poller */

    release_fired_timer_ids(loop);
    int64_t wait_ns = compute_poll_timeout(loop, timeout_ns);
    /* The tracer sees the wait from inside: the time between these two
     * records is the loop waiting, which the blocking monitor ignores. */
    if (loop->trace)
        lk_trace_record(loop->trace, LK_TR_POLL_ENTER, lk__ns_to_ms_ceil(wait_ns), 0, 0);
    int64_t trimmed_ns = give_memory_back(loop, wait_ns);
    if (trimmed_ns > 0) {   /* the wait is shorter by what the trim took */
        if (timeout_ns > 0)
            timeout_ns = timeout_ns > trimmed_ns ? timeout_ns - trimmed_ns : 0;
        wait_ns = compute_poll_timeout(loop, timeout_ns);
    }
    /* Keep a quarter of `out` for timers: with more fds ready than `out`
     * holds on every call, io alone would fill it and no sleep or Timeout
     * could ever fire. */
    int io_room = max_events - max_events / 4;
    int n_io = poll_for_io(loop, wait_ns, out, io_room);
    if (n_io < 0) {
        if (loop->trace)
            lk_trace_record(loop->trace, LK_TR_POLL_LEAVE, 0, 0, 0);
        return n_io;
    }
    n_io = process_io_events(loop, out, n_io);
    int n_timers = collect_expired_timers(loop, out + n_io, max_events - n_io);
    adapt_spin(loop, wait_ns);
    update_stats(loop, n_io, n_timers);
    if (loop->trace)
        lk_trace_record(loop->trace, LK_TR_POLL_LEAVE, n_io, 0, n_timers);
    return n_io + n_timers;
}

/* ======================================================= wake-up protocol
 *
 * lk_wake may be called from any thread, often many times in a burst (every
 * thread-pool job that finishes).  One write to the wake-up fd is enough to
 * end one wait, so `wake_pending` coalesces them: only the caller that flips
 * it false -> true writes.  The loop clears it after draining.
 *
 * The loop must DRAIN FIRST, THEN CLEAR.  Consider a waker W that publishes
 * some state (a finished job), then calls lk_wake, racing the loop L:
 *
 *   W before L's drain:     W's write is drained; L is returning anyway, and
 *                           the caller looks at the published state next.
 *   W between drain/clear:  W sees pending == true and does not write.  L's
 *                           exchange then reads W's true (RMW after RMW,
 *                           seq_cst), so W's state happens-before L returns;
 *                           the caller sees it without another wake.
 *   W after the clear:      W sees false and writes; the next wait returns
 *                           at once.
 *
 * Clearing first would lose a wake: W could set the flag and write between
 * L's clear and L's drain, L would drain W's byte, and the flag would stay
 * true with an empty fd -- every later lk_wake would skip its write and the
 * loop could sleep forever.
 */

static void consume_wakeup(lk_loop *loop)
{
    lk__wakeup_drain(&loop->wakeup);
    atomic_exchange(&loop->wake_pending, false);
}

void lk_wake(lk_loop *loop)
{
    if (atomic_exchange(&loop->wake_pending, true))
        return;   /* a write is already made and not yet drained */
    lk__wakeup_signal(&loop->wakeup);
    atomic_fetch_add_explicit(&loop->wakeups, 1, memory_order_relaxed);
}

/* ================================================================= fork
 *
 * A forked child shares the parent's epoll instance (an epoll fd is a
 * reference to one kernel object) and wake-up fd.  Editing them would edit
 * the parent's, so we only close our references, open fresh ones, and
 * replay the fd table into the new poller.  An fd that cannot be replayed
 * (closed in the meantime) is forgotten; the first error is returned.
 */
int lk_loop_after_fork(lk_loop *loop)
{
    close_poller(loop);
    atomic_store(&loop->wake_pending, false);
    int rc = open_poller(loop);
    if (rc < 0) {
        close_poller(loop);   /* leave a loop that reports -EBADF, not one that crashes */
        return rc;
    }

    int first_error = 0;
    for (size_t i = 0; i < loop->io_capacity; i++) {
        int fd = (int)i;
        uint32_t mask = loop->io_masks[fd];
        if (mask == 0)
            continue;
        /* A fresh wake-up fd can only reuse the number of a table fd that was
         * closed behind our back: that entry is stale. */
        rc = fd == loop->wakeup.read_fd || fd == loop->wakeup.write_fd
                 ? -EBADF
                 : loop->backend->set_interest(loop->backend_state, fd, 0, mask);
        if (rc < 0) {
            remember_mask(loop, fd, mask, 0);
            if (first_error == 0)
                first_error = rc;
        }
    }
    return first_error;
}
