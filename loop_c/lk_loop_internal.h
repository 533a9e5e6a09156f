/* lk_loop_internal.h -- what the loop's own files share, and nobody else.
 *
 * Naming: public symbols start with lk_ (see lk_loop.h), private ones with
 * lk__ (double underscore), as libuv does with uv_ / uv__.
 *
 * The pieces, one file each:
 *   lk_clock.c          the monotonic clock and the ns -> ms rounding
 *   lk_timer_heap.c     timer records + a stable min-heap of deadlines
 *   lk_wakeup.c         the fd another thread writes to wake the loop
 *   lk_backend_epoll.c  the poller on Linux
 *   lk_backend_poll.c   the portable poller, poll(2)
 *   lk_loop.c           the loop object, the fd table and lk_poll's phases
 *   lk_trace.c          the tracer's ring of records (lk_poll writes to it)
 */
#ifndef LK_LOOP_INTERNAL_H
#define LK_LOOP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lk_loop.h"

#define LK__IO_MASK (LK_READ | LK_WRITE)   /* the bits lk_io_set accepts */

/* A backend may add this bit to an io event to say "the kernel no longer
 * knows this fd" (poll's POLLNVAL: it was closed behind the loop's back).
 * The loop strips it and forgets the fd; callers never see it. */
#define LK__GONE 0x80000000u

/* ------------------------------------------------------------------ clock */

int64_t lk__ns_to_ms_ceil(int64_t ns);   /* -1 stays -1; clamps to INT_MAX */

/* ---------------------------------------------------------------- backend
 *
 * A poller behind five tiny functions, in the spirit of redis' ae_epoll.c.
 * The backend writes fired events straight into the caller's lk_event array
 * so the loop never sees epoll or poll types.  It reports what the kernel
 * said, translated to LK_ bits; policy (hiding the wake-up fd, widening
 * errors, forgetting vanished fds) is the loop's business.
 *
 * The state is opaque to the loop: each backend defines its own struct.
 */
typedef struct lk__backend {
    const char *name;
    /* Make a poller; 0 or -errno.  All fds it opens are CLOEXEC. */
    int  (*create)(void **state);
    /* Close and free.  Never edits the kernel's interest list: after fork
     * the poller may be shared with the parent. */
    void (*destroy)(void *state);
    /* Change fd's interest from old_mask to new_mask (either may be 0);
     * 0 or -errno.  Only called when the two differ. */
    int  (*set_interest)(void *state, int fd, uint32_t old_mask, uint32_t new_mask);
    /* Wait up to timeout_ms (-1: forever), write at most max_events (>= 1)
     * events; their count, or -errno (-EINTR included: the loop decides). */
    int  (*poll)(void *state, int timeout_ms, lk_event *out, int max_events);
    /* The fd another loop could watch to host this one, or -1. */
    int  (*backend_fd)(void *state);
} lk__backend;

#ifdef __linux__
extern const lk__backend lk__backend_epoll;
#endif
extern const lk__backend lk__backend_poll;

/* ------------------------------------------------------------- timer heap
 *
 * Timers are records in a table; a timer's id is its slot number.  Free
 * slots form a free list.  Pending timers are also in an array min-heap of
 * ids ordered by (deadline_ns, seq): seq is a start counter, so equal
 * deadlines fire in start order (a stable heap, as in libuv).
 *
 * Every record is in exactly one of three states, and one list or heap:
 *   FREE         on the free list               (id may be handed out)
 *   PENDING      in the heap, heap_index >= 0   (may fire or be cancelled)
 *   QUARANTINED  on the quarantine list         (fired; id not reusable yet)
 * See lk__timers_collect_expired for why quarantine exists.
 */
typedef enum { LK__TIMER_FREE, LK__TIMER_PENDING, LK__TIMER_QUARANTINED } lk__timer_state;

typedef struct {
    int64_t         deadline_ns;
    uint64_t        seq;
    int32_t         heap_index;  /* position in heap[] while PENDING, else -1 */
    int32_t         next;        /* next id on the free or quarantine list, -1 ends */
    lk__timer_state state;
} lk__timer;

