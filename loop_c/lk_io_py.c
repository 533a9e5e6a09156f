/* lk_io_py.c -- the loop's io watchers as a CPython object: who waits on
 * which fd, and the poll that wakes them, without a Python frame.
 *
 * Why.  A greenlet that reads a socket in a loop parks on its fd once per
 * message.  Written in Python (labkit/_loop.py before) that was a
 * Loop.io_start frame with a cffi lk_io_get (a GIL round trip) per wait,
 * and a Loop._dispatch_io frame inside Loop.poll's Python loop per wake-up:
 * about a sixth of an echo server's instructions per message.  Here a wait
 * is one builtin call and a wake-up a few C stores and the callback's call.
 *
 * What lives where.  The kernel's interest set and the loop's memory of
 * it (fd -> mask) stay in the C loop (lk_loop.c): this file calls
 * lk_io_set/lk_io_get/lk_poll through the addresses cffi gives, as
 * lk_poll_py.c and lk_timers_py.c do, so there is one interest table.  What
 * is kept here is the Python half: fd -> at most one reader and one writer
 * callback (owned references), in an array indexed by fd.  It grows only
 * to fds the kernel accepted (lk_io_set validates the fd before the slot is
 * made), so a bogus fd number never allocates.
 *
 * Lazy removal.  A wait adds its direction to the fd's interest if it is
 * not there; a wake-up does not remove it, on the bet that the greenlet
 * waits again soon (a socket's reader: no epoll_ctl per message).  A
 * direction that fires with nobody waiting is dropped from the interest
 * then, in poll().  cancel(fd, event, keep_interest=False) drops it at
 * once: only an owner that calls forget(fd) before closing the fd may keep
 * it (see Loop.io_cancel in labkit/_loop.py).
 *
 * poll(timeout, on_error).  lk_poll (releasing the GIL if it may wait, as
 * cffi did; keeping it for timeout 0, see lk_poll_py.c), then each fired
 * event to its one callback, in the order the C loop reported them: an io
 * event to its reader and/or writer, each taken out of the table before
 * it is called (a callback is called once per start), a timer's id to the
 * timer table's take(id) (lk_timers_py.c), whose (callback, args) is
 * called.  A callback that raises is reported with on_error(callback) while
 * the exception is sys.exc_info(), and dispatching goes on -- unless
 * on_error raises too (the hub being killed), which ends poll() with it.
 * The callbacks are mostly greenlet switches: the hub's C stack, this
 * function included, is copied away while the woken greenlet runs, and a
 * callback may start, cancel or forget watchers, or close the loop, before
 * control comes back.  So nothing here holds a pointer into the array
 * across a call; every slot is read again by fd after it.  A poll() from
 * inside one of its own callbacks would overwrite the events still to be
 * dispatched: it raises RuntimeError.
 *
 * This departs from DESIGN.md's "The C code never calls into Python" the
 * way lk_poll_py.c's Passes does: the cffi loop (lk_loop.c, lk_poll) still
 * never does; this is CPython extension code beside it, and no exception
 * crosses a C frame that is not CPython's (a failure is a NULL return).
 *
 * Everything runs on the loop's thread with the GIL held (labkit refuses
 * free-threaded CPython).  The table holds the lk_loop pointer as a
 * borrowed address: Loop.close() calls close() before it frees the loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lk_loop.h"
#include "lk_io_py.h"

typedef int (*lk_poll_fn)(lk_loop *loop, int64_t timeout_ns, lk_event *out, int max_events);
typedef int (*lk_io_set_fn)(lk_loop *loop, int fd, uint32_t mask);
typedef uint32_t (*lk_io_get_fn)(lk_loop *loop, int fd);

#define LK__MAX_FD 2147483647L
#define LK__NEVER_NS ((int64_t)1 << 62)
#define LK__IO_BITS (LK_READ | LK_WRITE | LK_ERROR)

typedef struct {
    PyObject *reader;   /* owned, or NULL */
    PyObject *writer;
} fd_watch;

