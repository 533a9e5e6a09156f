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

/* Where a greenlet resumed (its "resume site"), for the blocking monitor:
 * the frames on its stack when it wrote its resume record, innermost (the
 * park function it returns from) first, up to and including the first
 * frame of user code, LK_SITE_DEPTH at most.  Taken by the resume writers
 * of lk_trace_py.c only while a stall threshold is set, and only read or
 * written by that module, with the GIL held: the fields are PyObject *
 * there (strong references), opaque here (lk_trace.c has no Python). */
#define LK_SITE_DEPTH 8
#define LK_SITE_FILES 256      /* the file classification cache's slots */
typedef struct {
    uint64_t  seq;                     /* its resume record; UINT64_MAX: none */
    int64_t   gid;                     /* that record's `a` */
    uint32_t  n;                       /* frames kept */
    int32_t   lasti[LK_SITE_DEPTH];    /* each frame's last instruction (bytes) */
    void     *code[LK_SITE_DEPTH];     /* PyCodeObject *, strong */
    uintptr_t frame[LK_SITE_DEPTH];    /* the frame's key: identity only */
    uint8_t   user[LK_SITE_DEPTH];     /* 1: code[i] is user code */
} lk_trace_site;

struct lk_trace {
    lk_trace_entry *records;     /* capacity slots                           */
    uint64_t         mask;        /* capacity - 1 (capacity is a power of 2)   */
    atomic_uint_fast64_t next;    /* records ever written == next seq number   */

    /* Read by the watchdog thread: relaxed atomics, a snapshot is enough. */
    atomic_int_fast64_t  last_ns;     /* timestamp of the newest record      */
    atomic_uint          last_kind;   /* its kind                             */
    atomic_int_fast64_t  current;     /* `a` of the newest LK_TR_RESUME       */
    atomic_uint_fast64_t current_seq; /* its seq (UINT64_MAX: none yet)       */

    int64_t              stall_ns;    /* 0: do not look for stalls            */
    atomic_uint_fast64_t stall_seq;   /* 2 x stalls seen; odd while writing  */
    atomic_int_fast64_t  stall_start_ns;
    atomic_int_fast64_t  stall_end_ns;
    /* Who ran when the last stall began, written with the pair (under the
     * same seqlock): `current` then, the kind of the record before the gap,
     * and a copy of current's resume record -- the block's greenlet and
     * what it had just resumed from, whether or not the watchdog ever got
     * the CPU to sample the block. */
    atomic_int_fast64_t  stall_current;
    atomic_uint          stall_start_kind;
    atomic_uint_fast64_t stall_resume_seq;
    atomic_int_fast64_t  stall_resume_ns;
    atomic_uint          stall_resume_why;
    atomic_int_fast64_t  stall_resume_b;

    /* Resume sites (see lk_trace_site): the newest one, and the one of the
     * greenlet that ran when the last stall began, kept by the next resume
     * writer once it sees the stall (a watchdog starved of CPU reads it
     * after the block).  Python-side state of lk_trace_py.c, GIL-guarded. */
    lk_trace_site        site;
    lk_trace_site        stall_site;
    uint64_t             site_stalls;      /* stall_seq when `site` was checked */
    void                *site_prefixes;    /* tuple of str: files not user code */
    void                *file_key[LK_SITE_FILES];  /* co_filename, strong */
    uint8_t              file_user[LK_SITE_FILES]; /* 1: user code, 0: not */
};

/* A gap of at least stall_ns between two records ended at `now` (the
 * record `seq` is being written): remember it for the watchdog, unless the
 * loop was merely waiting (see lk_trace.c).  Called before the new record
 * updates `current`, so current is still who ran when the gap began.  Rare
 * (once per block): it may cost what it likes. */
static inline void lk__trace_note_stall(lk_trace *t, int64_t now, int64_t prev_ns,
                                        uint32_t prev_kind, uint64_t seq)
{
    if (prev_kind == LK_TR_POLL_ENTER || prev_kind == LK_TR_HOST)
        return;   /* the loop was waiting, not stuck */
    int64_t current = atomic_load_explicit(&t->current, memory_order_relaxed);
    uint64_t resume_seq = atomic_load_explicit(&t->current_seq, memory_order_relaxed);
    int64_t resume_ns = 0, resume_b = 0;
    uint32_t resume_why = 0;
    /* current's resume record, if the ring still holds it: the slot of
     * `seq` (being written now) is the oldest one gone. */
    if (resume_seq != UINT64_MAX && resume_seq < seq && seq - resume_seq <= t->mask) {
        const lk_trace_entry *r = &t->records[resume_seq & t->mask];
        resume_ns = r->ts_ns;
        resume_why = r->arg;
        resume_b = r->b;
    }
    /* A seqlock: the counter is odd while the fields are being written, so
     * a reader that sees the same even count before and after has read a
     * consistent set. */
    atomic_fetch_add(&t->stall_seq, 1);
    atomic_store(&t->stall_start_ns, prev_ns);
    atomic_store(&t->stall_end_ns, now);
    atomic_store(&t->stall_current, current);
    atomic_store(&t->stall_start_kind, prev_kind);
    atomic_store(&t->stall_resume_seq, resume_seq);
    atomic_store(&t->stall_resume_ns, resume_ns);
    atomic_store(&t->stall_resume_why, resume_why);
    atomic_store(&t->stall_resume_b, resume_b);
    atomic_fetch_add(&t->stall_seq, 1);
}

/* Write one record stamped `now`; return its seq.  Any thread; see lk_trace.c. */
static inline uint64_t lk__trace_write(lk_trace *t, int64_t now, uint32_t kind,
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
    if (t->stall_ns > 0 && now - prev_ns >= t->stall_ns)
        lk__trace_note_stall(t, now, prev_ns, prev_kind, seq);   /* before `current` moves */
    if (kind == LK_TR_RESUME) {
        atomic_store_explicit(&t->current, a, memory_order_relaxed);
        atomic_store_explicit(&t->current_seq, seq, memory_order_relaxed);
    }
    return seq;
}

#endif /* LK_TRACE_RING_H */
