/* lk_trace.c -- the tracer's ring buffer of fixed-size records.
 *
 * What it is: an array of 32-byte records (timestamp, kind, a small
 * argument, two 64-bit payloads), a power of two long, written round and
 * round.  When it is full the oldest record is overwritten and `dropped`
 * counts it: a trace of a long run keeps its most recent part, and says
 * how much it lost.  Strings (greenlet names, spawn sites, stacks) never
 * enter the ring; Python keeps them in a side table keyed by the ids that
 * the records carry.
 *
 * Who writes: Python's hooks in the hub (one cffi call per switch into a
 * greenlet) and lk_poll itself (poll entered, poll left), which runs with
 * the GIL released.  cffi releases the GIL around every call, so even the
 * Python writers are not serialised by it: a slot is claimed with an
 * atomic fetch-add, and two hubs in two threads may share one ring.
 *
 * Who reads: lk_trace_read copies records out, oldest first, for the
 * thread that stops the trace.  The blocking monitor's watchdog thread
 * reads only lk_trace_get_state, a snapshot of a few counters.
 *
 * Stalls.  Every write compares its timestamp with the previous record's.
 * A gap longer than `stall_ns` means nothing was recorded for that long:
 * no greenlet was resumed, the loop did not poll -- the thread was stuck
 * in one piece of code.  Unless the previous record was "poll entered" or
 * "the hub handed the thread to its host": those gaps are the loop waiting,
 * which is its job.  The last stall's exact start and end are kept, so
 * the monitor reports the measured duration of a block, not the instants
 * at which its watchdog happened to look.  The stall logic assumes one
 * loop thread writes (the usual case); a second hub sharing the ring would
 * blur it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lk_loop_internal.h"

struct lk_trace {
    lk_trace_entry *records;     /* capacity slots                           */
    uint64_t         mask;        /* capacity - 1 (capacity is a power of 2)   */
    atomic_uint_fast64_t next;    /* records ever written == next seq number   */

    /* Read by the watchdog thread: relaxed atomics, a snapshot is enough. */
    atomic_int_fast64_t  last_ns;     /* timestamp of the newest record      */
    atomic_uint          last_kind;   /* its kind                             */
    atomic_int_fast64_t  current;     /* `a` of the newest LK_TR_RESUME       */

    int64_t              stall_ns;    /* 0: do not look for stalls            */
    atomic_uint_fast64_t stall_seq;   /* 2 x stalls seen; odd while writing  */
    atomic_int_fast64_t  stall_start_ns;
    atomic_int_fast64_t  stall_end_ns;
};

/* --------------------------------------------------------------- lifecycle */