typedef struct {
    PyObject_HEAD
    lk_poll_fn poll;
    lk_io_set_fn set;
    lk_io_get_fn get;
    lk_loop *loop;            /* NULL once closed */
    lk_event *events;         /* owned: lk_poll writes here */
    int max_events;
    int polling;              /* poll() is dispatching (see above) */
    fd_watch *watches;        /* fd -> its waiters */
    Py_ssize_t capacity;
    Py_ssize_t waiters;       /* non-NULL callbacks in watches */
    PyObject *take_timer;     /* the timer table's take */
    PyObject *busy_error;     /* ConcurrentObjectUseError */
    PyObject *event_args[LK__IO_BITS + 1];   /* (events,) for each io bit set */
} IoTable;

static PyTypeObject IoTable_Type;

/* ------------------------------------------------------------ reporting */

__attribute__((noinline)) int lk__report_failure(PyObject *on_error, PyObject *entry)
{
    PyObject *type, *value, *tb, *otype, *ovalue, *otb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyErr_GetExcInfo(&otype, &ovalue, &otb);
    PyErr_SetExcInfo(type, value, tb);    /* steals */
    PyObject *r = PyObject_CallOneArg(on_error, entry ? entry : Py_None);
    PyErr_SetExcInfo(otype, ovalue, otb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------ arguments */

/* fd: an exact int (a bool or a float is a mistake) in [0, 2**31 - 1].
 * 0 or -1 with TypeError/ValueError. */
static int fd_arg(PyObject *arg, int *fd)
{
    if (!PyLong_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "fd must be an int, not %.100s", Py_TYPE(arg)->tp_name);
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(arg, &overflow);
    if (overflow || v < 0 || v > LK__MAX_FD) {
        PyErr_Format(PyExc_ValueError, "fd must be between 0 and %ld, not %R", LK__MAX_FD, arg);
        return -1;
    }
    *fd = (int)v;
    return 0;
}

/* An fd for a look-up (cancel, waiting, forget): an int; one no table can
 * hold (negative, huge) is reported as -1: nothing waits on it. */
static int lookup_fd_arg(PyObject *arg, int *fd)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "fd must be an int, not %.100s", Py_TYPE(arg)->tp_name);
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(arg, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *fd = (overflow || v < 0 || v > LK__MAX_FD) ? -1 : (int)v;
    return 0;
}

/* event: READ or WRITE.  The bit, or 0 with ValueError. */
static uint32_t event_arg(PyObject *arg)
{
    long v = PyLong_Check(arg) ? PyLong_AsLong(arg) : -1;
    if (v == LK_READ || v == LK_WRITE)
        return (uint32_t)v;
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "event must be READ or WRITE, not %R", arg);
    }
    return 0;
}

static int set_oserror(int rc, const char *what, int fd)
{
    PyObject *msg = PyUnicode_FromFormat("%s fd %d: %s", what, fd, strerror(-rc));
    if (msg != NULL) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO", -rc, msg);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    return -1;
}

static int grow(IoTable *self, int fd)
{
    Py_ssize_t capacity = self->capacity ? self->capacity : 64;
    while (capacity <= fd)
        capacity *= 2;
    fd_watch *w = PyMem_Realloc(self->watches, capacity * sizeof *w);
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(w + self->capacity, 0, (capacity - self->capacity) * sizeof *w);
    self->watches = w;
    self->capacity = capacity;
    return 0;
}

static PyObject **slot(IoTable *self, int fd, uint32_t event)
{
    fd_watch *w = &self->watches[fd];
    return event == LK_READ ? &w->reader : &w->writer;
}

static int closed_error(void)
{
    PyErr_SetString(PyExc_RuntimeError, "the loop is closed");
    return -1;
}

/* ------------------------------------------------------------- methods */

/* start(fd, event, callback): callback(events) once, when fd is ready for
 * event.  A second callback for the same (fd, event) raises the busy error
 * (ConcurrentObjectUseError) and changes nothing. */
