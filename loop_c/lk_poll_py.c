/* lk_poll_py.c -- labkit._lk_poll_py: calls into the C loop that keep the
 * GIL: a poll that does not wait (here), timer start and cancel
 * (lk_timers_py.c, whose Timer objects this module also exports), and the
 * C half of labkit.Timeout (lk_timeout_py.c, TimeoutBase).
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
    {"configure_timeouts", (PyCFunction)(void (*)(void))lk__configure_timeouts, METH_FASTCALL,
     "configure_timeouts(getcurrent, hub_type, get_hub): how TimeoutBase.start finds "
     "the current greenlet's hub (labkit/timeout.py calls it once; see "
     "loop_c/lk_timeout_py.c)."},
    {NULL, NULL, 0, NULL},
};

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
    return lk__timers_py_init(module) < 0 || lk__timeout_py_init(module) < 0 ? -1 : 0;
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
