/* lk_strip.c -- the live timeline's painting: the ledger's slices into
 * pixel columns.
 *
 * tracing/live_timeline.py's Strip keeps, per lane (a greenlet, the hub,
 * the poll), one value per pixel column of the picture: the nanoseconds
 * the lane ran in that column (`run`), the kind of wait that covered it
 * (`park`), late sleeps (`late`); and per column the wake-ups and the
 * longest ready queue.  The columns are a ring over absolute time: column
 * c (c = t / col_ns) lives in slot c % size.  Each refresh paints what the
 * ledger's fold handed out since the last one (tracing.ledger.Slices): a
 * run and a wait per resume -- some 200,000 a second under an echo server.
 * With numpy that was ~30 passes over them plus a join of the batches,
 * ~100-330 ns a record: the timeline's thread took ~4% of a core beside a
 * busy hub.  Here a batch is three calls (the lanes of its runs and of its
 * waits, then one pass), ~45 ns a record with the Python around them
 * (python -m labkit bench --only strip_paint); cffi releases the GIL
 * around each, so the hub runs meanwhile.
 *
 * The rules (Strip's docstrings say them in words; its tests check them):
 *   - a span [start, end) is clipped to the kept columns: it starts no
 *     earlier than the first kept column's start; an empty span paints
 *     nothing, and no span covers more than `size` columns;
 *   - a run adds to each column it covers its ns within that column;
 *   - a wait paints its kind's code over the columns it covers, spans in
 *     order (a later one's code wins), if it is known when it began
 *     (start > 0) and spans more than one column (a wait within one
 *     column is covered by the runs around it);
 *   - a wait's kind: why_code[min(why, LK_STRIP_WHYS)], except for a
 *     Waiter's wait or a throw (LK_WHY_WAITER, LK_WHY_THROW), whose detail
 *     is a label's number: label_code[0 or 1][detail] for a label, the
 *     label-less code (no_label_code) for a number that is not one;
 *   - a sleep that ended late (why LK_WHY_TIMER, detail = -lateness) by at
 *     least late_ns: `late` is 1 from its due time to its resume, and 2 in
 *     the column of its due time;
 *   - each wait ends with a wake-up, counted in its resume's column; each
 *     hub pass raises its column's longest ready queue (passes: only with
 *     the batch's first piece, see Strip._take).
 * lk_strip_lanes maps owners (greenlet ids, and the poll's and the hub's
 * LK_FOLD_OWNER_*) to lanes through a table sorted by owner; an owner not
 * in it gets -1, and their count is returned (the caller makes their lanes
 * and asks again).  Nothing here allocates or calls Python; the caller
 * owns every buffer, and lanes are rows of the layers.
 */
#include <stdint.h>

#include "lk_loop.h"

int64_t lk_strip_lanes(const int64_t *owners, int64_t n, const int64_t *known,
                       const int64_t *rows, int64_t nknown, int64_t *out)
{
    int64_t missing = 0;
    for (int64_t i = 0; i < n; i++) {
        /* the last known owner <= this one, without a branch per step
         * (greenlet ids are addresses: which way a step goes is random) */
        int64_t owner = owners[i], at = 0, len = nknown;
        while (len > 1) {
            int64_t half = len / 2;
            at = known[at + half] <= owner ? at + half : at;
            len -= half;
        }
        if (nknown > 0 && known[at] == owner) {
            out[i] = rows[at];
        } else {
            out[i] = -1;
            missing++;
        }
    }
    return missing;
}

/* The first kept column's start, in ns. */
static inline int64_t oldest_ns(const lk_strip *s)
{
    return (s->last_col - s->size + 1) * s->col_ns;
}

static void add_ns(const lk_strip *s, int64_t lane, int64_t start, int64_t end)
{
    int64_t t = start > oldest_ns(s) ? start : oldest_ns(s);
    float *row = s->run + lane * s->size;
    int64_t c = t / s->col_ns, stop = c + s->size;
    while (t < end && c < stop) {
        int64_t next = (c + 1) * s->col_ns, hi = end < next ? end : next;
        row[c % s->size] += (float)(hi - t);
        t = hi;
        c++;
    }
}

static void set_code(const lk_strip *s, uint8_t *layer, int64_t lane, int64_t start,
                     int64_t end, uint8_t code)
{
    int64_t t = start > oldest_ns(s) ? start : oldest_ns(s);
    if (end <= t)
        return;
    uint8_t *row = layer + lane * s->size;
    int64_t c = t / s->col_ns, last = (end - 1) / s->col_ns;
    if (last - c >= s->size)
        last = c + s->size - 1;
    for (; c <= last; c++)
        row[c % s->size] = code;
}

static uint8_t wait_code(const lk_strip *s, int64_t why, int64_t detail)
{
    int which = why == LK_WHY_WAITER ? 0 : why == LK_WHY_THROW ? 1 : -1;
    if (which < 0)
        return s->why_code[why < LK_STRIP_WHYS ? why : LK_STRIP_WHYS];
    if (detail >= 0 && detail < s->labels)
        return s->label_code[which][detail];
    return s->no_label_code[which];
}

void lk_strip_paint(const lk_strip *s,
                    const int64_t *run_lane, const int64_t *run_start, const int64_t *run_end,
                    int64_t n_runs,
                    const int64_t *wait_lane, const int64_t *wait_start, const int64_t *wait_end,
                    const int64_t *wait_why, const int64_t *wait_detail, int64_t n_waits,
                    const int64_t *pass_ts, const int64_t *pass_ready, int64_t n_passes)
{
    int64_t size = s->size, col_ns = s->col_ns, gone = s->last_col - size;
    for (int64_t i = 0; i < n_waits; i++) {          /* wake-ups per column */
        int64_t col = wait_end[i] / col_ns;
        if (col > gone)
            s->switches[col % size]++;
    }
    for (int64_t i = 0; i < n_passes; i++) {         /* longest ready queue */
        int64_t col = pass_ts[i] / col_ns;
        if (col > gone && pass_ready[i] > s->ready[col % size])
            s->ready[col % size] = (int32_t)pass_ready[i];
    }
    for (int64_t i = 0; i < n_runs; i++)
        add_ns(s, run_lane[i], run_start[i], run_end[i]);
    for (int64_t i = 0; i < n_waits; i++) {
        int64_t start = wait_start[i], end = wait_end[i], lane = wait_lane[i];
        if (start <= 0 || end <= start || (end - 1) / col_ns <= start / col_ns)
            continue;
        set_code(s, s->park, lane, start, end, wait_code(s, wait_why[i], wait_detail[i]));
        if (wait_why[i] == LK_WHY_TIMER && wait_detail[i] < 0) {
            int64_t due = start - wait_detail[i];
            if (end - due >= s->late_ns) {
                set_code(s, s->late, lane, due > start ? due : start, end, 1);
                if (due >= start && due / col_ns > gone)
                    s->late[lane * size + (due / col_ns) % size] = 2;
            }
        }
    }
}
