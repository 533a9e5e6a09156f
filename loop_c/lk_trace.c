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
 * Who writes: lk_poll itself (poll entered, poll left), with the GIL
 * released, and Python's hooks in the hub, one record per switch into a
 * greenlet.  The hooks do not come through here but through record() in
 * lk_trace_py.c, a CPython builtin that writes with the GIL held: a cffi
 * call releases and re-takes the GIL, which costs more than the record.
 * Both use lk__trace_write (lk_trace_ring.h).  The writers are not
 * serialised by the GIL (lk_poll runs without it), so a slot is claimed
 * with an atomic fetch-add, and two hubs in two threads may share a ring.
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
 * at which its watchdog happened to look.  With them: who ran when the gap
 * began (`current`, the newest resume record's greenlet), the kind of the
 * record before the gap, and a copy of current's resume record, so the
 * block is named even if the watchdog never got the CPU while it lasted.
 * (Resume writers set `current` whoever switched: the hub or a greenlet
 * handing off directly.)  The stall logic assumes one
 * loop thread writes (the usual case); a second hub sharing the ring would
 * blur it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lk_loop_internal.h"
#include "lk_trace_ring.h"   /* struct lk_trace and the writer, shared */

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
    t->records = malloc(capacity * sizeof *t->records);
    if (t->records == NULL) {
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    /* Touch every page now.  A fresh page costs a page fault on its first
     * write (~90 ns per record, averaged, on the 2-core VM we measured): paid while
     * recording, that is half the cost of a record again, and it lands on
     * the program being traced.  So the whole ring is made resident (32
     * bytes x capacity) here, a few ms for the default 32 MiB.  Through a
     * volatile pointer, one byte per 4 KiB: a plain memset(0) after malloc
     * is turned into calloc by the compiler, which touches nothing. */
    volatile unsigned char *bytes = (volatile unsigned char *)t->records;
    for (uint64_t i = 0; i < capacity * sizeof *t->records; i += 4096)
        bytes[i] = 0;
    t->mask = capacity - 1;
    atomic_init(&t->next, 0);
    atomic_init(&t->last_ns, lk_now_ns());
    atomic_init(&t->last_kind, 0);
    atomic_init(&t->current, 0);
    atomic_init(&t->current_seq, UINT64_MAX);
    atomic_init(&t->stall_seq, 0);
    atomic_init(&t->stall_start_ns, 0);
    atomic_init(&t->stall_end_ns, 0);
    atomic_init(&t->stall_current, 0);
    atomic_init(&t->stall_start_kind, 0);
    atomic_init(&t->stall_resume_seq, UINT64_MAX);
    atomic_init(&t->stall_resume_ns, 0);
    atomic_init(&t->stall_resume_why, 0);
    atomic_init(&t->stall_resume_b, 0);
    t->site.seq = t->stall_site.seq = UINT64_MAX;   /* calloc zeroed the rest */
    return t;
}

/* The resume sites (lk_trace_py.c) hold references to code objects:
 * whoever configured them calls _lk_trace_py.release_sites first. */
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
    atomic_store(&t->current_seq, UINT64_MAX);   /* its record is gone */
    t->site.seq = t->stall_site.seq = UINT64_MAX;   /* so are the sites' (their
                                                       references stay, for release_sites) */
    atomic_store(&t->last_ns, lk_now_ns());
}

/* ----------------------------------------------------------------- writing */

void lk_trace_record(lk_trace *t, uint32_t kind, int64_t a, uint32_t arg, int64_t b)
{
    lk__trace_write(t, lk_now_ns(), kind, a, arg, b);
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
        out->stall_current = atomic_load(&t->stall_current);
        out->stall_start_kind = atomic_load(&t->stall_start_kind);
        out->stall_resume_seq = atomic_load(&t->stall_resume_seq);
        out->stall_resume_ns = atomic_load(&t->stall_resume_ns);
        out->stall_resume_why = atomic_load(&t->stall_resume_why);
        out->stall_resume_b = atomic_load(&t->stall_resume_b);
    } while ((seq & 1) || seq != atomic_load(&t->stall_seq));
    out->stalls = seq / 2;
    out->count = atomic_load_explicit(&t->next, memory_order_relaxed);
    out->last_ns = atomic_load_explicit(&t->last_ns, memory_order_relaxed);
    out->last_kind = atomic_load_explicit(&t->last_kind, memory_order_relaxed);
    out->current = atomic_load_explicit(&t->current, memory_order_relaxed);
    out->current_seq = atomic_load_explicit(&t->current_seq, memory_order_relaxed);
    out->now_ns = lk_now_ns();
}
