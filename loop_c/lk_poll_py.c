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

static PyMethodDef module_functions[] = {
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
#define LK_GREENLET_SWITCH_NUM 6
#define LK_GREENLET_ACTIVE_NUM 10
#define LK_GREENLET_GET_PARENT_NUM 11
typedef int (*lk_greenlet_active_fn)(PyObject *);
static lk_greenlet_active_fn greenlet_active;
typedef PyObject *(*lk_greenlet_switch_fn)(PyObject *, PyObject *, PyObject *);
typedef PyObject *(*lk_greenlet_get_parent_fn)(PyObject *);
static lk_greenlet_switch_fn greenlet_switch;
static lk_greenlet_get_parent_fn greenlet_get_parent;
static PyTypeObject *switch_type;   /* type of a bound greenlet.switch */
static PyMethodDef *switch_ml;      /* its method definition */

typedef struct {
    PyObject_HEAD
    PyObject *ready;          /* the hub's deque */
    PyObject *popleft;        /* ready.popleft */
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
    Passes *self = (Passes *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    self->ready = Py_NewRef(ready);
    self->popleft = popleft;
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
    Py_VISIT(self->on_error);
    Py_VISIT(self->running);
    Py_VISIT(self->tr_pass);
    return 0;
}

static int Passes_clear(Passes *self)
{
    Py_CLEAR(self->ready);
    Py_CLEAR(self->popleft);
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
