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
    uint64_t spins;        /* polls that spun before sleeping ...         */
    uint64_t spin_hits;    /* ... and those whose spin caught an event    */
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
void        lk_loop_set_spin(lk_loop *loop, int64_t spin_ns);
void        lk_loop_set_wake_spin(lk_loop *loop, int64_t spin_ns);

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
void        lk_arena_cache_stats(uint64_t *hits, uint64_t *misses, int *cached,
                                 int *installed);
/* lk_memory.c: give freed memory back to the system after a burst of
 * greenlets ended (lk_poll does, before it sleeps; blocks <= 0: never). */
void        lk_memory_set_give_back(int64_t blocks);
void        lk_memory_stats(int64_t *outstanding, int64_t *high_water, uint64_t *trims,
                            uint64_t *trim_ns);

/* lk_trace.c: the tracer's ring of fixed-size records (see that file). */
typedef struct lk_trace lk_trace;

/* One record: 32 bytes.  The meaning of arg, a and b depends on kind. */
typedef struct {
    int64_t  ts_ns;   /* CLOCK_MONOTONIC, taken by the writer */
    uint32_t kind;    /* LK_TR_* */
    uint32_t arg;     /* a small argument (LK_TR_RESUME: an LK_WHY_* code) */
    int64_t  a;       /* usually a greenlet id */
    int64_t  b;       /* by kind */
} lk_trace_entry;

/* A snapshot for the blocking monitor's watchdog thread. */
typedef struct {
    uint64_t count;          /* records ever written */
    int64_t  last_ns;        /* timestamp of the newest record */
    uint32_t last_kind;      /* its kind */
    int64_t  current;        /* a of the newest LK_TR_RESUME: who runs */
    uint64_t stalls;         /* gaps >= the stall threshold seen so far */
    int64_t  stall_start_ns; /* the last one: record before the gap ... */
    int64_t  stall_end_ns;   /* ... and the record that ended it */
    int64_t  now_ns;         /* when the snapshot was taken */
    /* Who ran in the last stall, kept when it ended (with the stall pair),
     * so that a watchdog that got no CPU during the block still knows: */
    uint32_t stall_start_kind;  /* kind of the record before the gap */
    uint32_t stall_resume_why;  /* arg of `current`'s resume record ... */
    int64_t  stall_current;     /* `current` when the gap began */
    uint64_t stall_resume_seq;  /* seq of its resume record (UINT64_MAX: none) */
    int64_t  stall_resume_ns;   /* ... its timestamp (0: overwritten) */
    int64_t  stall_resume_b;    /* ... its b (label number, -ns of a sleep) */
    uint64_t current_seq;       /* seq of the newest LK_TR_RESUME (UINT64_MAX: none) */
} lk_trace_state;

/* Record kinds.  RESUME: a = greenlet id, arg = LK_WHY_*, b = detail.
 * SPAWN: a = greenlet id, b = parent id.  EXIT: a = greenlet id, arg = 1 if
 * it raised, b = label id.  POLL_ENTER (written by lk_poll): a = timeout
 * in ms (-1 forever).  POLL_LEAVE (lk_poll): a = io events, b = timers.
 * PASS: the hub starts running ready callbacks, arg = how many.  HOST: the
 * hub hands the thread back to a host loop (tick).  MARK: start/stop. */
#define LK_TR_RESUME     1
#define LK_TR_SPAWN      2
#define LK_TR_EXIT       3
#define LK_TR_POLL_ENTER 4
#define LK_TR_POLL_LEAVE 5
#define LK_TR_PASS       6
#define LK_TR_HOST       7
#define LK_TR_MARK       8

/* Why a greenlet resumed (arg of LK_TR_RESUME); b is a label id for
 * WAITER and THROW, the origin greenlet's id for SWITCH. */
#define LK_WHY_START  1
#define LK_WHY_READY  2
#define LK_WHY_TIMER  3
#define LK_WHY_WAITER 4
#define LK_WHY_THROW  5
#define LK_WHY_SWITCH 6

lk_trace   *lk_trace_new(uint64_t capacity);
void        lk_trace_free(lk_trace *t);
void        lk_trace_clear(lk_trace *t);
void        lk_trace_record(lk_trace *t, uint32_t kind, int64_t a, uint32_t arg, int64_t b);
uint64_t    lk_trace_count(lk_trace *t);
uint64_t    lk_trace_capacity(lk_trace *t);
uint64_t    lk_trace_dropped(lk_trace *t);
int64_t     lk_trace_read(lk_trace *t, lk_trace_entry *out, int64_t max,
                          uint64_t since_seq, uint64_t *first_seq);
void        lk_trace_set_stall_threshold(lk_trace *t, int64_t ns);
void        lk_trace_get_state(lk_trace *t, lk_trace_state *out);
void        lk_loop_set_trace(lk_loop *loop, lk_trace *t);

/* lk_fold.c: the ledger's fold of trace records (see that file and
 * tracing/ledger.py).  One key per greenlet incarnation met in a batch. */