static uint64_t round_up_pow2(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

lk_trace *lk_trace_new(uint64_t capacity)
{
    if (capacity < 2 || capacity > ((uint64_t)1 << 32)) {
        errno = EINVAL;
        return NULL;
    }
    capacity = round_up_pow2(capacity);
    lk_trace *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    /* calloc, not malloc: untouched pages stay shared zero pages, so a big
     * ring costs memory only as far as it is written. */
    t->records = calloc(capacity, sizeof *t->records);
    if (t->records == NULL) {
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    t->mask = capacity - 1;
    atomic_init(&t->next, 0);
    atomic_init(&t->last_ns, lk_now_ns());
    atomic_init(&t->last_kind, 0);
    atomic_init(&t->current, 0);
    atomic_init(&t->stall_seq, 0);
    atomic_init(&t->stall_start_ns, 0);
    atomic_init(&t->stall_end_ns, 0);
    return t;
}

void lk_trace_free(lk_trace *t)
{
    if (t == NULL)
        return;
    free(t->records);
    free(t);
}

void lk_trace_clear(lk_trace *t)
{
    atomic_store(&t->next, 0);
    atomic_store(&t->last_ns, lk_now_ns());
}

/* ----------------------------------------------------------------- writing */

static void note_stall(lk_trace *t, int64_t now, int64_t prev_ns, uint32_t prev_kind)
{
    if (prev_kind == LK_TR_POLL_ENTER || prev_kind == LK_TR_HOST)
        return;   /* the loop was waiting, not stuck */
    /* A seqlock: the counter is odd while the pair is being written, so
     * a reader that sees the same even count before and after has read a
     * consistent pair. */
    atomic_fetch_add(&t->stall_seq, 1);
    atomic_store(&t->stall_start_ns, prev_ns);
    atomic_store(&t->stall_end_ns, now);
    atomic_fetch_add(&t->stall_seq, 1);
}

void lk_trace_record(lk_trace *t, uint32_t kind, int64_t a, uint32_t arg, int64_t b)
{
    int64_t now = lk_now_ns();
    uint64_t seq = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
    lk_trace_entry *r = &t->records[seq & t->mask];
    r->ts_ns = now;
    r->kind = kind;
    r->arg = arg;
    r->a = a;
    r->b = b;

    /* Loads and stores, not exchanges: the stall logic assumes one writer
     * thread, and a locked instruction per field would double the cost. */
    int64_t prev_ns = atomic_load_explicit(&t->last_ns, memory_order_relaxed);
    uint32_t prev_kind = atomic_load_explicit(&t->last_kind, memory_order_relaxed);
    atomic_store_explicit(&t->last_ns, now, memory_order_relaxed);
    atomic_store_explicit(&t->last_kind, kind, memory_order_relaxed);
    if (kind == LK_TR_RESUME)
        atomic_store_explicit(&t->current, a, memory_order_relaxed);
    if (t->stall_ns > 0 && now - prev_ns >= t->stall_ns)
        note_stall(t, now, prev_ns, prev_kind);
}

/* ----------------------------------------------------------------- reading */

uint64_t lk_trace_count(lk_trace *t)
{
    return atomic_load(&t->next);
}

uint64_t lk_trace_capacity(lk_trace *t)
{
    return t->mask + 1;
}

uint64_t lk_trace_dropped(lk_trace *t)
{
    uint64_t n = atomic_load(&t->next);
    uint64_t cap = t->mask + 1;
    return n > cap ? n - cap : 0;
}

/* Copy up to `max` records with seq >= since_seq, oldest first.  Records
 * already overwritten are skipped: the copy starts at the oldest one
 * still in the ring.  *first_seq (if not NULL) receives the seq of out[0].
 * Call it while nobody writes (after detaching the ring), or accept that
 * the newest records may still be in flight. */
int64_t lk_trace_read(lk_trace *t, lk_trace_entry *out, int64_t max,
                      uint64_t since_seq, uint64_t *first_seq)
{
    uint64_t end = atomic_load(&t->next);
    uint64_t cap = t->mask + 1;
    uint64_t oldest = end > cap ? end - cap : 0;
    uint64_t seq = since_seq > oldest ? since_seq : oldest;
    if (first_seq != NULL)
        *first_seq = seq;
    int64_t n = 0;
    while (seq < end && n < max) {
        /* Copy the contiguous run up to the physical end of the array. */
        uint64_t slot = seq & t->mask;
        uint64_t run = cap - slot;
        if (run > end - seq)
            run = end - seq;
        if (run > (uint64_t)(max - n))
            run = (uint64_t)(max - n);
        memcpy(out + n, t->records + slot, run * sizeof *out);
        n += (int64_t)run;
        seq += run;
    }
    return n;
}

/* ------------------------------------------------------------- the watchdog */

void lk_trace_set_stall_threshold(lk_trace *t, int64_t ns)
{
    t->stall_ns = ns > 0 ? ns : 0;
}

void lk_trace_get_state(lk_trace *t, lk_trace_state *out)
{
    uint64_t seq;
    do {
        seq = atomic_load(&t->stall_seq);
        out->stall_start_ns = atomic_load(&t->stall_start_ns);
        out->stall_end_ns = atomic_load(&t->stall_end_ns);
    } while ((seq & 1) || seq != atomic_load(&t->stall_seq));
    out->stalls = seq / 2;
    out->count = atomic_load_explicit(&t->next, memory_order_relaxed);
    out->last_ns = atomic_load_explicit(&t->last_ns, memory_order_relaxed);
    out->last_kind = atomic_load_explicit(&t->last_kind, memory_order_relaxed);
    out->current = atomic_load_explicit(&t->current, memory_order_relaxed);
    out->now_ns = lk_now_ns();
}
