/* lk_memory.c -- give back to the system the memory a burst of greenlets
 * freed.
 *
 * Why: when a burst of greenlets ends (100,000 sleepers killed), the
 * interpreter and greenlet free what they malloc'd for them (~1.6 KiB
 * each: greenlet's saved C stacks, its objects, Python objects over 512
 * bytes), but glibc gives memory back to the system only from the top of
 * its heap, and any block still in use above the freed ones (allocated
 * later, by anyone) keeps all of it resident: 110-160 MiB after 100,000
 * sleepers, for good.  gevent and asyncio keep theirs the same way (more
 * or less, by luck of what sits at the top).  malloc_trim(0) returns the
 * free pages inside glibc's heaps too.
 *
 * When: the count comes from lk_arena_cache.c, which hands every greenlet
 * that has run Python code its 16 KiB frame-stack block (CPython 3.11+;
 * plus a thread's, or a deep recursion's second chunk): the blocks
 * outstanding are, to within a few, the live greenlets -- the one place
 * that count costs nothing to keep.  A trim is due when they have fallen
 * to half their high-water mark or less, by at least `give_back_after`
 * blocks (LABKIT_GIVE_BACK_AFTER, 4096 by default; 0 never); the mark
 * starts again from the count at each trim.
 *
 * Where: lk_poll (phase give_memory_back) runs it only before a wait that
 * would sleep at least lk__memory_give_back_least_wait_ns() -- 10 ms, or
 * twice what the last trim took -- or forever, and not while the loop
 * spins for another thread's reply: in time the loop would have slept, so
 * a timer due sooner is not made late (the trim waits for a longer
 * sleep).  It costs ~0.1 ms per MiB given back (~16 ms after 100,000
 * sleepers, ~15 us when there is nothing to give).  After a trim, none
 * runs for max(1 s, 100 times what it took), so a count that keeps
 * swinging (connections in waves) spends at most ~1% of the time trimming
 * and does not give back pages it is about to fault in again.
 *
 * The count and the trim are process-wide: with loops in several threads,
 * the first that goes to sleep trims (glibc holds each arena's lock while
 * it trims it, so other threads' mallocs wait for that).  On CPython 3.10
 * greenlets allocate no frame-stack blocks, and with LABKIT_ARENA_CACHE=0
 * nothing is counted: nothing is given back there.  Without glibc (musl,
 * macOS) there is no malloc_trim: nothing happens either.
 *
 * Threads: plain C11 atomics, no lock (the counts are hints: a race costs
 * a trim a little early or late, never a wrong one; one loop claims each
 * trim with a compare-and-swap).  No Python: the sanitizer's C leak check
 * builds this file with the loop.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "lk_loop_internal.h"

#define LK__TRIM_LEAST_WAIT_NS  (10 * 1000 * 1000)     /* 10 ms */
#define LK__TRIM_COOL_DOWN_NS   (1000 * 1000 * 1000)   /* 1 s ... */
#define LK__TRIM_COOL_DOWN_X    100                    /* ... or 100x the last trim */

static _Atomic int64_t outstanding;        /* blocks handed out, not freed */
static _Atomic int64_t high_water;         /* most outstanding since the last trim */
static _Atomic int64_t give_back_after = 4096;
static _Atomic int64_t no_trim_before;     /* the cool-down's end (monotonic ns) */
static _Atomic int64_t last_trim_ns;       /* what the last trim took */
static _Atomic uint64_t trims, trim_ns;

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void lk__memory_count_blocks(int64_t delta)
{
    int64_t now = atomic_fetch_add_explicit(&outstanding, delta, memory_order_relaxed) + delta;
    int64_t high = LOAD(high_water);
    while (now > high && !atomic_compare_exchange_weak_explicit(
               &high_water, &high, now, memory_order_relaxed, memory_order_relaxed))
        ;   /* (a failed exchange reloads high) */
}

/* Blocks outstanding; never below zero (a block from before the count
 * began -- a thread's, from before labkit was imported -- freed). */
static int64_t live_blocks(void)
{
    int64_t live = LOAD(outstanding);
    return live > 0 ? live : 0;
}

/* Whether the fall since the last trim calls for one; *high: the mark seen. */
static bool fallen(int64_t *high)
{
    int64_t after = LOAD(give_back_after);
    int64_t live = live_blocks();
    *high = LOAD(high_water);
    return after > 0 && *high - live >= after && live <= *high / 2;
}

int64_t lk__memory_give_back_least_wait_ns(void)
{
    int64_t high;
    if (!fallen(&high))
        return -1;   /* the common path: three loads */
    if (lk_now_ns() < LOAD(no_trim_before))
        return -1;
    int64_t least = 2 * LOAD(last_trim_ns);
    return least > LK__TRIM_LEAST_WAIT_NS ? least : LK__TRIM_LEAST_WAIT_NS;
}

int64_t lk__memory_give_back(void)
{
    int64_t high;
    if (!fallen(&high))
        return 0;
    /* Claim it: the next fall is counted from here.  Of two loops asking
     * at once, the one whose exchange fails does not trim. */
    if (!atomic_compare_exchange_strong_explicit(&high_water, &high, live_blocks(),
                                                 memory_order_relaxed, memory_order_relaxed))
        return 0;
#ifdef __GLIBC__
    int64_t started = lk_now_ns();
    malloc_trim(0);
    int64_t ended = lk_now_ns();
    int64_t took = ended - started > 0 ? ended - started : 1;
    int64_t cool = LK__TRIM_COOL_DOWN_X * took;
    STORE(last_trim_ns, took);
    STORE(no_trim_before, ended + (cool > LK__TRIM_COOL_DOWN_NS ? cool : LK__TRIM_COOL_DOWN_NS));
    atomic_fetch_add_explicit(&trims, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&trim_ns, (uint64_t)took, memory_order_relaxed);
    return took;
#else
    return 0;
#endif
}

void lk_memory_set_give_back(int64_t blocks)
{
    STORE(give_back_after, blocks > 0 ? blocks : 0);
    STORE(high_water, live_blocks());
}

void lk_memory_stats(int64_t *outstanding_now, int64_t *high_water_now, uint64_t *trims_made,
                     uint64_t *trims_ns)
{
    *outstanding_now = live_blocks();
    *high_water_now = LOAD(high_water);
    *trims_made = LOAD(trims);
    *trims_ns = LOAD(trim_ns);
}
