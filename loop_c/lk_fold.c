/* lk_fold.c -- the ledger's fold of trace records, in C.
 *
 * tracing/ledger.py keeps running totals per greenlet (switches, busy /
 * scheduled / idle time, wake-ups, longest slice...) and the loop's window
 * figures, read from the ring's records; with a timeline attached it also
 * hands out "slices": who ran from when to when, each wait, the hub's
 * passes, spawns and exits.  The reading rules are written out plainly, one
 * record at a time, in Ledger._fold_python and Ledger._emit_python: this
 * file is the same reading -- ~315 instructions a record, where numpy's
 * passes took ~1,227 (python -m labkit.bench.callgrind --only ledger_fold)
 * -- and is tested record for record against it (tests/test_tracing_ledger_fold.py,
 * tests/test_tracing_timeline_fold.py).
 *
 * The accounts are Python objects, so a batch is folded in two calls with
 * Python between them:
 *
 *   1. lk_fold_keys: one key per greenlet incarnation met in the batch (a
 *      spawn under an id starts a new one), in the order they are met; for
 *      each record the key it belongs to; the exits, in time order.
 *   2. Python finds or makes each key's account and notes when that
 *      greenlet last ran (lk_fold_run's out0).
 *   3. lk_fold_run: one pass over the records, in time order, as the
 *      one-by-one reading does: the keys' totals for the batch, the loop's
 *      window figures and the state carried to the next batch (lk_fold_carry),
 *      and, when asked, the slices.  Python then adds each key's totals to
 *      its account.
 *
 * Nothing here allocates or calls Python; the caller owns every buffer.
 */
#include <stdint.h>
#include <string.h>

#include "lk_loop.h"

/* lk_fold_run's out0 for a greenlet whose last run is not known */
#define LK_FOLD_UNKNOWN INT64_MIN

