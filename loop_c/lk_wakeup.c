/* lk_wakeup.c -- the fd that lets another thread interrupt the poller.
 *
 * The loop's thread sleeps in epoll_wait/poll; the only way for another
 * thread to end that sleep early is to make some watched fd readable.  On
 * Linux that fd is an eventfd (one fd, an 8-byte counter); elsewhere it is
 * the read end of a pipe.  Both ends are nonblocking: a writer must never
 * block (a full pipe already means "a wake is pending"), and draining reads
 * until EAGAIN.
 *
 * This file only moves bytes.  The "wake pending" flag that keeps
 * concurrent lk_wake calls from writing more than once lives in lk_loop.c,
 * next to the code that drains.
 *
 * Define LK_WAKEUP_PIPE to use the pipe on Linux too (to test that path:
 * LABKIT_CFLAGS=-DLK_WAKEUP_PIPE).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#if defined(__linux__) && !defined(LK_WAKEUP_PIPE)
#define LK__USE_EVENTFD 1
#include <sys/eventfd.h>
#endif

#include "lk_loop_internal.h"

#ifdef LK__USE_EVENTFD

int lk__wakeup_open(lk__wakeup *w)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    w->read_fd = w->write_fd = fd;
    return 0;
}

#else

static int set_cloexec_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

int lk__wakeup_open(lk__wakeup *w)
{
    int fds[2];
    /* pipe() then fcntl() leaves a window in which a concurrent fork+exec
     * in another thread inherits the fds; acceptable where pipe2 is missing. */
    if (pipe(fds) < 0)
        return -errno;
    int rc = set_cloexec_nonblock(fds[0]);
    if (rc == 0)
        rc = set_cloexec_nonblock(fds[1]);
    if (rc < 0) {
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    w->read_fd = fds[0];
    w->write_fd = fds[1];
    return 0;
}

#endif

void lk__wakeup_close(lk__wakeup *w)
{
    if (w->write_fd >= 0 && w->write_fd != w->read_fd)
        close(w->write_fd);
    if (w->read_fd >= 0)
        close(w->read_fd);
    w->read_fd = w->write_fd = -1;
}

void lk__wakeup_signal(lk__wakeup *w)
{
    uint64_t one = 1;   /* an eventfd takes exactly 8 bytes; a pipe any */
    ssize_t r;
    do
        r = write(w->write_fd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter or pipe is full, so the fd is readable already,
     * which is all a wake needs.  Nothing else can fail on a valid fd. */
}

void lk__wakeup_drain(lk__wakeup *w)
{
    uint64_t buf[16];
    ssize_t r;
    /* An eventfd empties in one read; a pipe may hold several writes. */
    do
        r = read(w->read_fd, buf, sizeof buf);
    while (r > 0 || (r < 0 && errno == EINTR));
}
