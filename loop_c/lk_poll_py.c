/* lk_poll_py.c -- labkit._lk_poll_py: calls into the C loop that keep the
 * GIL: a poll that does not wait (here), timer start and cancel
 * (lk_timers_py.c, whose Timer objects this module also exports), and the
 * C half of labkit.Timeout (lk_timeout_py.c, TimeoutBase), and Passes:
 * phase 1 of Hub.run and sleep(0)'s direct hand-off (below, in this file).
 *
 * Why.  cffi releases the GIL around every call into labkit._lk_loop, and
 * takes it back after.  For a poll that may sleep that is exactly right.
 * For the zero-timeout poll a busy hub makes every 0.2 ms it is harmful:
 * another thread that wants the GIL (a thread-pool worker about to run
 * Python, or to post its result) is woken by each release, finds the GIL
 * taken again before it got there, and goes back to waiting -- and because
 * it was woken rather than timed out, it never asks CPython to force a
 * switch.  It starved for as long as the hub stayed busy (20 ms of
 * sleep(0) yields held off a thread that only wanted to write one byte).
 * Keeping the GIL through a poll that cannot wait lets CPython's own
 * switch interval (5 ms) do its job, and costs one C call instead of a GIL
 * round trip.
 *
 * How Python gets one (labkit/_loop.py):
 *
 *     poll0 = _lk_poll_py.nowait(address of lk_poll, loop, events array, max)
 *     n = poll0()          # == lk_poll(loop, 0, events, max), GIL held
 *
 * The addresses come from cffi (ffi.addressof(lib, "lk_poll"), the loop
 * pointer, the lk_event array); they are not references: the Loop keeps
 * the loop and the array alive, and never calls poll0 after close().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>   /* T_OBJECT_EX: how a __slots__ slot is described */
#include <stdint.h>

#include "lk_loop.h"
#include "lk_timers_py.h"
#include "lk_timeout_py.h"
#include "lk_io_py.h"
#include "lk_sock_py.h"

typedef int (*lk_poll_fn)(lk_loop *loop, int64_t timeout_ns, lk_event *out, int max_events);

typedef struct {
    lk_poll_fn poll;
    lk_loop   *loop;
    lk_event  *out;
    int        max_events;
} nowait_call;

#define CAPSULE_NAME "labkit._lk_poll_py.nowait_call"

/* poll0(): lk_poll(loop, 0, out, max_events) with the GIL held. */
static PyObject *poll0(PyObject *self, PyObject *unused)
{
    (void)unused;
    nowait_call *c = PyCapsule_GetPointer(self, CAPSULE_NAME);
    if (c == NULL)
        return NULL;
    return PyLong_FromLong(c->poll(c->loop, 0, c->out, c->max_events));
}

static PyMethodDef poll0_def = {
    "poll0", poll0, METH_NOARGS,
    "poll0() -> int: lk_poll(loop, 0, events, max_events) without releasing the GIL.",
};

static void free_call(PyObject *capsule)
{
    PyMem_Free(PyCapsule_GetPointer(capsule, CAPSULE_NAME));
}

static void *address_arg(PyObject *arg, const char *what)
{
    void *p = PyLong_Check(arg) ? PyLong_AsVoidPtr(arg) : NULL;
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "nowait() needs the address of %s as a nonzero int", what);
    return p;
}

/* nowait(poll, loop, events, max_events) -> poll0 */
static PyObject *nowait(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "nowait() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    void *poll = address_arg(args[0], "lk_poll");
    void *loop = poll ? address_arg(args[1], "the loop") : NULL;
    void *out = loop ? address_arg(args[2], "the lk_event array") : NULL;
    if (out == NULL)
        return NULL;
    long max_events = PyLong_AsLong(args[3]);
    if (max_events == -1 && PyErr_Occurred())
        return NULL;
    if (max_events < 1 || max_events > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "nowait(): max_events must be >= 1");
        return NULL;
    }
    nowait_call *c = PyMem_Malloc(sizeof *c);
    if (c == NULL)
        return PyErr_NoMemory();
    c->poll = (lk_poll_fn)poll;
    c->loop = loop;
    c->out = out;
    c->max_events = (int)max_events;
    PyObject *capsule = PyCapsule_New(c, CAPSULE_NAME, free_call);
    if (capsule == NULL) {
        PyMem_Free(c);
        return NULL;
    }
    PyObject *fn = PyCFunction_New(&poll0_def, capsule);
    Py_DECREF(capsule);   /* the function holds it */
    return fn;
}

