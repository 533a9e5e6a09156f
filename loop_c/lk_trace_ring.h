/* lk_trace_ring.h -- the trace ring's layout and its one writer.
 *
 * Two compiled modules write records into the same ring, so both must see
 * the same struct and the same write logic:
 *
 *   lk_trace.c     (in labkit._lk_loop, the cffi module): lk_trace_record,
 *                  called by lk_poll and by anything that goes through cffi;
 *   lk_trace_py.c  (labkit._lk_trace_py, a plain CPython extension): the
 *                  record() builtin the hub's hooks call, which writes with
 *                  the GIL held (see that file for why).
 *
 * This header is private to them; everybody else sees lk_trace as opaque.
 */
#ifndef LK_TRACE_RING_H
#define LK_TRACE_RING_H

#include <stdatomic.h>
#include <stdint.h>

#include "lk_loop.h"

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

/* A gap of at least stall_ns between two records ended at `now`: remember
 * it for the watchdog, unless the loop was merely waiting (see lk_trace.c). */
static inline void lk__trace_note_stall(lk_trace *t, int64_t now, int64_t prev_ns,
                                        uint32_t prev_kind)
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

/* Write one record stamped `now`.  Any thread; see lk_trace.c. */
static inline void lk__trace_write(lk_trace *t, int64_t now, uint32_t kind,
                                   int64_t a, uint32_t arg, int64_t b)
{
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
        lk__trace_note_stall(t, now, prev_ns, prev_kind);
}

#endif /* LK_TRACE_RING_H */
