/* lk_loop.h -- public interface of labkit's C event loop.
 *
 * THIS FILE MUST MATCH lk_loop.cdef.  The cdef is what Python (cffi) sees; this
 * header is what the C compiler sees.  Every declaration between the two
 * "mirror" markers below is a copy of the cdef; tests/test_loop_c.py checks
 * that they agree, and cffi's generated code fails to compile or to import if
 * a type or a constant differs.
 *
 * Threads: every function belongs to the thread that runs the loop, except
 * lk_wake(), which any thread may call at any time.
 */
#ifndef LK_LOOP_H
#define LK_LOOP_H

#include <stdint.h>

/* ---- mirror of lk_loop.cdef: begin ---- */

typedef struct lk_loop lk_loop;

/* One fired event, written by lk_poll into the caller's array. */
typedef struct {
    int32_t  id;      /* the fd for io events; the timer id for LK_TIMER */
    uint32_t events;  /* LK_READ | LK_WRITE | LK_ERROR, or LK_TIMER */
} lk_event;

/* Counters the loop keeps about itself (read by the tracer and the bench). */
typedef struct {
    uint64_t iterations;   /* calls of lk_poll */
    uint64_t poll_ns;      /* total time spent blocked in the backend */
    uint64_t io_events;    /* io events reported */
    uint64_t timer_events; /* timers reported */
    uint64_t wakeups;      /* lk_wake calls that wrote to the wake-up fd */
} lk_stats;

#define LK_READ  1
#define LK_WRITE 2
#define LK_ERROR 4
#define LK_TIMER 8

#define LK_BACKEND_DEFAULT 0
#define LK_BACKEND_EPOLL   1
#define LK_BACKEND_POLL    2

int64_t     lk_now_ns(void);

lk_loop    *lk_loop_new(int backend);
void        lk_loop_free(lk_loop *loop);
const char *lk_loop_backend_name(lk_loop *loop);
int         lk_loop_backend_fd(lk_loop *loop);
int         lk_loop_after_fork(lk_loop *loop);
void        lk_loop_get_stats(lk_loop *loop, lk_stats *out);

int         lk_io_set(lk_loop *loop, int fd, uint32_t mask);
uint32_t    lk_io_get(lk_loop *loop, int fd);
int         lk_io_count(lk_loop *loop);

int32_t     lk_timer_start(lk_loop *loop, int64_t delay_ns);
int32_t     lk_timer_start_at(lk_loop *loop, int64_t deadline_ns);
int         lk_timer_cancel(lk_loop *loop, int32_t id);
int         lk_timer_count(lk_loop *loop);
int64_t     lk_next_timeout_ns(lk_loop *loop);

int         lk_poll(lk_loop *loop, int64_t timeout_ns, lk_event *out, int max_events);
void        lk_wake(lk_loop *loop);

/* lk_arena_cache.c: reuse freed frame-stack blocks (see that file). */
int         lk_arena_cache_install(void);
void        lk_arena_cache_stats(uint64_t *hits, uint64_t *misses, int *cached);

/* ---- mirror of lk_loop.cdef: end ---- */

#endif /* LK_LOOP_H */