static PyObject *sleep0(PyObject *module, PyObject *unused);
static PyObject *sleep0_setup(PyObject *module, PyObject *cls);

static PyMethodDef module_functions[] = {
    {"sleep0", sleep0, METH_NOARGS,
     "sleep0() -> bool: sleep(0)'s common case in one call (labkit/_park.py); False, having "
     "done nothing, when it is not that case (see loop_c/lk_poll_py.c)."},
    {"sleep0_setup", sleep0_setup, METH_O,
     "sleep0_setup(Hub): the hub class sleep0() serves (labkit/hub.py calls it once)."},
    {"nowait", (PyCFunction)(void (*)(void))nowait, METH_FASTCALL,
     "nowait(poll, loop, events, max_events) -> poll0: a builtin that calls the "
     "lk_poll at address `poll` on `loop` with timeout 0, keeping the GIL."},
    {"timer_table", (PyCFunction)(void (*)(void))lk__timer_table_new, METH_FASTCALL,
     "timer_table(start, cancel, loop) -> TimerTable: start/cancel timers of "
     "`loop` through lk_timer_start/lk_timer_cancel at those addresses, keeping "
     "the GIL (see loop_c/lk_timers_py.c)."},
    {"io_table", (PyCFunction)(void (*)(void))lk__io_table_new, METH_FASTCALL,
     "io_table(poll, io_set, io_get, loop, max_events, take_timer, busy_error) -> IoTable: "
     "the loop's io watchers (fd -> reader, writer) and its poll, which calls what fired "
     "(see loop_c/lk_io_py.c)."},
    {"set_resumer", lk__io_set_resumer, METH_O,
     "set_resumer(resume_fd or None): every IoTable's park() writes a woken greenlet's "
     "resume record with resume_fd(g, why, fd, event) while it is set (the tracer sets "
     "it while it records; see loop_c/lk_io_py.c)."},
    {"recv", (PyCFunction)(void (*)(void))lk__sock_recv, METH_FASTCALL,
     "recv(fd, bufsize, flags) -> bytes: recv(2) with MSG_DONTWAIT, keeping the GIL "
     "(see loop_c/lk_sock_py.c)."},
    {"send", (PyCFunction)(void (*)(void))lk__sock_send, METH_FASTCALL,
     "send(fd, data, flags) -> int: send(2) with MSG_DONTWAIT, keeping the GIL."},
    {"configure_timeouts", (PyCFunction)(void (*)(void))lk__configure_timeouts, METH_FASTCALL,
     "configure_timeouts(getcurrent, hub_type, get_hub): how TimeoutBase.start finds "
     "the current greenlet's hub (labkit/timeout.py calls it once; see "
     "loop_c/lk_timeout_py.c)."},
    {NULL, NULL, 0, NULL},
};

/* ---- Passes: phase 1 of Hub.run, and sleep(0)'s direct hand-off --------
 *
 * Why.  sleep(0) between greenlets used to cost two switches, greenlet ->
 * hub -> next greenlet, with the hub's phase-1 bytecode between them.  A
 * hand-off (greenlet -> next greenlet) must know where the hub's pass
 * stands: how many of the callbacks that were ready when the pass began
 * are left (a pass runs those, and only those), and whether the hub is
 * suspended between two of them.  Kept in Python that bookkeeping cost as
 * much as the switch it saved (see /tmp/notes/21-handoff.md); here it is a
 * few C stores.
 *
 * One Passes object per hub (Hub._passes), over the hub's ready deque:
 *
 *   run(trace, ticking)   phase 1 of a pass: pops and calls the callbacks
 *                         that are ready now, and only those; a callback
 *                         that raises is reported with on_error(entry)
 *                         (called with the exception as sys.exc_info()).
 *                         Writes the PASS record (trace(tr_pass, 0, n, 0))
 *                         when trace is not None.
 *   yield0(trace)         sleep(0), after it queued its own switch: if it
 *                         is safe, switches straight to the head of ready
 *                         and returns True once switched back; else returns
 *                         False (the caller switches to the hub, as before).
 *   next_poll_ns          the hub's "no poll before" time (monotonic ns).
 *
 * The hand-off is safe when all of these hold:
 *   - the hub is suspended in run(), in the call of a plain greenlet switch
 *     (not in a callback that may still have work to do after its switch);
 *   - this pass has entries left, or it has none and the hub would start
 *     the next pass at once: no poll due and no tick() host waiting;
 *   - the head of ready is a bound greenlet.switch (not ours: at least two
 *     entries) of a greenlet that already runs (started, not dead: a first
 *     switch starts a greenlet at the switcher's recursion depth, which
 *     must stay the hub's) and whose parent is the hub, so its end and its
 *     failure come back to the hub, as when the hub switches to it.
 * Then it does what the hub would have done: counts the entry off (or
 * starts the next pass: count, PASS record), records it as the entry
 * running -- a raw greenlet that dies is reported against its own switch --
 * and calls it.  The hub's state stays here, so when the hub is switched
 * back to, run() carries on with the pass as it now stands.
 */