typedef struct {
    lk__timer *timers;          /* records, indexed by id */
    int32_t   *heap;            /* ids of PENDING timers; heap[0] fires first */
    int32_t    capacity;        /* slots in timers[] and heap[] (heap never needs more) */
    int32_t    used;            /* slots ever handed out; slots >= used are virgin */
    int32_t    heap_len;        /* == number of PENDING timers */
    int32_t    free_head;       /* FREE list, LIFO */
    int32_t    quarantine_head; /* QUARANTINED list */
    uint64_t   next_seq;        /* start counter for the tie-break */
} lk__timer_heap;

void    lk__timers_init(lk__timer_heap *h);
void    lk__timers_destroy(lk__timer_heap *h);
int32_t lk__timers_start(lk__timer_heap *h, int64_t deadline_ns);  /* id or -ENOMEM */
int     lk__timers_cancel(lk__timer_heap *h, int32_t id);          /* 1 pending, 0 not */
bool    lk__timers_earliest(const lk__timer_heap *h, int64_t *deadline_ns);
int     lk__timers_collect_expired(lk__timer_heap *h, int64_t now_ns,
                                   lk_event *out, int room);
void    lk__timers_release_quarantine(lk__timer_heap *h);

/* ---------------------------------------------------- giving memory back */

/* lk_memory.c: after a burst of greenlets has ended, malloc_trim(0) gives
 * the free memory inside malloc's heaps back to the system.
 * count_blocks: lk_arena_cache.c tells it every frame-stack block handed
 * out (+1) or freed (-1).  least_wait_ns: -1 if no trim is due (or one ran
 * less than the cool-down ago), else the shortest wait worth trimming in
 * (a wait forever always is).  give_back: trim now if still due; the ns it
 * took, 0 if none.  lk_poll calls the last two before it sleeps, without
 * the GIL. */
void    lk__memory_count_blocks(int64_t delta);
int64_t lk__memory_give_back_least_wait_ns(void);
int64_t lk__memory_give_back(void);

/* ---------------------------------------------------------------- wake-up */

typedef struct {
    int read_fd;    /* registered in the poller for LK_READ */
    int write_fd;   /* == read_fd for an eventfd */
} lk__wakeup;

int  lk__wakeup_open(lk__wakeup *w);     /* 0 or -errno; fds CLOEXEC, nonblocking */
void lk__wakeup_close(lk__wakeup *w);
void lk__wakeup_signal(lk__wakeup *w);   /* async-signal-safe, thread-safe */
void lk__wakeup_drain(lk__wakeup *w);

/* ------------------------------------------------------------------- loop */

struct lk_loop {
    const lk__backend *backend;      /* the poller's functions ...        */
    void              *backend_state; /* ... and its private state         */

    uint32_t *io_masks;      /* fd -> interest mask; 0 = not watched       */
    size_t    io_capacity;   /* entries in io_masks (grown on demand)      */
    int       io_count;      /* fds with a nonzero mask                    */

    lk__timer_heap timers;

    lk__wakeup  wakeup;
    atomic_bool wake_pending;   /* a wake is written and not yet drained  */

    lk_stats             stats;         /* loop thread only ...          */
    atomic_uint_fast64_t wakeups;       /* ... except this, any thread   */

    lk_trace *trace;   /* NULL: not traced (one branch per poll); not owned */

    /* Spinning before sleeping (see spin_before_sleeping in lk_loop.c). */
    int64_t spin_ns;        /* asked for, this long, until a spin misses    */
    int64_t wake_spin_ns;   /* this long, while lk_wake keeps ending polls
                             * within it (see adapt_spin); 0: never        */
    bool    spin_for_wake;  /* the last sleeping poll was ended that way    */
    bool    woken;          /* this poll drained the wake-up fd             */
    int64_t waited_ns;      /* how long this poll spun and slept            */
};

#endif /* LK_LOOP_INTERNAL_H */
