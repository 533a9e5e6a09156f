/* lk_arena_cache.c -- keep freed interpreter "arenas" of frame-stack size
 * for reuse, so that starting a greenlet does not cost an mmap + munmap.
 *
 * Why this exists: on CPython 3.11+ every greenlet gets its own frame data
 * stack, and the first Python call in a fresh greenlet allocates a 16 KiB
 * chunk for it through the interpreter's *arena allocator*, which is mmap();
 * the chunk goes back with munmap() when the greenlet dies. Measured on a
 * 2-core x86-64 VM (CPython 3.11, 2026; yours will differ):
 * ~7.5 us of the ~8 us it takes to run a fresh greenlet are these two
 * syscalls and the page faults on the new pages. gevent pays the same.
 *
 * CPython lets an embedder replace the arena allocator
 * (PyObject_SetArenaAllocator, a documented API). We wrap the original one
 * with a small LIFO cache of freed blocks up to LK__CACHE_MAX_BLOCK bytes:
 * a block freed by one greenlet is handed to the next one, still mapped and
 * still hot in the cache. Larger blocks (pymalloc's 1 MiB arenas) pass
 * through untouched. At most LK__CACHE_SLOTS blocks are kept (1 MiB at
 * 16 KiB each), so the memory cost is bounded.
 *
 * Thread safety: the allocator is process-wide, but since CPython 3.12
 * the GIL need not be: isolated subinterpreters (PEP 684) each have a GIL
 * of their own and call the allocator at the same time -- two of them
 * recursing deeply at once crashed the process before this cache had a
 * lock.  So the pop and the push hold lk__lock, a pthread mutex.  The
 * critical section is a scan of at most LK__CACHE_SLOTS entries and a few
 * stores, and the original allocator (an mmap or munmap) is called outside
 * it.  With one GIL the lock is never contended and costs two atomic
 * operations; under contention a mutex sleeps where a spinlock would burn
 * the CPU the lock's holder may need (this VM has two).  A fork while
 * another thread holds the lock would leave it locked forever in the
 * child, so lk__lock is taken around fork() (pthread_atfork).
 *
 * On a free-threaded build (no GIL at all) this is not installed:
 * lk_arena_cache_install() refuses there.  The lock would make the cache
 * itself safe, but labkit as a whole assumes a GIL (the trace ring's
 * writer does), refuses to import without one (labkit/_loop.py), and the
 * cache has never run there.
 *
 * Like lk_trace_py.c and lk_poll_py.c, this file includes Python.h; unlike
 * them it is part of the cffi module and never calls into Python code: it
 * only plugs a C function into the allocator.
 *
 * Giving memory back (lk__memory_give_back).  The blocks this allocator
 * hands out are one per greenlet that has run Python code (plus a
 * thread's, or a deep recursion's second chunk), so the count of those
 * outstanding is, to within a few, the number of live greenlets -- the one
 * place that count costs nothing to keep.  When a burst of greenlets ends
 * (100,000 sleepers killed), the interpreter and greenlet free what they
 * malloc'd for them (~1.6 KiB each: greenlet's saved C stacks, its
 * objects, Python objects over 512 bytes), but glibc gives memory back to
 * the system only from the top of its heap, and any block still in use
 * above the freed ones (allocated later, by anyone) keeps all of it
 * resident: 110-160 MiB after 100,000 sleepers, for good.  gevent and
 * asyncio keep theirs the same way (more or less, by luck of what sits at
 * the top).  So when the outstanding blocks have fallen to half their
 * high-water mark or less, by at least `give_back_after` blocks
 * (LABKIT_GIVE_BACK_AFTER, 4096 by default; 0 never), malloc_trim(0)
 * becomes due: glibc returns the free pages inside its heaps too.
 *
 * When it runs: in lk_poll (phase give_memory_back), only before a wait
 * that would sleep at least lk__memory_give_back_least_wait_ns() -- 10 ms,
 * or twice what the last trim took -- or forever, and not while the loop
 * spins for another thread's reply: in time the loop would have slept, so
 * a timer due sooner is not made late (the trim waits for a longer
 * sleep).  It costs ~0.1 ms per MiB given back (~16 ms after 100,000
 * sleepers, ~15 us when there is nothing to give).  After a trim, none
 * runs for max(1 s, 100 times what it took), so a count that keeps
 * swinging (connections in waves) spends at most ~1% of the time trimming
 * and does not give back pages it is about to fault in again.  The count
 * and the trim are process-wide: with loops in several threads, the first
 * that goes to sleep trims (glibc holds each arena's lock while it trims
 * it, so other threads' mallocs wait for that).  On CPython 3.10 greenlets
 * allocate no frame-stack blocks, and with LABKIT_ARENA_CACHE=0 nothing is
 * counted: nothing is given back there.  Without glibc (musl, macOS) there
 * is no malloc_trim: nothing happens either.
 */