#include <time.h>

/* greenlet's C API (greenlet/greenlet.h), read from its capsule: the
 * header is not needed to build, only these slots (greenlet >= 3.0). */
#define LK_GREENLET_GETCURRENT_NUM 4
#define LK_GREENLET_SWITCH_NUM 6
#define LK_GREENLET_ACTIVE_NUM 10
#define LK_GREENLET_GET_PARENT_NUM 11
typedef int (*lk_greenlet_active_fn)(PyObject *);
static lk_greenlet_active_fn greenlet_active;
typedef PyObject *(*lk_greenlet_switch_fn)(PyObject *, PyObject *, PyObject *);
typedef PyObject *(*lk_greenlet_get_parent_fn)(PyObject *);
static lk_greenlet_switch_fn greenlet_switch;
static lk_greenlet_get_parent_fn greenlet_get_parent;
typedef PyObject *(*lk_greenlet_getcurrent_fn)(void);
static lk_greenlet_getcurrent_fn greenlet_getcurrent;
static PyObject *switch_descr;      /* greenlet.switch, the method descriptor */
static PyTypeObject *switch_type;   /* type of a bound greenlet.switch */
static PyMethodDef *switch_ml;      /* its method definition */

typedef struct {
    PyObject_HEAD
    PyObject *ready;          /* the hub's deque */
    PyObject *popleft;        /* ready.popleft */
    PyObject *append;         /* ready.append */
    PyObject *on_error;       /* hub._handle_dispatch_error */
    PyObject *hub;            /* compared by identity only, not owned */
    PyObject *running;        /* the entry being run, or NULL */
    PyObject *tr_pass;        /* LK_TR_PASS as an int */
    Py_ssize_t left;          /* entries left in this pass; -1 outside run() */
    long long next_poll_ns;
    int in_switch;            /* run() is calling a plain greenlet switch */
    int ticking;              /* a tick() host waits for this pass to end */
} Passes;

/* Functions with address-taken locals stay out of line: run() and yield0()
 * are on the stack while greenlet copies it away at a switch, and an
 * AddressSanitizer build puts redzones around such locals, which that
 * copy would read (a false report, but it fails .ci/sanitize.sh). */
__attribute__((noinline)) static long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* as time.monotonic_ns() */
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int is_plain_switch(PyObject *cb)
{
    return Py_TYPE(cb) == switch_type && ((PyCFunctionObject *)cb)->m_ml == switch_ml;
}

static PyObject *Passes_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ready, *on_error, *hub, *tr_pass;
    static char *kwlist[] = {"ready", "on_error", "hub", "tr_pass", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO:Passes", kwlist,
                                     &ready, &on_error, &hub, &tr_pass))
        return NULL;
    if (!PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "Passes(): on_error must be callable");
        return NULL;
    }
    PyObject *popleft = PyObject_GetAttrString(ready, "popleft");
    if (popleft == NULL)
        return NULL;
    PyObject *append = PyObject_GetAttrString(ready, "append");
    if (append == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    Passes *self = (Passes *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(popleft);
        Py_DECREF(append);
        return NULL;
    }
    self->ready = Py_NewRef(ready);
    self->popleft = popleft;
    self->append = append;
    self->on_error = Py_NewRef(on_error);
    self->hub = hub;
    self->tr_pass = Py_NewRef(tr_pass);
    self->left = -1;
    return (PyObject *)self;
}

static int Passes_traverse(Passes *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ready);
    Py_VISIT(self->popleft);
    Py_VISIT(self->append);
    Py_VISIT(self->on_error);
    Py_VISIT(self->running);
    Py_VISIT(self->tr_pass);
    return 0;
}