static inline uint64_t hash_gid(int64_t gid)
{
    /* greenlet ids are addresses: drop the alignment bits, then mix */
    uint64_t x = (uint64_t)gid >> 4;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

int64_t lk_fold_keys(const lk_trace_entry *recs, int64_t n, int32_t *rec_key,
                     lk_fold_key *keys, int32_t *table, int64_t table_size,
                     int32_t *exits, int64_t *n_exits, int64_t *first_nonspawn)
{
    /* table: open addressing, gid -> its current key; table_size a power
     * of two at least 2n, so it is never more than half full. */
    uint64_t mask = (uint64_t)table_size - 1;
    int64_t nkeys = 0, nex = 0, nonspawn = n;
    memset(table, 0xff, (size_t)table_size * sizeof *table);
    for (int64_t i = 0; i < n; i++) {
        uint32_t kind = recs[i].kind;
        if (kind != LK_TR_SPAWN && nonspawn == n)
            nonspawn = i;
        if (kind != LK_TR_RESUME && kind != LK_TR_SPAWN && kind != LK_TR_EXIT) {
            rec_key[i] = -1;
            continue;
        }
        int64_t gid = recs[i].a;
        uint64_t slot = hash_gid(gid) & mask;
        while (table[slot] >= 0 && keys[table[slot]].gid != gid)
            slot = (slot + 1) & mask;
        int32_t k = table[slot];
        if (k < 0 || kind == LK_TR_SPAWN) {      /* a new incarnation */
            k = (int32_t)nkeys++;
            table[slot] = k;
            memset(&keys[k], 0, sizeof keys[k]);
            keys[k].gid = gid;
            keys[k].first_resume = -1;
            if (kind == LK_TR_SPAWN) {
                keys[k].spawned = 1;
                keys[k].spawn_ts = recs[i].ts_ns;
            }
        }
        rec_key[i] = k;
        if (kind == LK_TR_RESUME && keys[k].first_resume < 0)
            keys[k].first_resume = (int32_t)i;
        else if (kind == LK_TR_EXIT)
            exits[nex++] = (int32_t)i;
    }
    *n_exits = nex;
    *first_nonspawn = nonspawn;
    return nkeys;
}

/* Columns of the slices (lk_fold_run's cols: column c starts at cols + c *
 * stride), in tracing.ledger.Slices' order, then the events Python settles
 * (see below).  counts[] gets the rows of each group. */
enum {
    RUN_SEQ, RUN_OWNER, RUN_START, RUN_END,
    WAIT_SEQ, WAIT_OWNER, WAIT_START, WAIT_END, WAIT_WHY, WAIT_DETAIL,
    PASS_TS, PASS_READY,
    SPAWN_SEQ, SPAWN_GID, SPAWN_INDEX,
    EXIT_SEQ, EXIT_GID,
    EVENT_WHAT, EVENT_A, EVENT_B,
};
enum { N_RUNS, N_WAITS, N_PASSES, N_SPAWNS, N_EXITS, N_EVENTS };

#define COL(c) (cols + (int64_t)(c) * stride)

/* The newest record's run ends at the next record other than a spawn: it
 * is kept in the carry until then, with its wait or pass.  Put it out. */
static inline void end_tail(lk_fold_carry *c, int64_t ts, int64_t *cols, int64_t stride,
                     int64_t *counts)
{
    if (c->tail_owner != LK_FOLD_OWNER_NONE) {
        int64_t r = counts[N_RUNS]++;
        COL(RUN_SEQ)[r] = c->tail_seq;
        COL(RUN_OWNER)[r] = c->tail_owner;
        COL(RUN_START)[r] = c->tail_start;
        COL(RUN_END)[r] = ts;
    }
    if (c->tail_mark) {
        /* a greenlet that started the trace ran from its mark until here:
         * its first wait begins here (Python keeps these: _mark_ends) */
        int64_t e = counts[N_EVENTS]++;
        COL(EVENT_WHAT)[e] = LK_FOLD_EVENT_MARK_END;
        COL(EVENT_A)[e] = c->tail_owner;
        COL(EVENT_B)[e] = ts;
    }
    if (c->tail_has_wait) {
        int64_t w = counts[N_WAITS]++;
        for (int j = 0; j < 6; j++)
            COL(WAIT_SEQ + j)[w] = c->tail_wait[j];
        if (c->tail_wait[2] == 0 && c->tail_wait[4] != LK_WHY_START) {
            /* where it began is unknown: maybe at the end of a mark's run */
            int64_t e = counts[N_EVENTS]++;
            COL(EVENT_WHAT)[e] = LK_FOLD_EVENT_UNKNOWN_WAIT;
            COL(EVENT_A)[e] = w;
            COL(EVENT_B)[e] = 0;
        }
    }
    if (c->tail_has_pass) {
        int64_t p = counts[N_PASSES]++;
        COL(PASS_TS)[p] = c->tail_pass[0];
        COL(PASS_READY)[p] = c->tail_pass[1];
    }
}

/* out0[k]: when key k's greenlet last ran before the batch (the end of its
 * previous slice, or its spawn), LK_FOLD_UNKNOWN if not known. */
void lk_fold_run(const lk_trace_entry *recs, int64_t n, int64_t seq0,
                 const int32_t *rec_key, lk_fold_key *keys, int64_t nkeys,
                 const int64_t *out0, lk_fold_carry *carry,
                 int64_t *cols, int64_t stride, int64_t *row_counts)
{
    /* (the carry and the counts in locals, written back at the end: the
     * compiler then knows the columns' stores do not change them) */
    lk_fold_carry local = *carry, *c = &local;
    int64_t counts[6] = {0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < nkeys; k++) {
        keys[k].out = out0[k];
        keys[k].has_out = out0[k] != LK_FOLD_UNKNOWN;
    }
    int64_t segment = c->segment;
    int64_t poll_start = c->poll_start, poll_left = c->poll_left;
    int has_poll_start = c->has_poll_start, has_poll_left = c->has_poll_left;
    int32_t run_key = -1;      /* the greenlet slice running, and since when */
    int64_t run_start = 0;
    for (int64_t i = 0; i < n; i++) {
        const lk_trace_entry *r = &recs[i];
        uint32_t kind = r->kind;
        int64_t ts = r->ts_ns;
        if (kind == LK_TR_SPAWN) {
            /* a new account; the running slice goes on */
            if (cols != NULL) {
                int64_t s = counts[N_SPAWNS]++;
                COL(SPAWN_SEQ)[s] = seq0 + i;
                COL(SPAWN_GID)[s] = r->a;
                COL(SPAWN_INDEX)[s] = r->arg;
            }
            continue;
        }
        if (run_key >= 0) {        /* the running slice ends here */
            lk_fold_key *k = &keys[run_key];
            int64_t ran = ts - run_start;
            k->busy += ran;
            k->out = ts;
            k->has_out = 1;
            k->closed = 1;
            if (ran > k->longest) {
                k->longest = ran;
                k->longest_at = run_start;
            }
            run_key = -1;
        }
        if (cols != NULL && c->has_tail)
            end_tail(c, ts, cols, stride, counts);
        int64_t owner = LK_FOLD_OWNER_NONE, wait_start = 0;
        int mark = 0;
        switch (kind) {
        case LK_TR_RESUME: {
            lk_fold_key *k = &keys[rec_key[i]];
            uint32_t why = r->arg;
            k->switches++;
            if (k->has_out) {
                int64_t out = k->out, waited;
                if (why == LK_WHY_START) {     /* its first start: ready since spawned */
                    waited = ts - out;
                } else {
                    int64_t gap = ts - out;
                    k->wakes++;
                    if (why == LK_WHY_READY) {
                        waited = gap;
                        k->self_wakes++;
                    } else {
                        waited = ts - (segment > out ? segment : out);
                        if (why == LK_WHY_TIMER && gap < c->zero_timeout_ns)
                            k->self_wakes++;
                    }
                    k->idle += gap - waited;
                    wait_start = out;
                }
                k->scheduled += waited;
                /* (the wait to start is not starving) */
                if (waited > k->most && why != LK_WHY_START) {
                    k->most = waited;
                    k->most_at = ts;
                }
            }
            run_key = rec_key[i];
            run_start = ts;
            owner = r->a;
            break;
        }
        case LK_TR_PASS:
            segment = ts;
            if (!has_poll_left) {          /* the first pass of a tick: lag starts */
                poll_left = ts;
                has_poll_left = 1;
            }
            c->passes++;
            c->callbacks += r->arg;
            owner = LK_FOLD_OWNER_HUB;
            break;
        case LK_TR_POLL_ENTER:
            poll_start = ts;
            has_poll_start = 1;
            if (has_poll_left) {
                int64_t lag = ts - poll_left;
                c->lags++;
                c->lag_sum += lag;
                if (lag > c->lag_max)
                    c->lag_max = lag;
            }
            owner = LK_FOLD_OWNER_POLL;
            break;
        case LK_TR_POLL_LEAVE:
            if (has_poll_start) {
                c->poll_ns += ts - poll_start;
                c->polls++;
            }
            has_poll_start = 0;
            poll_left = segment = ts;
            has_poll_left = 1;
            owner = LK_FOLD_OWNER_HUB;
            break;
        case LK_TR_EXIT:
            if (cols != NULL) {
                int64_t e = counts[N_EXITS]++;
                COL(EXIT_SEQ)[e] = seq0 + i;
                COL(EXIT_GID)[e] = r->a;
            }
            break;
        default:   /* HOST, MARK and kinds this reading does not know:
                    * the thread goes elsewhere */
            has_poll_left = 0;
            if (kind == LK_TR_MARK && r->arg == 0) {   /* trace start: the caller runs */
                owner = r->a;
                mark = 1;
            }
            break;
        }
        if (cols != NULL) {
            c->has_tail = 1;
            c->tail_seq = seq0 + i;
            c->tail_owner = owner;
            c->tail_start = ts;
            c->tail_has_wait = kind == LK_TR_RESUME;
            if (c->tail_has_wait) {
                c->tail_wait[0] = seq0 + i;
                c->tail_wait[1] = r->a;
                c->tail_wait[2] = wait_start;
                c->tail_wait[3] = ts;
                c->tail_wait[4] = r->arg;
                c->tail_wait[5] = r->b;
            }
            c->tail_has_pass = kind == LK_TR_PASS;
            if (c->tail_has_pass) {
                c->tail_pass[0] = ts;
                c->tail_pass[1] = r->arg;
            }
            c->tail_mark = mark;
        }
    }
    c->segment = segment;
    c->poll_start = poll_start;
    c->has_poll_start = has_poll_start;
    c->poll_left = poll_left;
    c->has_poll_left = has_poll_left;
    c->running_key = run_key;
    c->running_start = run_start;
    *carry = local;
    if (cols != NULL)
        memcpy(row_counts, counts, sizeof counts);
}
