/* lk_arena_cache.c -- keep freed interpreter "arenas" of frame-stack size
 * for reuse, so that starting a greenlet does not cost an mmap + munmap.
 *
 * Why this exists: on CPython 3.11+ every greenlet gets its own frame data
 * stack, and the first Python call in a fresh greenlet allocates a 16 KiB
 * chunk for it through the interpreter's *arena allocator*, which is mmap();
 * the chunk goes back with munmap() when the greenlet dies. Measured here:
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
 * Thread safety: the arena allocator is only called with the GIL held, so
 * the cache needs no lock. On a free-threaded build (no GIL) this must not
 * be installed; lk_arena_cache_install() refuses there.
 *
 * This file is the one place in loop_c/ that includes Python.h; it never
 * calls into Python code, it only plugs a C function into the allocator.
 */
#include <Python.h>
#include <stddef.h>

#include "lk_loop.h"

#define LK__CACHE_SLOTS      64
#define LK__CACHE_MAX_BLOCK  (64 * 1024)

typedef struct {
    void  *ptr;
    size_t size;
} lk__cached_block;

static lk__cached_block lk__cache[LK__CACHE_SLOTS];
static int lk__cached;                    /* blocks in lk__cache[0..cached) */
static PyObjectArenaAllocator lk__orig;   /* the allocator we wrap */
static int lk__installed;
static uint64_t lk__hits, lk__misses;

static void *lk__arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    /* Newest first: the block freed last is the most likely to be hot. */
    for (int i = lk__cached - 1; i >= 0; i--) {
        if (lk__cache[i].size == size) {
            void *ptr = lk__cache[i].ptr;
            lk__cache[i] = lk__cache[--lk__cached];
            lk__hits++;
            return ptr;
        }
    }
    lk__misses++;
    return lk__orig.alloc(lk__orig.ctx, size);
}

static void lk__arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr != NULL && size <= LK__CACHE_MAX_BLOCK && lk__cached < LK__CACHE_SLOTS) {
        lk__cache[lk__cached].ptr = ptr;
        lk__cache[lk__cached].size = size;
        lk__cached++;
        return;
    }
    lk__orig.free(lk__orig.ctx, ptr, size);
}

int lk_arena_cache_install(void)
{
#ifdef Py_GIL_DISABLED
    return -1;   /* no GIL: the unlocked cache would race */
#else
    if (lk__installed)
        return 0;
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
    *hits = lk__hits;
    *misses = lk__misses;
    *cached = lk__cached;
    *installed = lk__installed;
}
