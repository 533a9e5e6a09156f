/* lk_timer_heap.c -- timer records and a stable binary min-heap.
 *
 * Why a heap: the loop asks two questions each iteration, "when is the next
 * deadline?" (O(1): heap[0]) and "which timers are due?" (O(log n) each).
 * Cancelling is O(log n) too, because each record remembers its heap index.
 * (redis keeps an unsorted list and scans it: O(n) per iteration.)
 *
 * Why (deadline, seq) and not just deadline: a heap is not a stable sort.
 * Two timers started for the same instant would fire in an order that
 * depends on the heap's shape; the start counter seq makes the order
 * "first started, first fired", which keeps traced runs deterministic.
 *
 * Memory: timers[] and heap[] grow together (the heap can never hold more
 * ids than there are records), so only lk__timers_start allocates;
 * cancel, collect and release never fail.
 */
#include <errno.h>
#include <stdlib.h>

#include "lk_loop_internal.h"

#define LK__NONE (-1)

void lk__timers_init(lk__timer_heap *h)
{
    *h = (lk__timer_heap){ .free_head = LK__NONE, .quarantine_head = LK__NONE };
}

void lk__timers_destroy(lk__timer_heap *h)
{
    free(h->timers);
    free(h->heap);
    lk__timers_init(h);
}

/* ------------------------------------------------------------ heap order */

static bool fires_before(const lk__timer_heap *h, int32_t a, int32_t b)
{
    const lk__timer *ta = &h->timers[a], *tb = &h->timers[b];
    if (ta->deadline_ns != tb->deadline_ns)
        return ta->deadline_ns < tb->deadline_ns;
    return ta->seq < tb->seq;
}

static void place(lk__timer_heap *h, int32_t pos, int32_t id)
{
    h->heap[pos] = id;
    h->timers[id].heap_index = pos;
}

static void sift_up(lk__timer_heap *h, int32_t pos)
{
    int32_t id = h->heap[pos];
    while (pos > 0) {
        int32_t parent = (pos - 1) / 2;
        if (!fires_before(h, id, h->heap[parent]))
            break;
        place(h, pos, h->heap[parent]);
        pos = parent;
    }
    place(h, pos, id);
}

static void sift_down(lk__timer_heap *h, int32_t pos)
{
    int32_t id = h->heap[pos];
    for (;;) {
        int32_t child = 2 * pos + 1;
        if (child >= h->heap_len)
            break;
        if (child + 1 < h->heap_len && fires_before(h, h->heap[child + 1], h->heap[child]))
            child++;
        if (!fires_before(h, h->heap[child], id))
            break;
        place(h, pos, h->heap[child]);
        pos = child;
    }
    place(h, pos, id);
}

/* Take heap[pos] out: move the last element into the hole, then let it
 * sink or rise -- it may belong either side of its new neighbours. */
static void heap_remove(lk__timer_heap *h, int32_t pos)
{
    int32_t removed = h->heap[pos];
    int32_t last = h->heap[--h->heap_len];
    h->timers[removed].heap_index = LK__NONE;
    if (pos == h->heap_len)
        return;
    place(h, pos, last);
    sift_down(h, pos);
    sift_up(h, h->timers[last].heap_index);
}

/* --------------------------------------------------------------- records */

static int grow(lk__timer_heap *h)
{
    if (h->capacity >= INT32_MAX / 2)
        return -ENOMEM;
    int32_t cap = h->capacity ? h->capacity * 2 : 16;
    lk__timer *timers = realloc(h->timers, (size_t)cap * sizeof *timers);
    if (timers == NULL)
        return -ENOMEM;
    h->timers = timers;   /* keep the new block even if the next realloc fails */
    int32_t *heap = realloc(h->heap, (size_t)cap * sizeof *heap);
    if (heap == NULL)
        return -ENOMEM;
    h->heap = heap;
    h->capacity = cap;
    return 0;
}

/* A free id: recycle the most recently freed one, else take a virgin slot. */
static int32_t take_id(lk__timer_heap *h)
{
    if (h->free_head != LK__NONE) {
        int32_t id = h->free_head;
        h->free_head = h->timers[id].next;
        return id;
    }
    if (h->used == h->capacity && grow(h) < 0)
        return -ENOMEM;
    return h->used++;
}

static void push_list(lk__timer_heap *h, int32_t *head, int32_t id, lk__timer_state state)
{
    h->timers[id].state = state;
    h->timers[id].next = *head;
    *head = id;
}

int32_t lk__timers_start(lk__timer_heap *h, int64_t deadline_ns)
{
    int32_t id = take_id(h);
    if (id < 0)
        return id;
    h->timers[id] = (lk__timer){
        .deadline_ns = deadline_ns,
        .seq = h->next_seq++,
        .next = LK__NONE,
        .state = LK__TIMER_PENDING,
    };
    h->heap[h->heap_len] = id;
    h->heap_len++;
    sift_up(h, h->heap_len - 1);
    return id;
}

/* Only a PENDING timer can be cancelled.  Anything else -- out of range,
 * never used, already free, or fired and quarantined -- is "not pending":
 * Python may race a cancel against the event that reports the firing, and
 * that must be harmless. */
int lk__timers_cancel(lk__timer_heap *h, int32_t id)
{
    if (id < 0 || id >= h->used || h->timers[id].state != LK__TIMER_PENDING)
        return 0;
    heap_remove(h, h->timers[id].heap_index);
    push_list(h, &h->free_head, id, LK__TIMER_FREE);
    return 1;
}

bool lk__timers_earliest(const lk__timer_heap *h, int64_t *deadline_ns)
{
    if (h->heap_len == 0)
        return false;
    *deadline_ns = h->timers[h->heap[0]].deadline_ns;
    return true;
}

/* Pop the timers due at now_ns, earliest first, at most `room` of them; the
 * rest stay in the heap for the next call.
 *
 * QUARANTINE.  A fired id is not freed here but parked on the quarantine
 * list until lk__timers_release_quarantine, which lk_poll calls first thing
 * on its NEXT call.  Why: the caller dispatches the events we return one by
 * one, and a callback may start a new timer.  If that reused a fired id,
 * a later entry of the same array -- still naming the old timer -- would be
 * dispatched to the new one.  With quarantine, every id in the array names
 * exactly the timer that fired, until the caller polls again. */
int lk__timers_collect_expired(lk__timer_heap *h, int64_t now_ns, lk_event *out, int room)
{
    int n = 0;
    while (n < room && h->heap_len > 0) {
        int32_t id = h->heap[0];
        if (h->timers[id].deadline_ns > now_ns)
            break;
        heap_remove(h, 0);
        push_list(h, &h->quarantine_head, id, LK__TIMER_QUARANTINED);
        out[n++] = (lk_event){ .id = id, .events = LK_TIMER };
    }
    return n;
}

void lk__timers_release_quarantine(lk__timer_heap *h)
{
    while (h->quarantine_head != LK__NONE) {
        int32_t id = h->quarantine_head;
        h->quarantine_head = h->timers[id].next;
        push_list(h, &h->free_head, id, LK__TIMER_FREE);
    }
}
