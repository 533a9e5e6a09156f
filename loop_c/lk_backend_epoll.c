/* lk_backend_epoll.c -- the Linux poller.
 *
 * epoll keeps the interest list in the kernel, so a wait costs O(ready fds)
 * rather than O(watched fds) as with poll(2).  The price is a syscall per
 * interest change (epoll_ctl); the loop only calls set_interest when a mask
 * really changes, and level-triggered mode means we never have to re-arm.
 *
 * A known epoll quirk worth knowing: the kernel registers the open file, not
 * the fd number.  If the caller closes an fd while a dup() of it stays open,
 * the registration lives on and events keep arriving under the old number.
 * Callers must stop watching (lk_io_set(fd, 0)) BEFORE closing.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "lk_loop_internal.h"

typedef struct {
    int                 epfd;
    struct epoll_event *ready;      /* epoll_wait's output buffer */
    int                 ready_cap;
} lk__epoll;

static int epoll_create_backend(void **state)
{
    lk__epoll *ep = calloc(1, sizeof *ep);
    if (ep == NULL)
        return -ENOMEM;
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ep->epfd < 0) {
        int err = errno;
        free(ep);
        return -err;
    }
    *state = ep;
    return 0;
}

/* Just close: epoll_ctl(DEL) here would, after fork, remove the fds from
 * the epoll set the parent still shares with us. */
static void epoll_destroy_backend(void *state)
{
    lk__epoll *ep = state;
    close(ep->epfd);
    free(ep->ready);
    free(ep);
}

static int epoll_set_interest(void *state, int fd, uint32_t old_mask, uint32_t new_mask)
{
    lk__epoll *ep = state;
    struct epoll_event ev = { .events = 0, .data.fd = fd };
    if (new_mask & LK_READ)
        ev.events |= EPOLLIN;
    if (new_mask & LK_WRITE)
        ev.events |= EPOLLOUT;

    if (new_mask == 0) {
        if (epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, &ev) == 0)
            return 0;
        /* EBADF: fd already closed.  ENOENT: closed (the kernel dropped the
         * registration) and maybe reused.  Either way it is not watched,
         * which is what the caller asked for. */
        return (errno == EBADF || errno == ENOENT) ? 0 : -errno;
    }

    /* The kernel's view may differ from ours when an fd was closed and its
     * number reused behind the loop's back, so trust the errno over the
     * table: MOD of an unknown fd becomes ADD, ADD of a known one MOD. */
    int op = old_mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(ep->epfd, op, fd, &ev) == 0)
        return 0;
    if (op == EPOLL_CTL_MOD && errno == ENOENT)
        op = EPOLL_CTL_ADD;
    else if (op == EPOLL_CTL_ADD && errno == EEXIST)
        op = EPOLL_CTL_MOD;
    else
        return -errno;   /* EPERM for regular files, EBADF, ENOMEM, ... */
    return epoll_ctl(ep->epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

static uint32_t to_lk_events(uint32_t e)
{
    uint32_t events = 0;
    if (e & EPOLLIN)
        events |= LK_READ;
    if (e & EPOLLOUT)
        events |= LK_WRITE;
    if (e & (EPOLLHUP | EPOLLERR))
        events |= LK_ERROR;
    return events;
}

/* The buffer follows the caller's max_events.  If it cannot grow we wait
 * for fewer events: level-triggered, the rest are reported next time. */
static int reserve_ready(lk__epoll *ep, int max_events)
{
    if (max_events > ep->ready_cap) {
        struct epoll_event *r = realloc(ep->ready, (size_t)max_events * sizeof *r);
        if (r != NULL) {
            ep->ready = r;
            ep->ready_cap = max_events;
        }
    }
    return max_events < ep->ready_cap ? max_events : ep->ready_cap;
}

static int epoll_poll(void *state, int timeout_ms, lk_event *out, int max_events)
{
    lk__epoll *ep = state;
    int room = reserve_ready(ep, max_events);
    if (room == 0)
        return -ENOMEM;
    int n = epoll_wait(ep->epfd, ep->ready, room, timeout_ms);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++)
        out[i] = (lk_event){ .id = ep->ready[i].data.fd,
                             .events = to_lk_events(ep->ready[i].events) };
    return n;
}

static int epoll_backend_fd(void *state)
{
    return ((lk__epoll *)state)->epfd;
}

const lk__backend lk__backend_epoll = {
    .name = "epoll",
    .create = epoll_create_backend,
    .destroy = epoll_destroy_backend,
    .set_interest = epoll_set_interest,
    .poll = epoll_poll,
    .backend_fd = epoll_backend_fd,
};