#include <Python.h>
#include <pthread.h>
#include <stddef.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "lk_loop_internal.h"

#define LK__CACHE_SLOTS      64
#define LK__CACHE_MAX_BLOCK  (64 * 1024)

typedef struct {
    void  *ptr;
    size_t size;
} lk__cached_block;

/* Guarded by lk__lock: */
static lk__cached_block lk__cache[LK__CACHE_SLOTS];
static int lk__cached;                    /* blocks in lk__cache[0..cached) */
static uint64_t lk__hits, lk__misses;
static pthread_mutex_t lk__lock = PTHREAD_MUTEX_INITIALIZER;

/* Giving memory back (see the top of the file).  Written under lk__lock;
 * lk__give_back_due is also read without it (relaxed), by every lk_poll
 * that is about to sleep: one load on the common path. */
static int64_t lk__outstanding;          /* small blocks handed out, not freed */
static int64_t lk__high_water;           /* most outstanding since the last trim */
static int64_t lk__give_back_after = 4096;
static int lk__give_back_due;            /* the fall calls for a trim */
static int64_t lk__no_trim_before;       /* the cool-down's end (monotonic ns) */
static int64_t lk__last_trim_ns;         /* what the last trim took */
static uint64_t lk__trims, lk__trim_ns;

#define LK__TRIM_LEAST_WAIT_NS  (10 * 1000 * 1000)     /* 10 ms */
#define LK__TRIM_COOL_DOWN_NS   (1000 * 1000 * 1000)   /* 1 s ... */
#define LK__TRIM_COOL_DOWN_X    100                    /* ... or 100x the last trim */

/* After the outstanding count changed (lk__lock held). */
static void lk__count_blocks(int64_t delta)
{
    lk__outstanding += delta;
    if (lk__outstanding < 0)   /* a block from before the install, freed */
        lk__outstanding = 0;
    if (lk__outstanding > lk__high_water)
        lk__high_water = lk__outstanding;
    int due = lk__give_back_after > 0
        && lk__high_water - lk__outstanding >= lk__give_back_after
        && lk__outstanding <= lk__high_water / 2;
    if (due != lk__give_back_due)
        __atomic_store_n(&lk__give_back_due, due, __ATOMIC_RELAXED);
}

/* Written once, by lk_arena_cache_install, before the cache is in use: */
static PyObjectArenaAllocator lk__orig;   /* the allocator we wrap */
static int lk__installed;

static void *lk__arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size <= LK__CACHE_MAX_BLOCK) {   /* larger blocks are never cached */
        pthread_mutex_lock(&lk__lock);
        /* Newest first: the block freed last is the most likely to be hot. */
        for (int i = lk__cached - 1; i >= 0; i--) {
            if (lk__cache[i].size == size) {
                void *ptr = lk__cache[i].ptr;
                lk__cache[i] = lk__cache[--lk__cached];
                lk__hits++;
                lk__count_blocks(1);
                pthread_mutex_unlock(&lk__lock);
                return ptr;
            }
        }
        lk__misses++;
        pthread_mutex_unlock(&lk__lock);
        void *ptr = lk__orig.alloc(lk__orig.ctx, size);
        if (ptr != NULL) {
            pthread_mutex_lock(&lk__lock);
            lk__count_blocks(1);
            pthread_mutex_unlock(&lk__lock);
        }
        return ptr;
    }
    return lk__orig.alloc(lk__orig.ctx, size);
}

