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
 * Counting: every block of frame-stack size handed out or freed is told
 * to lk_memory.c (lk__memory_count_blocks), which gives back what a burst
 * of greenlets freed once the count falls (see that file).
 */
#include <Python.h>
#include <pthread.h>
#include <stddef.h>

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
                pthread_mutex_unlock(&lk__lock);
                lk__memory_count_blocks(1);
                return ptr;
            }
        }
        lk__misses++;
        pthread_mutex_unlock(&lk__lock);
        void *ptr = lk__orig.alloc(lk__orig.ctx, size);
        if (ptr != NULL)
            lk__memory_count_blocks(1);
        return ptr;
    }
    return lk__orig.alloc(lk__orig.ctx, size);
}

static void lk__arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL && size <= LK__CACHE_MAX_BLOCK) {
        lk__memory_count_blocks(-1);
        pthread_mutex_lock(&lk__lock);
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