static int start_watch(IoTable *self, PyObject *fd_obj, PyObject *event_obj,
                       PyObject *callback, int *fd_out, uint32_t *event_out)
{
    uint32_t event = event_arg(event_obj);
    if (event == 0)
        return -1;
    if (self->loop == NULL)
        return closed_error();
    int fd;
    if (fd_arg(fd_obj, &fd) < 0)
        return -1;
    if (fd < self->capacity && *slot(self, fd, event) != NULL) {
        PyErr_Format(self->busy_error, "fd %d already has a greenlet waiting to %s",
                     fd, event == LK_READ ? "read" : "write");
        return -1;
    }
    /* Interest first: the kernel validates the fd before a slot is made. */
    uint32_t mask = self->get(self->loop, fd);
    if (!(mask & event)) {
        int rc = self->set(self->loop, fd, mask | event);
        if (rc < 0)
            return set_oserror(rc, "watching", fd);
    }
    if (fd >= self->capacity && grow(self, fd) < 0)
        return -1;    /* (an extra interest bit is harmless: lazy removal) */
    *slot(self, fd, event) = Py_NewRef(callback);
    self->waiters++;
    *fd_out = fd;
    *event_out = event;
    return 0;
}

static PyObject *IoTable_start(IoTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "io_start() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd;
    uint32_t event;
    if (start_watch(self, args[0], args[1], args[2], &fd, &event) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------- park: a socket's wait
 *
 * park(hub, fd, event, waits, in_hub) is labkit/_park.py's wait_io for the
 * one case a socket's recv/send hits per message -- no timeout, the interest
 * kept between waits (see keep_interest above) -- as one builtin call:
 *   - the current greenlet is the hub: raise in_hub() (nothing registered);
 *   - register current.switch for (fd, event) (as start(); its errors too)
 *     and enter waits[fd] = current (_park's record of who is parked where);
 *   - switch to the hub;
 *   - woken with an int (the fired events, from poll()): del waits[fd] and
 *     return it -- the dispatch took the callback;
 *   - woken otherwise (an exception thrown in: a timeout, a kill, EBADF; or
 *     another value switched in): take back -- del waits[fd], and our
 *     callback out of the table if it is still there -- and raise it or
 *     return it; _park.py says what a value means;
 *   - while the tracer records, write the woken greenlet's resume record
 *     (why: WAITER if the dispatch woke it, THROW otherwise; see
 *     set_resumer below).
 * Both dels remove waits[fd] only while it is current (never another
 * greenlet's, which may have parked on the fd once it was forgotten), as
 * the take-back removes only our own callback.
 * The greenlet's C stack is copied away while it is parked, with this
 * function on it: its address-taken locals live in out-of-line helpers
 * (see the comment on Passes in lk_poll_py.c). */

#define LK_GREENLET_GETCURRENT_NUM 4
#define LK_GREENLET_SWITCH_NUM 6
typedef PyObject *(*lk_greenlet_getcurrent_fn)(void);
typedef PyObject *(*lk_greenlet_switch_fn)(PyObject *, PyObject *, PyObject *);
static lk_greenlet_getcurrent_fn greenlet_getcurrent;
static lk_greenlet_switch_fn greenlet_switch;
static PyObject *str_switch;

/* Register cb and waits[fd] = current: (fd << 2 | event), or -1. */
__attribute__((noinline)) static int64_t register_wait(IoTable *self, PyObject *const *args,
                                                       PyObject *cb, PyObject *current)
{
    int fd;
    uint32_t event;
    if (start_watch(self, args[1], args[2], cb, &fd, &event) < 0)
        return -1;
    if (PyDict_SetItem(args[3], args[1], current) < 0) {
        PyObject **s = slot(self, fd, event);
        Py_CLEAR(*s);
        self->waiters--;
        return -1;
    }
    return ((int64_t)fd << 2) | event;
}

/* del waits[fd] if it is still current's entry: once the fd was forgotten
 * (forget_fd's io_forget, before _tell_closed runs), another greenlet may
 * have parked on it and entered itself under the same key -- that entry is
 * its own, to leave alone, as the callback below.  Never fails. */
static void forget_own(PyObject *waits, PyObject *fd_obj, PyObject *current)
{
    PyObject *who = PyDict_GetItemWithError(waits, fd_obj);   /* borrowed */
    if (who == current) {
        if (PyDict_DelItem(waits, fd_obj) < 0)
            PyErr_Clear();
    } else if (who == NULL) {
        PyErr_Clear();   /* (an int key: no lookup error to report) */
    }
}

/* The take-back after a wake that was not the dispatch's; keeps the
 * pending exception, if any. */
__attribute__((noinline)) static void take_back(IoTable *self, int64_t where, PyObject *fd_obj,
                                                PyObject *waits, PyObject *cb, PyObject *current)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    forget_own(waits, fd_obj, current);
    int fd = (int)(where >> 2);
    if (fd < self->capacity) {
        PyObject **s = slot(self, fd, (uint32_t)(where & 3));
        if (*s == cb) {
            *s = NULL;
            self->waiters--;
            Py_DECREF(cb);   /* the table's reference */
        }
    }
    PyErr_Restore(type, value, tb);
}

/* The tracer's resume record of a socket's fd wait.  While a recorder
 * runs (tracing/recorder.py), this is its resume_fd(g, why, fd, event)
 * (labkit._lk_trace_py, bound to its ring); NULL otherwise.  park() calls
 * it itself, in the woken greenlet, right after the switch back and the
 * clean-up -- where labkit._park.wait_io called it from Python before:
 * the same record, at the same point, without a bytecode call, a global
 * lookup and a getcurrent() per wake-up (~300 instructions; the resume
 * record is the tracer's most frequent).  Process-wide, as the Python
 * hooks (labkit._park._resume_fd) it stands beside: set_resumer(). */
static PyObject *io_resumer;
static PyObject *why_waiter, *why_throw;   /* LK_WHY_WAITER, LK_WHY_THROW */

PyObject *lk__io_set_resumer(PyObject *module, PyObject *resumer)
{
    (void)module;
    if (resumer != Py_None && !PyCallable_Check(resumer)) {
        PyErr_Format(PyExc_TypeError, "set_resumer() takes a callable or None, not %.100s",
                     Py_TYPE(resumer)->tp_name);
        return NULL;
    }
    PyObject *old = io_resumer;
    io_resumer = resumer == Py_None ? NULL : Py_NewRef(resumer);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* resumer(current, why, fd, event): why is WAITER when the dispatch woke
 * us (fired is its int), THROW otherwise.  With an exception pending
 * (fired NULL) it stays the one raised: the record is best effort then,
 * as the Python hook inside `except` was not.  0, or -1 with the
 * resumer's exception set (fired was a value). */
__attribute__((noinline)) static int note_resume(PyObject *current, PyObject *fired,
                                                 PyObject *fd_obj, PyObject *event_obj)
{
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    if (fired == NULL)
        PyErr_Fetch(&type, &value, &tb);
    PyObject *resumer = Py_NewRef(io_resumer);
    PyObject *argv[4] = {current, fired != NULL && PyLong_CheckExact(fired) ? why_waiter
                                                                             : why_throw,
                         fd_obj, event_obj};
    PyObject *done = PyObject_Vectorcall(resumer, argv, 4, NULL);
    Py_DECREF(resumer);
    if (fired == NULL) {
        if (done == NULL)
            PyErr_Clear();
        Py_XDECREF(done);
        PyErr_Restore(type, value, tb);
        return 0;
    }
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

__attribute__((noinline)) static PyObject *refuse_in_hub(PyObject *in_hub)
{
    PyObject *exc = PyObject_CallNoArgs(in_hub);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *IoTable_park(IoTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "io_park() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *hub = args[0], *fd_obj = args[1], *waits = args[3];
    if (!PyDict_CheckExact(waits)) {
        PyErr_SetString(PyExc_TypeError, "io_park(): waits must be a dict");
        return NULL;
    }
    PyObject *current = greenlet_getcurrent();
    if (current == NULL)
        return NULL;
    if (current == hub) {
        Py_DECREF(current);
        return refuse_in_hub(args[4]);
    }
    PyObject *cb = PyObject_GetAttr(current, str_switch);
    int64_t where = cb != NULL ? register_wait(self, args, cb, current) : -1;
    if (where < 0) {
        Py_XDECREF(cb);
        Py_DECREF(current);
        return NULL;
    }
    Py_INCREF(fd_obj);
    Py_INCREF(waits);
    PyObject *fired = greenlet_switch(hub, NULL, NULL);
    if (fired != NULL && PyLong_CheckExact(fired))
        forget_own(waits, fd_obj, current);   /* the dispatch took the callback */
    else
        take_back(self, where, fd_obj, waits, cb, current);
    if (io_resumer != NULL && note_resume(current, fired, fd_obj, args[2]) < 0) {
        /* (not Py_CLEAR: from 3.12 on it takes fired's address, and an
         * address-taken local must not live in this frame: see above) */
        Py_DECREF(fired);
        fired = NULL;
    }
    Py_DECREF(waits);
    Py_DECREF(fd_obj);
    Py_DECREF(cb);
    Py_DECREF(current);
    return fired;
}

/* cancel(fd, event, keep_interest=False) -> the callback that waited, or None. */
static PyObject *IoTable_cancel(IoTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_Format(PyExc_TypeError, "io_cancel() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd;
    if (lookup_fd_arg(args[0], &fd) < 0)
        return NULL;
    uint32_t event = event_arg(args[1]);
    if (event == 0)
        return NULL;
    int keep = 0;
    if (nargs == 3 && (keep = PyObject_IsTrue(args[2])) < 0)
        return NULL;
    PyObject *cb = NULL;
    if (fd >= 0 && fd < self->capacity) {
        PyObject **s = slot(self, fd, event);
        cb = *s;
        *s = NULL;
        if (cb != NULL)
            self->waiters--;
    }
    if (!keep && fd >= 0 && self->loop != NULL) {
        uint32_t mask = self->get(self->loop, fd);
        if (mask & event)   /* fails if the fd was closed meanwhile: then it is gone */
            self->set(self->loop, fd, mask & ~event);
    }
    return cb != NULL ? cb : Py_NewRef(Py_None);   /* the table's reference */
}

/* waiting(fd, event) -> bool */
static PyObject *IoTable_waiting(IoTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "io_waiting() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    int fd;
    if (lookup_fd_arg(args[0], &fd) < 0)
        return NULL;
    uint32_t event = event_arg(args[1]);
    if (event == 0)
        return NULL;
    return PyBool_FromLong(fd >= 0 && fd < self->capacity && *slot(self, fd, event) != NULL);
}

/* forget(fd) -> [callbacks that waited]: stop watching fd (it is about to
 * be closed), interest included. */
static PyObject *IoTable_forget(IoTable *self, PyObject *arg)
{
    int fd;
    if (lookup_fd_arg(arg, &fd) < 0)
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL || fd < 0)
        return list;
    if (self->loop != NULL)
        self->set(self->loop, fd, 0);
    if (fd >= self->capacity)
        return list;
    PyObject *reader = self->watches[fd].reader, *writer = self->watches[fd].writer;
    self->watches[fd].reader = self->watches[fd].writer = NULL;
    self->waiters -= (reader != NULL) + (writer != NULL);
    int failed = (reader != NULL && PyList_Append(list, reader) < 0)
              || (writer != NULL && PyList_Append(list, writer) < 0);
    Py_XDECREF(reader);
    Py_XDECREF(writer);
    if (failed)
        Py_CLEAR(list);
    return list;
}

/* Drop every callback (the loop is closing); they may run finalizers, so
 * the table is emptied before the first is released. */
static void drop_all(IoTable *self)
{
    fd_watch *w = self->watches;
    Py_ssize_t capacity = self->capacity;
    self->watches = NULL;
    self->capacity = 0;
    self->waiters = 0;
    for (Py_ssize_t i = 0; i < capacity; i++) {
        Py_XDECREF(w[i].reader);
        Py_XDECREF(w[i].writer);
    }
    PyMem_Free(w);
}

static PyObject *IoTable_close(IoTable *self, PyObject *unused)
{
    (void)unused;
    self->loop = NULL;
    drop_all(self);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- the poll */

/* Out of line: the wait is the one place the GIL is released. */
__attribute__((noinline)) static int wait_events(IoTable *self, int64_t timeout_ns)
{
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = self->poll(self->loop, timeout_ns, self->events, self->max_events);
    Py_END_ALLOW_THREADS
    return n;
}

/* Call cb(events) for a watcher taken out of the table (its reference is
 * ours).  0, or -1 if on_error raised. */
static int call_watcher(IoTable *self, PyObject *cb, uint32_t events, PyObject *on_error)
{
    PyObject *r = PyObject_Call(cb, self->event_args[events & LK__IO_BITS], NULL);
    int rc = 0;
    if (r != NULL)
        Py_DECREF(r);
    else
        rc = lk__report_failure(on_error, cb);
    Py_DECREF(cb);
    return rc;
}

/* One io event: wake its reader and/or writer; drop the interest in a
 * direction that fired with nobody waiting.  0, or -1 if on_error raised. */
static int dispatch_io(IoTable *self, int fd, uint32_t events, PyObject *on_error)
{
    PyObject *reader = NULL, *writer = NULL;
    if (fd >= 0 && fd < self->capacity) {
        if (events & LK_READ)
            reader = self->watches[fd].reader;
        if (events & LK_WRITE)
            writer = self->watches[fd].writer;
    }
    uint32_t idle = 0;
    if ((events & LK_READ) && reader == NULL)
        idle |= LK_READ;
    if ((events & LK_WRITE) && writer == NULL)
        idle |= LK_WRITE;
    if (idle) {
        uint32_t mask = self->get(self->loop, fd);
        if (mask & idle)
            self->set(self->loop, fd, mask & ~idle);
    }
    if (reader != NULL) {
        self->watches[fd].reader = NULL;
        self->waiters--;
        Py_XINCREF(writer);   /* compared by identity after the call */
        int rc = call_watcher(self, reader, events, on_error);
        /* The reader's greenlet ran: the writer may be gone or replaced. */
        PyObject *still = (self->loop != NULL && fd < self->capacity)
            ? self->watches[fd].writer : NULL;
        Py_XDECREF(writer);
        if (rc < 0)
            return -1;
        if (writer == NULL || still != writer)
            return 0;
    }
    if (writer != NULL) {
        self->watches[fd].writer = NULL;
        self->waiters--;
        return call_watcher(self, writer, events, on_error);
    }
    return 0;
}

/* One timer: take(id) -> (callback, args) | None; call it. */
static int dispatch_timer(IoTable *self, int32_t id, PyObject *on_error)
{
    PyObject *key = PyLong_FromLong(id);
    PyObject *fired = key ? PyObject_CallOneArg(self->take_timer, key) : NULL;
    Py_XDECREF(key);
    if (fired == NULL)
        return lk__report_failure(on_error, NULL);
    if (fired == Py_None) {   /* cancelled after it fired */
        Py_DECREF(fired);
        return 0;
    }
    if (!PyTuple_CheckExact(fired) || PyTuple_GET_SIZE(fired) != 2
            || !PyTuple_Check(PyTuple_GET_ITEM(fired, 1))) {
        PyErr_Format(PyExc_TypeError, "take() returned %R, not (callback, args)", fired);
        Py_DECREF(fired);
        return lk__report_failure(on_error, NULL);
    }
    PyObject *cb = PyTuple_GET_ITEM(fired, 0);
    PyObject *r = PyObject_Call(cb, PyTuple_GET_ITEM(fired, 1), NULL);
    int rc = 0;
    if (r != NULL)
        Py_DECREF(r);
    else
        rc = lk__report_failure(on_error, cb);
    Py_DECREF(fired);
    return rc;
}

/* Signals first.  A signal that came during the wait (or, for a poll that
 * does not wait, since the last bytecode) has its handler run by CPython at
 * the next bytecode boundary -- which, once the dispatch below has switched
 * into a woken greenlet, is that greenlet's: labkit's SIGINT handler would
 * raise KeyboardInterrupt in it (a ticker killed, not the main greenlet
 * interrupted) where it defers to the hub when it runs in the hub, as it
 * did when Loop.poll's dispatch was Python.  So the handlers run here, in
 * the hub.  An exception from one (a handler that raises in the hub) is
 * returned, normalized, so that poll() raises it after the dispatch: the
 * events lk_poll took must still wake their callbacks. */
__attribute__((noinline)) static PyObject *run_signal_handlers(void)
{
    if (PyErr_CheckSignals() == 0)
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

__attribute__((noinline)) static void raise_held(PyObject *exc)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);   /* steals exc */
}

/* poll(timeout, on_error) -> events dispatched.  timeout: seconds, < 0
 * until something happens, 0 without waiting (and keeping the GIL). */
static PyObject *IoTable_poll(IoTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "poll() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    double seconds = PyFloat_AsDouble(args[0]);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(seconds)) {
        PyErr_SetString(PyExc_ValueError, "poll(): timeout must be a number of seconds, not NaN");
        return NULL;
    }
    PyObject *on_error = args[1];
    if (self->loop == NULL)
        return closed_error(), NULL;
    if (self->polling) {
        PyErr_SetString(PyExc_RuntimeError,
                        "poll() called from a callback of the same loop's poll()");
        return NULL;
    }
    int n;
    if (seconds == 0.0) {
        n = self->poll(self->loop, 0, self->events, self->max_events);
    } else {
        int64_t ns = seconds < 0 ? -1
            : seconds >= (double)LK__NEVER_NS / 1e9 ? LK__NEVER_NS : (int64_t)(seconds * 1e9);
        n = wait_events(self, ns);
    }
    if (n <= 0) {
        if (n < 0 && n != -EINTR) {
            errno = -n;
            PyErr_SetFromErrno(PyExc_OSError);
            return NULL;
        }
        return PyErr_CheckSignals() < 0 ? NULL : PyLong_FromLong(0);
    }
    PyObject *held = run_signal_handlers();
    Py_INCREF(self);          /* a callback may drop the last Loop */
    self->polling = 1;
    int failed = 0;
    for (int i = 0; i < n && self->loop != NULL; i++) {
        lk_event ev = self->events[i];
        if (ev.events & LK_TIMER)
            failed = dispatch_timer(self, ev.id, on_error) < 0;
        else
            failed = dispatch_io(self, ev.id, ev.events, on_error) < 0;
        if (failed)
            break;
    }
    self->polling = 0;
    Py_DECREF(self);
    if (held != NULL) {
        if (failed)
            Py_DECREF(held);  /* on_error's exception (the hub being killed) wins */
        else
            raise_held(held);
        return NULL;
    }
    return failed ? NULL : PyLong_FromLong(n);
}

static PyObject *IoTable_get_waiters(IoTable *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->waiters);
}

/* ------------------------------------------------------------ the type */

static int IoTable_traverse(IoTable *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->capacity; i++) {
        Py_VISIT(self->watches[i].reader);
        Py_VISIT(self->watches[i].writer);
    }
    Py_VISIT(self->take_timer);
    Py_VISIT(self->busy_error);
    return 0;
}

static int IoTable_clear(IoTable *self)
{
    drop_all(self);
    Py_CLEAR(self->take_timer);
    Py_CLEAR(self->busy_error);
    return 0;
}

static void IoTable_dealloc(IoTable *self)
{
    PyObject_GC_UnTrack(self);
    IoTable_clear(self);
    for (int i = 0; i <= LK__IO_BITS; i++)
        Py_CLEAR(self->event_args[i]);
    PyMem_Free(self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef IoTable_methods[] = {
    {"start", (PyCFunction)(void (*)(void))IoTable_start, METH_FASTCALL,
     "start(fd, event, callback): call callback(events) once, when fd is ready for "
     "event (READ or WRITE); a second callback for the same fd and event raises "
     "ConcurrentObjectUseError."},
    {"park", (PyCFunction)(void (*)(void))IoTable_park, METH_FASTCALL,
     "park(hub, fd, event, waits, in_hub) -> events: a socket's fd wait, without a "
     "timeout and keeping the interest (see loop_c/lk_io_py.c)."},
    {"cancel", (PyCFunction)(void (*)(void))IoTable_cancel, METH_FASTCALL,
     "cancel(fd, event, keep_interest=False) -> the callback that waited, or None."},
    {"waiting", (PyCFunction)(void (*)(void))IoTable_waiting, METH_FASTCALL,
     "waiting(fd, event) -> bool: a callback waits on (fd, event)."},
    {"forget", (PyCFunction)IoTable_forget, METH_O,
     "forget(fd) -> [callbacks]: stop watching fd, which is about to be closed."},
    {"poll", (PyCFunction)(void (*)(void))IoTable_poll, METH_FASTCALL,
     "poll(timeout, on_error) -> n: wait up to timeout seconds (< 0: until an event), "
     "then call what fired; a callback's exception goes to on_error(callback)."},
    {"close", (PyCFunction)IoTable_close, METH_NOARGS,
     "close(): forget every watcher; the loop is about to be freed."},
    {NULL},
};

static PyGetSetDef IoTable_getset[] = {
    {"waiters", (getter)IoTable_get_waiters, NULL,
     "How many callbacks wait (readers + writers).", NULL},
    {NULL},
};

static PyTypeObject IoTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "labkit._lk_poll_py.IoTable",
    .tp_basicsize = sizeof(IoTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A loop's io watchers and its poll (see loop_c/lk_io_py.c); made by io_table().",
    .tp_dealloc = (destructor)IoTable_dealloc,
    .tp_traverse = (traverseproc)IoTable_traverse,
    .tp_clear = (inquiry)IoTable_clear,
    .tp_methods = IoTable_methods,
    .tp_getset = IoTable_getset,
};

static void *address_of(PyObject *arg, const char *what)
{
    void *p = PyLong_Check(arg) ? PyLong_AsVoidPtr(arg) : NULL;
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "io_table() needs the address of %s as a nonzero int", what);
    return p;
}

/* io_table(poll, io_set, io_get, loop, max_events, take_timer, busy_error) */
PyObject *lk__io_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "io_table() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    void *poll = address_of(args[0], "lk_poll");
    void *set = poll ? address_of(args[1], "lk_io_set") : NULL;
    void *get = set ? address_of(args[2], "lk_io_get") : NULL;
    void *loop = get ? address_of(args[3], "the loop") : NULL;
    if (loop == NULL)
        return NULL;
    long max_events = PyLong_AsLong(args[4]);
    if (max_events == -1 && PyErr_Occurred())
        return NULL;
    if (max_events < 1 || max_events > 65536) {
        PyErr_SetString(PyExc_ValueError, "io_table(): max_events must be in [1, 65536]");
        return NULL;
    }
    if (!PyCallable_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "io_table(): take_timer must be callable");
        return NULL;
    }
    if (!PyExceptionClass_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "io_table(): busy_error must be an exception class");
        return NULL;
    }
    IoTable *self = PyObject_GC_New(IoTable, &IoTable_Type);
    if (self == NULL)
        return NULL;
    self->poll = (lk_poll_fn)poll;
    self->set = (lk_io_set_fn)set;
    self->get = (lk_io_get_fn)get;
    self->loop = loop;
    self->max_events = (int)max_events;
    self->polling = 0;
    self->watches = NULL;
    self->capacity = self->waiters = 0;
    self->take_timer = Py_NewRef(args[5]);
    self->busy_error = Py_NewRef(args[6]);
    memset(self->event_args, 0, sizeof self->event_args);
    self->events = PyMem_Calloc((size_t)max_events, sizeof *self->events);
    if (self->events == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i <= LK__IO_BITS; i++) {
        PyObject *bits = PyLong_FromLong(i);
        self->event_args[i] = bits ? PyTuple_Pack(1, bits) : NULL;
        Py_XDECREF(bits);
        if (self->event_args[i] == NULL)
            goto fail;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
fail:
    self->loop = NULL;
    PyObject_GC_Track(self);
    Py_DECREF(self);
    return NULL;
}

int lk__io_py_init(PyObject *module)
{
    (void)module;
    if (greenlet_switch == NULL) {
        void **api = PyCapsule_Import("greenlet._C_API", 0);
        if (api == NULL)
            return -1;
        str_switch = PyUnicode_InternFromString("switch");
        if (str_switch == NULL)
            return -1;
        greenlet_getcurrent = (lk_greenlet_getcurrent_fn)api[LK_GREENLET_GETCURRENT_NUM];
        greenlet_switch = (lk_greenlet_switch_fn)api[LK_GREENLET_SWITCH_NUM];
        why_waiter = PyLong_FromLong(LK_WHY_WAITER);
        why_throw = PyLong_FromLong(LK_WHY_THROW);
        if (why_waiter == NULL || why_throw == NULL)
            return -1;
    }
    return PyType_Ready(&IoTable_Type);
}