static void lk__arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL && size <= LK__CACHE_MAX_BLOCK) {
        pthread_mutex_lock(&lk__lock);
        lk__count_blocks(-1);
        int kept = lk__cached < LK__CACHE_SLOTS;
        if (kept) {
            lk__cache[lk__cached].ptr = ptr;
            lk__cache[lk__cached].size = size;
            lk__cached++;
        }
        pthread_mutex_unlock(&lk__lock);
        if (kept)
            return;
    }
    lk__orig.free(lk__orig.ctx, ptr, size);
}

/* fork() while another thread holds lk__lock: hold it across the fork
 * ourselves, so that it is in a known state on both sides. */
static void lk__lock_before_fork(void) { pthread_mutex_lock(&lk__lock); }
static void lk__unlock_after_fork(void) { pthread_mutex_unlock(&lk__lock); }

int lk_arena_cache_install(void)
{
#ifdef Py_GIL_DISABLED
    return -1;   /* no GIL: see "Thread safety" above */
#else
    if (lk__installed)
        return 0;
    if (pthread_atfork(lk__lock_before_fork, lk__unlock_after_fork,
                       lk__unlock_after_fork) != 0)
        return -1;   /* ENOMEM: run without the cache rather than risk a hang */
    PyObjectArenaAllocator ours = { NULL, lk__arena_alloc, lk__arena_free };
    PyObject_GetArenaAllocator(&lk__orig);
    PyObject_SetArenaAllocator(&ours);
    lk__installed = 1;
    return 0;
#endif
}

void lk_arena_cache_stats(uint64_t *hits, uint64_t *misses, int *cached,
                          int *installed)
{
    pthread_mutex_lock(&lk__lock);   /* one consistent snapshot */
    *hits = lk__hits;
    *misses = lk__misses;
    *cached = lk__cached;
    pthread_mutex_unlock(&lk__lock);
    *installed = lk__installed;
}

/* ------------------------------------------------------ giving memory back */

int64_t lk__memory_give_back_least_wait_ns(void)
{
    if (!__atomic_load_n(&lk__give_back_due, __ATOMIC_RELAXED))
        return -1;   /* the common path: one load */
    pthread_mutex_lock(&lk__lock);
    int64_t least = -1;
    if (lk__give_back_due && lk_now_ns() >= lk__no_trim_before) {
        least = 2 * lk__last_trim_ns;
        if (least < LK__TRIM_LEAST_WAIT_NS)
            least = LK__TRIM_LEAST_WAIT_NS;
    }
    pthread_mutex_unlock(&lk__lock);
    return least;
}

int64_t lk__memory_give_back(void)
{
    pthread_mutex_lock(&lk__lock);
    int due = lk__give_back_due;
    if (due) {   /* one caller trims; the next fall starts from here */
        lk__high_water = lk__outstanding;
        __atomic_store_n(&lk__give_back_due, 0, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&lk__lock);
    if (!due)
        return 0;
#ifdef __GLIBC__
    int64_t started = lk_now_ns();
    malloc_trim(0);   /* (outside lk__lock: it takes glibc's arena locks) */
    int64_t ended = lk_now_ns();
    int64_t took = ended - started > 0 ? ended - started : 1;
    int64_t cool = LK__TRIM_COOL_DOWN_X * took;
    pthread_mutex_lock(&lk__lock);
    lk__trims++;
    lk__trim_ns += (uint64_t)took;
    lk__last_trim_ns = took;
    lk__no_trim_before = ended + (cool > LK__TRIM_COOL_DOWN_NS ? cool : LK__TRIM_COOL_DOWN_NS);
    pthread_mutex_unlock(&lk__lock);
    return took;
#else
    return 0;
#endif
}

void lk_memory_set_give_back(int64_t blocks)
{
    pthread_mutex_lock(&lk__lock);
    lk__give_back_after = blocks > 0 ? blocks : 0;
    lk__high_water = lk__outstanding;
    lk__count_blocks(0);
    pthread_mutex_unlock(&lk__lock);
}

void lk_memory_stats(int64_t *outstanding, int64_t *high_water, uint64_t *trims,
                     uint64_t *trim_ns)
{
    pthread_mutex_lock(&lk__lock);
    *outstanding = lk__outstanding;
    *high_water = lk__high_water;
    *trims = lk__trims;
    *trim_ns = lk__trim_ns;
    pthread_mutex_unlock(&lk__lock);
}