typedef struct {
    int64_t gid;
    int64_t spawn_ts;
    int32_t spawned;       /* its first record in the batch is its spawn */
    int32_t first_resume;  /* index of its first resume in the batch, -1: none */
    int64_t out;           /* out: when its last slice in the batch ended ... */
    int32_t closed;        /* ... if one did */
    int32_t has_out;       /* (lk_fold_run's: whether out is known) */
    int64_t switches;      /* out, the batch's: as tracing.ledger.Account */
    int64_t wakes;
    int64_t self_wakes;
    int64_t scheduled;
    int64_t idle;
    int64_t busy;
    int64_t longest;       /* its longest slice closed in the batch (0: none) */
    int64_t longest_at;
    int64_t most;          /* its longest ready stretch before a wake-up */
    int64_t most_at;
} lk_fold_key;

/* What one batch leaves for the next, and the loop's window figures. */
typedef struct {
    int64_t segment;       /* start of the hub's pass, or the end of the poll */
    int64_t poll_start;
    int64_t poll_left;     /* when the loop last left poll (lag) */
    int32_t has_poll_start;
    int32_t has_poll_left;
    int64_t polls;         /* the window's figures, added to */
    int64_t poll_ns;
    int64_t passes;
    int64_t callbacks;
    int64_t lags;
    int64_t lag_sum;
    int64_t lag_max;
    int64_t zero_timeout_ns; /* in: tracing.ledger.ZERO_TIMEOUT_NS */
    int32_t running_key;   /* out: the key whose slice still runs, -1: none */
    int64_t running_start;
    int32_t has_tail;      /* the newest record's run, for the slices */
    int32_t tail_mark;
    int32_t tail_has_wait;
    int32_t tail_has_pass;
    int64_t tail_seq;
    int64_t tail_owner;
    int64_t tail_start;
    int64_t tail_wait[6];
    int64_t tail_pass[2];
} lk_fold_carry;

#define LK_FOLD_COLUMNS 20
/* owners of a run other than a greenlet: the poll, the hub, nobody */
#define LK_FOLD_OWNER_POLL -1
#define LK_FOLD_OWNER_HUB -2
#define LK_FOLD_OWNER_NONE -3
#define LK_FOLD_EVENT_MARK_END 0
#define LK_FOLD_EVENT_UNKNOWN_WAIT 1

int64_t     lk_fold_keys(const lk_trace_entry *recs, int64_t n, int32_t *rec_key,
                         lk_fold_key *keys, int32_t *table, int64_t table_size,
                         int32_t *exits, int64_t *n_exits, int64_t *first_nonspawn);
void        lk_fold_run(const lk_trace_entry *recs, int64_t n, int64_t seq0,
                        const int32_t *rec_key, lk_fold_key *keys, int64_t nkeys,
                        const int64_t *out0, lk_fold_carry *c,
                        int64_t *cols, int64_t stride, int64_t *counts);

/* lk_strip.c: the live timeline's painting of the ledger's slices into
 * pixel columns (tracing/live_timeline.py's Strip; see that file). */
#define LK_STRIP_WHYS 8    /* LK_WHY_* are below this; why_code has one more: any other */
typedef struct {
    float   *run;              /* rows x size: ns each lane ran in each column  */
    uint8_t *park;             /* rows x size: the kind of wait covering it     */
    uint8_t *late;             /* rows x size: 1 a late sleep, 2 its due time   */
    int32_t *switches;         /* size: wake-ups per column                      */
    int32_t *ready;            /* size: longest ready queue per column          */
    int64_t  size;             /* columns kept (the ring's length)               */
    int64_t  col_ns;           /* a column's ns                                  */
    int64_t  last_col;         /* the newest column (absolute number)           */
    int64_t  late_ns;          /* a sleep this late or later is painted late    */
    const uint8_t *why_code;   /* [LK_STRIP_WHYS + 1]: a wait's kind by why      */
    const uint8_t *label_code[2];   /* [labels]: a Waiter's wait, a throw, by label */
    int64_t  labels;           /* entries in each label_code                     */
    uint8_t  no_label_code[2]; /* their kind for a number that is not a label   */
} lk_strip;

int64_t     lk_strip_lanes(const int64_t *owners, int64_t n, const int64_t *known,
                           const int64_t *rows, int64_t nknown, int64_t *out);
void        lk_strip_paint(const lk_strip *s,
                           const int64_t *run_lane, const int64_t *run_start,
                           const int64_t *run_end, int64_t n_runs,
                           const int64_t *wait_lane, const int64_t *wait_start,
                           const int64_t *wait_end, const int64_t *wait_why,
                           const int64_t *wait_detail, int64_t n_waits,
                           const int64_t *pass_ts, const int64_t *pass_ready, int64_t n_passes);

/* ---- mirror of lk_loop.cdef: end ---- */

#endif /* LK_LOOP_H */