static int Passes_clear(Passes *self)
{
    Py_CLEAR(self->ready);
    Py_CLEAR(self->popleft);
    Py_CLEAR(self->append);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->running);
    Py_CLEAR(self->tr_pass);
    return 0;
}

static void Passes_dealloc(Passes *self)
{
    PyObject_GC_UnTrack(self);
    Passes_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int write_pass(Passes *self, PyObject *trace, Py_ssize_t n)
{
    PyObject *r = PyObject_CallFunction(trace, "Oinn", self->tr_pass, 0, n, (Py_ssize_t)0);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The pending exception, reported with on_error(entry) as sys.exc_info(). */
static int report(Passes *self, PyObject *entry)
{
    return lk__report_failure(self->on_error, entry);
}

static PyObject *Passes_run(Passes *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "run() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *trace = args[0];
    int ticking = PyObject_IsTrue(args[1]);
    if (ticking < 0)
        return NULL;
    if (self->left >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Passes.run() is already running");
        return NULL;
    }
    Py_ssize_t n = PyObject_Size(self->ready);
    if (n < 0)
        return NULL;
    if (n && trace != Py_None && write_pass(self, trace, n) < 0)
        return NULL;
    self->ticking = ticking;
    self->left = n;
    while (self->left > 0) {
        self->left--;
        PyObject *cb = PyObject_CallNoArgs(self->popleft);
        if (cb == NULL) {
            if (PyErr_ExceptionMatches(PyExc_IndexError)) {
                PyErr_Clear();      /* a callback took back the newest entry */
                break;
            }
            goto fail;
        }
        Py_XSETREF(self->running, cb);
        PyObject *r;
        if (is_plain_switch(cb)) {
            /* g.switch(), without the bound method's call layer */
            self->in_switch = 1;
            r = greenlet_switch(((PyCFunctionObject *)cb)->m_self, NULL, NULL);
            self->in_switch = 0;
        } else {
            r = PyObject_CallNoArgs(cb);
        }
        if (r != NULL) {
            Py_DECREF(r);
            Py_CLEAR(self->running);
            continue;
        }
        /* Reported against the entry running now: after hand-offs, the
         * switch of the raw greenlet that failed, not the hub's own cb. */
        PyObject *entry = self->running;
        self->running = NULL;
        int failed = report(self, entry);
        Py_XDECREF(entry);
        if (failed < 0)
            goto fail;    /* GreenletExit: the hub itself is being killed */
    }
    self->left = -1;
    Py_RETURN_NONE;
fail:
    self->left = -1;
    self->in_switch = 0;
    Py_CLEAR(self->running);
    return NULL;
}

static PyObject *Passes_yield0(Passes *self, PyObject *trace)
{
    if (!self->in_switch || self->left < 0)
        Py_RETURN_FALSE;
    if (self->left == 0) {
        if (self->ticking)
            Py_RETURN_FALSE;
        if (monotonic_ns() >= self->next_poll_ns)
            Py_RETURN_FALSE;
    }
    Py_ssize_t n = PyObject_Size(self->ready);
    if (n < 2) {              /* only our own switch: the hub decides */
        if (n < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *head = PySequence_GetItem(self->ready, 0);
    if (head == NULL)
        return NULL;
    PyObject *checked = head;  /* compared by identity after popleft */
    int ok = is_plain_switch(head);
    /* Only to a greenlet that runs already: a first switch starts a
     * greenlet at the recursion depth of the switcher (the hub: shallow);
     * started from here, each start would add our depth to the next. */
    if (ok)
        ok = greenlet_active(((PyCFunctionObject *)head)->m_self) > 0;
    if (ok) {
        PyObject *parent = greenlet_get_parent(((PyCFunctionObject *)head)->m_self);
        if (parent == NULL)
            PyErr_Clear();
        ok = parent == self->hub;
        Py_XDECREF(parent);
    }
    Py_DECREF(head);
    if (!ok)
        Py_RETURN_FALSE;
    if (self->left == 0) {     /* the hub would start the next pass now */
        if (trace != Py_None && write_pass(self, trace, n) < 0)
            return NULL;
        self->left = n;
    }
    PyObject *cb = PyObject_CallNoArgs(self->popleft);
    if (cb == NULL)
        return NULL;
    self->left--;
    Py_XSETREF(self->running, cb);
    /* cb is the head checked above (no Python code ran in between) */
    PyObject *r = cb == checked
        ? greenlet_switch(((PyCFunctionObject *)cb)->m_self, NULL, NULL)
        : PyObject_CallNoArgs(cb);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

static PyObject *Passes_get_next_poll_ns(Passes *self, void *closure)
{
    return PyLong_FromLongLong(self->next_poll_ns);
}

static int Passes_set_next_poll_ns(Passes *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "next_poll_ns cannot be deleted");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    self->next_poll_ns = v;
    return 0;
}

static PyObject *Passes_get_left(Passes *self, void *closure)
{
    return PyLong_FromSsize_t(self->left);
}

static PyGetSetDef Passes_getset[] = {
    {"next_poll_ns", (getter)Passes_get_next_poll_ns, (setter)Passes_set_next_poll_ns,
     "No poll is due before this time (monotonic ns); the hub sets it after each poll.", NULL},
    {"left", (getter)Passes_get_left, NULL,
     "Entries left in the current pass, or -1 outside run().", NULL},
    {NULL},
};

static PyMethodDef Passes_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Passes_run, METH_FASTCALL,
     "run(trace, ticking): phase 1 of a pass (see loop_c/lk_poll_py.c)."},
    {"yield0", (PyCFunction)Passes_yield0, METH_O,
     "yield0(trace) -> bool: switch straight to the next ready greenlet if that is safe; "
     "call it after queueing the caller's own switch."},
    {NULL},
};

static PyTypeObject Passes_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "labkit._lk_poll_py.Passes",
    .tp_basicsize = sizeof(Passes),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Passes(ready, on_error, hub, tr_pass): a hub's phase 1 and sleep(0)'s hand-off.",
    .tp_new = Passes_new,
    .tp_dealloc = (destructor)Passes_dealloc,
    .tp_traverse = (traverseproc)Passes_traverse,
    .tp_clear = (inquiry)Passes_clear,
    .tp_methods = Passes_methods,
    .tp_getset = Passes_getset,
};

/* ---- sleep0(): sleep(0)'s hot path ------------------------------------
 *
 * labkit/_park.py's sleep(0), with the tracer off, in one C call: the
 * caller's hub (its parent, a Hub), its own switch queued behind the ready
 * callbacks, then yield0's hand-off or else a switch to the hub -- the
 * same steps, in the same order, as the Python code below it in sleep(),
 * which stays the reference and handles every other case.  Returns True
 * once switched back, or at once when nothing else could run (the Python
 * code's no-switch case, same condition); False, having done nothing, in
 * every other case: the caller's parent is not a Hub (sleep in the hub,
 * or in a greenlet with another parent), nothing is ready but the hub has
 * work to do, or its class overrides switch().  Raises what
 * the switch raised (a kill, a Timeout) after taking its switch back out
 * of the queue (Hub.take_back), so that it cannot fire into a later wait.
 *
 * Why C: sleep(0) is the cost of a cooperative yield, and its Python
 * body was a fifth of it (issue 21: <= 0.8x uvloop's asyncio.sleep(0)).
 *
 * sleep0_setup(Hub) tells it the hub class, and where a Hub keeps its
 * Passes, poll deadline, tick flag and run() frame: the __slots__ slots
 * _passes, _next_poll_ns, _ticking and _run_frame, read by offset as their
 * member descriptors would. */
static PyTypeObject *hub_type;
/* where a Hub keeps these (its __slots__), by the offsets of their members */
static Py_ssize_t hub_passes_offset, hub_next_poll_offset, hub_ticking_offset,
                  hub_run_frame_offset;
static PyObject *switch_name, *take_back_name, *gr_frame_name;

#define HUB_SLOT(hub, offset) (*(PyObject **)((char *)(hub) + (offset)))

/* sleep(0) with nothing else ready: 1 if it may return at once, without a
 * switch -- no poll due, no tick() host waiting, and the hub suspended in
 * its own pass loop (its current frame is Hub.run's), exactly the Python
 * condition in _park.sleep; 0 if it must go through the Python code; -1
 * on error. */
static int nothing_else_to_run(PyObject *hub)
{
    PyObject *next_poll = HUB_SLOT(hub, hub_next_poll_offset);
    PyObject *run_frame = HUB_SLOT(hub, hub_run_frame_offset);
    if (HUB_SLOT(hub, hub_ticking_offset) != Py_False || next_poll == NULL
            || !PyLong_CheckExact(next_poll) || run_frame == NULL || run_frame == Py_None)
        return 0;
    long long due = PyLong_AsLongLong(next_poll);
    if (due == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (monotonic_ns() >= due)
        return 0;
    PyObject *frame = PyObject_GetAttr(hub, gr_frame_name);
    if (frame == NULL)
        return -1;
    Py_DECREF(frame);       /* compared by identity; run_frame keeps it */
    return frame == run_frame;
}

/* Out of line: its address-taken locals must not be on the stack that
 * greenlet copies at a switch (see monotonic_ns above). */
__attribute__((noinline)) static void take_back_after_failure(PyObject *hub, PyObject *switch_)
{
    PyObject *typ, *val, *tb;
    PyErr_Fetch(&typ, &val, &tb);
    PyErr_NormalizeException(&typ, &val, &tb);
    if (tb != NULL && val != NULL)
        PyException_SetTraceback(val, tb);
    PyObject *r = PyObject_CallMethodOneArg(hub, take_back_name, switch_);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_Restore(typ, val, tb);
        return;
    }
    /* take_back failed: its error wins, with the switch's as context */
    PyObject *typ2, *val2, *tb2;
    PyErr_Fetch(&typ2, &val2, &tb2);
    PyErr_NormalizeException(&typ2, &val2, &tb2);
    if (val2 != NULL && val != NULL)
        PyException_SetContext(val2, val);      /* steals val */
    else
        Py_XDECREF(val);
    Py_XDECREF(typ);
    Py_XDECREF(tb);
    PyErr_Restore(typ2, val2, tb2);
}

static PyObject *sleep0(PyObject *module, PyObject *unused)
{
    (void)module; (void)unused;
    if (hub_type == NULL)
        Py_RETURN_FALSE;
    PyObject *current = greenlet_getcurrent();
    if (current == NULL)
        return NULL;
    PyObject *hub = greenlet_get_parent(current);
    if (hub == NULL) {
        PyErr_Clear();               /* the main greenlet: no parent */
        Py_DECREF(current);
        Py_RETURN_FALSE;
    }
    Passes *passes = NULL;
    if (Py_TYPE(hub) == hub_type)
        passes = (Passes *)HUB_SLOT(hub, hub_passes_offset);
    Py_ssize_t n = -1;
    if (passes != NULL && Py_TYPE(passes) == &Passes_Type)
        n = PyObject_Size(passes->ready);
    if (n == 0) {              /* sleep(0) may not need to switch at all */
        int done = nothing_else_to_run(hub);
        Py_DECREF(hub);
        Py_DECREF(current);
        if (done < 0)
            return NULL;
        return PyBool_FromLong(done);
    }
    if (n < 0 || _PyType_Lookup(Py_TYPE(current), switch_name) != switch_descr) {
        Py_DECREF(hub);
        Py_DECREF(current);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    /* current.switch, as its method descriptor makes it */
    PyObject *switch_ = PyCFunction_NewEx(switch_ml, current, NULL);
    Py_DECREF(current);
    PyObject *r = switch_ ? PyObject_CallOneArg(passes->append, switch_) : NULL;
    if (r == NULL) {
        Py_XDECREF(switch_);
        Py_DECREF(hub);
        return NULL;
    }
    Py_DECREF(r);
    Py_INCREF(passes);
    r = Passes_yield0(passes, Py_None);
    Py_DECREF(passes);
    if (r == Py_False) {
        Py_DECREF(r);
        r = greenlet_switch(hub, NULL, NULL);
    }
    if (r == NULL)
        take_back_after_failure(hub, switch_);
    else
        Py_DECREF(r);
    Py_DECREF(switch_);
    Py_DECREF(hub);
    if (r == NULL)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *sleep0_setup(PyObject *module, PyObject *cls)
{
    (void)module;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "sleep0_setup(): expected the Hub class");
        return NULL;
    }
    static const char *names[] = {"_passes", "_next_poll_ns", "_ticking", "_run_frame"};
    Py_ssize_t offsets[4];
    for (int i = 0; i < 4; i++) {
        PyObject *descr = PyDict_GetItemString(((PyTypeObject *)cls)->tp_dict, names[i]);
        if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type
                || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError,
                         "sleep0_setup(): the Hub class must keep %s in a __slots__ slot",
                         names[i]);
            return NULL;
        }
        offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    if (switch_name == NULL) {
        switch_name = PyUnicode_InternFromString("switch");
        take_back_name = PyUnicode_InternFromString("take_back");
        gr_frame_name = PyUnicode_InternFromString("gr_frame");
        if (switch_name == NULL || take_back_name == NULL || gr_frame_name == NULL)
            return NULL;
    }
    hub_passes_offset = offsets[0];
    hub_next_poll_offset = offsets[1];
    hub_ticking_offset = offsets[2];
    hub_run_frame_offset = offsets[3];
    Py_XSETREF(hub_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static int passes_init(PyObject *module)
{
    if (greenlet_get_parent == NULL) {
        void **api = PyCapsule_Import("greenlet._C_API", 0);
        if (api == NULL)
            return -1;
        PyObject *greenlet = PyImport_ImportModule("greenlet");
        if (greenlet == NULL)
            return -1;
        PyObject *switch_ = PyObject_CallMethod(greenlet, "getcurrent", NULL);
        Py_DECREF(greenlet);
        PyObject *bound = switch_ ? PyObject_GetAttrString(switch_, "switch") : NULL;
        Py_XDECREF(switch_);
        if (bound == NULL)
            return -1;
        if (!PyCFunction_Check(bound)) {
            Py_DECREF(bound);
            PyErr_SetString(PyExc_ImportError, "greenlet.switch is not a builtin method");
            return -1;
        }
        switch_type = Py_TYPE(bound);
        switch_ml = ((PyCFunctionObject *)bound)->m_ml;
        Py_DECREF(bound);
        PyTypeObject *greenlet_type = (PyTypeObject *)api[0];   /* PyGreenlet_Type */
        switch_descr = PyDict_GetItemString(greenlet_type->tp_dict, "switch");
        if (switch_descr == NULL) {
            PyErr_SetString(PyExc_ImportError, "greenlet.greenlet has no switch");
            return -1;
        }
        Py_INCREF(switch_descr);
        greenlet_getcurrent = (lk_greenlet_getcurrent_fn)api[LK_GREENLET_GETCURRENT_NUM];
        greenlet_get_parent = (lk_greenlet_get_parent_fn)api[LK_GREENLET_GET_PARENT_NUM];
        greenlet_switch = (lk_greenlet_switch_fn)api[LK_GREENLET_SWITCH_NUM];
        greenlet_active = (lk_greenlet_active_fn)api[LK_GREENLET_ACTIVE_NUM];
    }
    if (PyType_Ready(&Passes_Type) < 0)
        return -1;
    Py_INCREF(&Passes_Type);
    if (PyModule_AddObject(module, "Passes", (PyObject *)&Passes_Type) < 0) {
        Py_DECREF(&Passes_Type);
        return -1;
    }
    return 0;
}

/* Multi-phase init, so the module can say what it needs of the interpreter.
 * Py_mod_gil: poll0() runs lk_poll on a loop that the rest of labkit
 * (the cffi module, the hub) uses from the same thread under the GIL, and
 * labkit's C code assumes that GIL (labkit refuses to import on a
 * free-threaded CPython), so the GIL must stay on.
 * Py_mod_multiple_interpreters: the module's state (TimeoutBase and what
 * configure_timeouts() gave it) is per module object, so several
 * interpreters may load it -- but only interpreters that share one
 * GIL, like the rest of labkit (greenlet, which labkit needs, refuses an
 * own-GIL subinterpreter today).  The #ifdefs keep this compiling on
 * 3.10-3.11, which have neither slot. */
static int module_exec(PyObject *module)
{
    return lk__timers_py_init(module) < 0 || lk__timeout_py_init(module) < 0
        || lk__io_py_init(module) < 0 || passes_init(module) < 0 ? -1 : 0;
}

static void module_free(void *module)
{
    lk__timeout_state_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "labkit._lk_poll_py",
    .m_doc = "Poll labkit's C loop without waiting, and start and cancel its timers, "
             "without releasing the GIL (see loop_c/lk_poll_py.c, loop_c/lk_timers_py.c).",
    .m_size = sizeof(timeout_state),
    .m_methods = module_functions,
    .m_slots = module_slots,
    .m_traverse = lk__timeout_state_traverse,
    .m_clear = lk__timeout_state_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__lk_poll_py(void)
{
    return PyModuleDef_Init(&module_def);
}
