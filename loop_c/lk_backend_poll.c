/* lk_backend_poll.c -- the portable poller, poll(2).
 *
 * The interest list lives in user space: an array of struct pollfd handed
 * to the kernel on every wait.  That makes a wait O(watched fds), against
 * epoll's O(ready fds) -- fine for a teaching loop on macOS, and simple.
 *
 * Two arrays:
 *   fds[0 .. n)     the pollfd array, in no particular order
 *   slot_of[fd]     fd's index in fds[], or -1; so add, change and remove
 *                   are O(1) (remove moves the last entry into the hole)
 *
 * Fairness: when more fds are ready than the caller has room for, we must
 * not always report the ones at the front of the array.  The scan starts
 * where the previous one stopped (`cursor`) and wraps around.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "lk_loop_internal.h"

typedef struct {
    struct pollfd *fds;
    int            n, cap;
    int           *slot_of;     /* fd -> index in fds[], -1 if absent */
    int            slot_cap;
    int            cursor;      /* where the next scan of revents starts */
} lk__poll;

static int poll_create_backend(void **state)
{
    lk__poll *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    *state = p;
    return 0;
}

static void poll_destroy_backend(void *state)
{
    lk__poll *p = state;
    free(p->fds);
    free(p->slot_of);
    free(p);
}

static int grow_for(lk__poll *p, int fd)
{
    if (fd >= p->slot_cap) {
        int cap = p->slot_cap ? p->slot_cap : 64;
        while (cap <= fd)
            cap = cap > INT32_MAX / 2 ? fd + 1 : cap * 2;
        int *s = realloc(p->slot_of, (size_t)cap * sizeof *s);
        if (s == NULL)
            return -ENOMEM;
        memset(s + p->slot_cap, 0xff, (size_t)(cap - p->slot_cap) * sizeof *s);  /* -1 */
        p->slot_of = s;
        p->slot_cap = cap;
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        struct pollfd *f = realloc(p->fds, (size_t)cap * sizeof *f);
        if (f == NULL)
            return -ENOMEM;
        p->fds = f;
        p->cap = cap;
    }
    return 0;
}

static void remove_slot(lk__poll *p, int fd)
{
    int i = p->slot_of[fd];
    p->fds[i] = p->fds[--p->n];
    p->slot_of[p->fds[i].fd] = i;   /* harmless when i was the last */
    p->slot_of[fd] = -1;
}

static int poll_set_interest(void *state, int fd, uint32_t old_mask, uint32_t new_mask)
{
    lk__poll *p = state;
    (void)old_mask;   /* slot_of is our own, exact record */
    short events = (short)(((new_mask & LK_READ) ? POLLIN : 0) |
                           ((new_mask & LK_WRITE) ? POLLOUT : 0));
    bool present = fd < p->slot_cap && p->slot_of[fd] >= 0;

    if (new_mask == 0) {
        if (present)
            remove_slot(p, fd);
        return 0;
    }
    if (present) {
        p->fds[p->slot_of[fd]].events = events;
        return 0;
    }
    /* poll(2) accepts any fd number and answers POLLNVAL later; check now so
     * a bad fd fails here with -EBADF, as it does with epoll. */
    if (fcntl(fd, F_GETFD) < 0)
        return -errno;
    int rc = grow_for(p, fd);
    if (rc < 0)
        return rc;
    p->slot_of[fd] = p->n;
    p->fds[p->n++] = (struct pollfd){ .fd = fd, .events = events };
    return 0;
}

static uint32_t to_lk_events(short r)
{
    uint32_t events = 0;
    if (r & POLLIN)
        events |= LK_READ;
    if (r & POLLOUT)
        events |= LK_WRITE;
    if (r & (POLLHUP | POLLERR))
        events |= LK_ERROR;
    if (r & POLLNVAL)
        events |= LK_ERROR | LK__GONE;   /* closed behind our back */
    return events;
}

static int poll_poll(void *state, int timeout_ms, lk_event *out, int max_events)
{
    lk__poll *p = state;
    int ready = poll(p->fds, (nfds_t)p->n, timeout_ms);
    if (ready < 0)
        return -errno;

    int written = 0;
    int start = p->cursor < p->n ? p->cursor : 0;
    for (int k = 0; k < p->n && written < ready && written < max_events; k++) {
        int i = (start + k) % p->n;
        if (p->fds[i].revents == 0)
            continue;
        out[written++] = (lk_event){ .id = p->fds[i].fd,
                                     .events = to_lk_events(p->fds[i].revents) };
        p->cursor = i + 1;
    }
    return written;
}

static int poll_backend_fd(void *state)
{
    (void)state;
    return -1;   /* nothing another loop could watch */
}

const lk__backend lk__backend_poll = {
    .name = "poll",
    .create = poll_create_backend,
    .destroy = poll_destroy_backend,
    .set_interest = poll_set_interest,
    .poll = poll_poll,
    .backend_fd = poll_backend_fd,
};
