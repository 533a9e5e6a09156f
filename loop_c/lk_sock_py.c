/* lk_sock_py.c -- recv and send on a socket that never blocks, keeping
 * the GIL: the syscalls under labkit.socket's recv/sendall.
 *
 * Why.  labkit's sockets are non-blocking underneath: a recv or a send
 * either does its work at once or fails with EAGAIN, and the greenlet
 * then parks in the hub (labkit/socket.py).  The stdlib's socket methods
 * release the GIL around each syscall (needed for a blocking socket, not
 * here) and parse their arguments with PyArg_ParseTuple: in an echo
 * server that was ~1,300 of ~16,000 instructions per message, the GIL's
 * mutex, condition variable and bookkeeping twice, and the argument
 * conversion twice.  Keeping the GIL through a syscall that cannot wait
 * is what lk_poll_py.c's zero-timeout poll does, for the same reasons.
 *
 * Never blocking is made sure here, not assumed: both calls pass
 * MSG_DONTWAIT, so a socket whose fd someone set to blocking (os.set_blocking,
 * a library given the fd) answers EAGAIN instead of stopping the process
 * with the GIL held.
 *
 * recv reads into one static 64 KiB buffer and copies out what came: a
 * server's recv(65536) that gets 1 KiB costs a 1 KiB allocation, not a
 * 64 KiB one shrunk afterwards (the stdlib's way, and still ours for a
 * larger bufsize).  One buffer is enough: it is used only with the GIL
 * held, which this file never releases.
 *
 * The results are the stdlib's: recv returns bytes (b"" at the end of the
 * stream), send the number of bytes sent; an error raises OSError from
 * errno (BlockingIOError for EAGAIN), EINTR runs the signal handlers and
 * retries, as the stdlib does (PEP 475).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "lk_sock_py.h"

#define LK__SCRATCH 65536
static char scratch[LK__SCRATCH];

/* recv(2) until it is not interrupted: the byte count (at most len: with
 * MSG_TRUNC the kernel may answer more), or -1 with an exception set. */
static ssize_t recv_into(int fd, char *buf, Py_ssize_t len, int flags)
{
    for (;;) {
        ssize_t n = recv(fd, buf, (size_t)len, flags | MSG_DONTWAIT);
        if (n >= 0)
            return n > len ? len : n;
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
}

/* The arguments are read as the stdlib's socket methods read them (their
 * PyArg_ParseTuple formats), with the same exceptions: an int or any
 * object with __index__ (a numpy integer), else TypeError ("'str' object
 * cannot be interpreted as an integer"); a value out of range is an
 * OverflowError, never truncated -- flags 2**32 | MSG_PEEK must not peek.
 * An exact int takes the short way. */

/* A Py_ssize_t, as the "n" format (recv's bufsize). */
static int ssize_arg(PyObject *arg, Py_ssize_t *out)
{
    if (PyLong_CheckExact(arg)) {
        *out = PyLong_AsSsize_t(arg);
    } else {
        PyObject *index = PyNumber_Index(arg);
        if (index == NULL)
            return -1;
        *out = PyLong_AsSsize_t(index);
        Py_DECREF(index);
    }
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* A C int, as the "i" format (flags; the fd too, which labkit passes). */
static int cint_arg(PyObject *arg, int *out)
{
    long v = PyLong_AsLong(arg);   /* (calls __index__ for a non-int) */
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError, v > INT_MAX
                        ? "signed integer is greater than maximum"
                        : "signed integer is less than minimum");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* recv(fd, bufsize, flags) -> bytes */
PyObject *lk__sock_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "recv() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd, flags;
    Py_ssize_t bufsize;
    if (cint_arg(args[0], &fd) < 0 || ssize_arg(args[1], &bufsize) < 0
            || cint_arg(args[2], &flags) < 0)
        return NULL;
    if (bufsize < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    if (bufsize == 0)   /* nothing to read: no syscall (as the stdlib) */
        return PyBytes_FromStringAndSize(NULL, 0);
    if (bufsize <= LK__SCRATCH) {
        ssize_t n = recv_into(fd, scratch, bufsize, flags);
        return n < 0 ? NULL : PyBytes_FromStringAndSize(scratch, n);
    }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, bufsize);
    if (buf == NULL)
        return NULL;
    ssize_t n = recv_into(fd, PyBytes_AS_STRING(buf), bufsize, flags);
    if (n < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    if (n != bufsize && _PyBytes_Resize(&buf, n) < 0)
        return NULL;
    return buf;
}

/* send(fd, data, flags) -> int */
PyObject *lk__sock_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "send() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd, flags;
    if (cint_arg(args[0], &fd) < 0 || cint_arg(args[2], &flags) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t n;
    for (;;) {
        n = send(fd, view.buf, (size_t)view.len, flags | MSG_DONTWAIT);
        if (n >= 0)
            break;
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}
