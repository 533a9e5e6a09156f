/* lk_timers_py.c -- the loop's timers as CPython objects: start, cancel and
 * the id -> Timer map, without a Python frame and without releasing the GIL.
 *
 * Why.  Every guarded call (a Timeout), every sleep(seconds) and every wait
 * with a timeout starts a timer and, far more often than not, cancels it
 * before it fires.  Done in Python (labkit/_loop.py before) that was a
 * Loop.timer frame, a Timer.__init__ frame, a Timer.cancel frame, and two
 * cffi calls, each of which releases and retakes the GIL: callgrind counted
 * ~19,700 instructions for a Timeout start + cancel, ~5,000 of them in those
 * layers.  Here a start is one builtin call and a cancel another.
 *
 * What lives where.  The heap (deadlines, ids, quarantine) stays in the C
 * loop (lk_timer_heap.c); this file calls lk_timer_start/lk_timer_cancel
 * through the addresses cffi gives (as lk_poll_py.c calls lk_poll), so
 * there is one timer implementation.  The id -> Timer map is a plain dict
 * that labkit/_loop.py shares (Loop._timers): Loop.poll pops fired ids from
 * it and calls ``t.callback(*t.args)``.  A Timer is *active* while the map
 * holds it under its id; the C loop quarantines a fired id until the next
 * poll, so a cancel after the firing never finds a newer timer under the
 * same id (see lk_timer_heap.c).
 *
 * The table holds the lk_loop pointer as a borrowed address: Loop.close()
 * calls table.close() before it frees the loop, after which start raises
 * RuntimeError and cancel does nothing.  Everything here runs on the loop's
 * thread with the GIL held (labkit refuses free-threaded CPython).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>

#include "lk_loop.h"
#include "lk_timers_py.h"

typedef int32_t (*lk_timer_start_fn)(lk_loop *loop, int64_t delay_ns);
typedef int (*lk_timer_cancel_fn)(lk_loop *loop, int32_t id);

/* Durations past this many seconds (~146 years) mean "never": they are
 * clamped to LK__NEVER_NS instead of overflowing int64 (as _loop.py did). */
#define LK__NEVER_NS      ((int64_t)1 << 62)
#define LK__NEVER_SECONDS 4611686018.427387904

typedef struct {
    PyObject_HEAD
    lk_timer_start_fn start;
    lk_timer_cancel_fn cancel;
    lk_loop *loop;            /* NULL once closed */
    PyObject *timers;         /* dict: id (int) -> Timer; Loop._timers */
    PyObject *unreferenced;   /* set of Timers started with ref=False */
} TimerTable;

typedef struct {
    PyObject_HEAD
    TimerTable *table;
    PyObject *callback;
    PyObject *args;           /* a tuple */
    int32_t id;
} Timer;

static PyTypeObject Timer_Type;
static PyTypeObject TimerTable_Type;

/* ------------------------------------------------------------------ Timer */

/* The map's entry for this timer's id is this timer: it is pending.
 * (t->table is NULL only after the collector cleared t, tp_clear, while
 * something in the same dead cycle -- a __del__ -- could still reach it:
 * such a timer is inactive, and every method below is a no-op on it.) */
static int timer_is_active(Timer *t)
{
    if (t->table == NULL)
        return 0;
    PyObject *key = PyLong_FromLong(t->id);
    if (key == NULL)
        return -1;
    PyObject *cur = PyDict_GetItemWithError(t->table->timers, key);   /* borrowed */
    Py_DECREF(key);
    if (cur == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return cur == (PyObject *)t;
}

static PyObject *Timer_cancel(Timer *t, PyObject *unused)
{
    (void)unused;
    TimerTable *table = t->table;
    if (table == NULL)
        Py_RETURN_NONE;
    PyObject *key = PyLong_FromLong(t->id);
    if (key == NULL)
        return NULL;
    PyObject *cur = PyDict_GetItemWithError(table->timers, key);
    if (cur == (PyObject *)t) {
        if (PyDict_DelItem(table->timers, key) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        if (table->loop != NULL)
            table->cancel(table->loop, t->id);
    }
    Py_DECREF(key);
    if (cur == NULL && PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Timer_get_active(Timer *t, void *closure)
{
    (void)closure;
    int active = timer_is_active(t);
    if (active < 0)
        return NULL;
    return PyBool_FromLong(active);
}

static PyObject *Timer_get_ref(Timer *t, void *closure)
{
    (void)closure;
    if (t->table == NULL)
        Py_RETURN_TRUE;
    int contains = PySet_Contains(t->table->unreferenced, (PyObject *)t);
    if (contains < 0)
        return NULL;
    return PyBool_FromLong(!contains);
}

static int Timer_set_ref(Timer *t, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete ref");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    if (t->table == NULL)
        return 0;
    if (truth)
        return PySet_Discard(t->table->unreferenced, (PyObject *)t) < 0 ? -1 : 0;
    return PySet_Add(t->table->unreferenced, (PyObject *)t);
}

static PyObject *Timer_repr(Timer *t)
{
    int active = timer_is_active(t);
    if (active < 0)
        return NULL;
    if (t->callback == NULL)
        return PyUnicode_FromFormat("<Timer id=%d inactive>", (int)t->id);
    return PyUnicode_FromFormat("<Timer id=%d %s callback=%R>", (int)t->id,
                                active ? "active" : "inactive", t->callback);
}

static int Timer_traverse(Timer *t, visitproc visit, void *arg)
{
    Py_VISIT(t->table);
    Py_VISIT(t->callback);
    Py_VISIT(t->args);
    return 0;
}

static int Timer_clear(Timer *t)
{
    Py_CLEAR(t->table);
    Py_CLEAR(t->callback);
    Py_CLEAR(t->args);
    return 0;
}

static void Timer_dealloc(Timer *t)
{
    PyObject_GC_UnTrack(t);
    Timer_clear(t);
    PyObject_GC_Del(t);
}

static PyMethodDef Timer_methods[] = {
    {"cancel", (PyCFunction)Timer_cancel, METH_NOARGS,
     "Disarm; harmless if the timer already fired or was cancelled."},
    {"stop", (PyCFunction)Timer_cancel, METH_NOARGS, "gevent's name for cancel()."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Timer_members[] = {
    {"id", T_INT, offsetof(Timer, id), READONLY, "the C loop's timer id"},
    {"callback", T_OBJECT, offsetof(Timer, callback), READONLY, "what runs when it fires"},
    {"args", T_OBJECT, offsetof(Timer, args), READONLY, "the callback's arguments"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Timer_getset[] = {
    {"active", (getter)Timer_get_active, NULL, "True until the timer fires or is cancelled.", NULL},
    {"ref", (getter)Timer_get_ref, (setter)Timer_set_ref,
     "Whether this timer keeps the loop alive (default True).  An unreferenced "
     "timer still fires, but a hub whose only pending work is unreferenced "
     "timers declares LoopExit (gevent's ref=False).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Timer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "labkit._lk_poll_py.Timer",
    .tp_basicsize = sizeof(Timer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A one-shot timer: callback(*args) runs once, from the loop's thread.  "
              "Made by Loop.timer / Loop.start_timer; cancel() may be called any number "
              "of times, also after it fired.",
    .tp_dealloc = (destructor)Timer_dealloc,
    .tp_traverse = (traverseproc)Timer_traverse,
    .tp_clear = (inquiry)Timer_clear,
    .tp_repr = (reprfunc)Timer_repr,
    .tp_methods = Timer_methods,
    .tp_members = Timer_members,
    .tp_getset = Timer_getset,
};

/* ------------------------------------------------------------- TimerTable */

/* seconds (a real number) -> delay in ns, clamped to [0, LK__NEVER_NS];
 * -1 with an exception set for NaN or a non-number. */
static int64_t delay_ns_of(PyObject *seconds)
{
    if (PyLong_CheckExact(seconds)) {
        int overflow;
        long long s = PyLong_AsLongLongAndOverflow(seconds, &overflow);
        if (s == -1 && PyErr_Occurred())
            return -1;
        if (overflow > 0 || s >= (long long)LK__NEVER_SECONDS)
            return LK__NEVER_NS;
        if (overflow < 0 || s <= 0)
            return 0;
        return (int64_t)s * 1000000000;
    }
    double d;
    if (PyFloat_CheckExact(seconds)) {
        d = PyFloat_AS_DOUBLE(seconds);
    } else {
        if (!PyNumber_Check(seconds)) {
            PyErr_Format(PyExc_TypeError, "seconds must be a number, not %.100s",
                         Py_TYPE(seconds)->tp_name);
            return -1;
        }
        d = PyFloat_AsDouble(seconds);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
    }
    if (d != d) {
        PyErr_SetString(PyExc_ValueError, "seconds must not be NaN");
        return -1;
    }
    if (d >= LK__NEVER_SECONDS)
        return LK__NEVER_NS;
    if (d <= 0)
        return 0;
    return (int64_t)(d * 1e9);    /* truncates, as int() did */
}

/* start(seconds, callback, *args) -> Timer */
static PyObject *TimerTable_start(TimerTable *table, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError,
                     "start_timer() takes seconds, callback and *args (%zd given)", nargs);
        return NULL;
    }
    if (table->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the loop is closed");
        return NULL;
    }
    int64_t delay_ns = delay_ns_of(args[0]);
    if (delay_ns < 0)
        return NULL;
    PyObject *callback = args[1];
    if (!PyCallable_Check(callback)) {
        PyErr_Format(PyExc_TypeError, "callback must be callable, not %.100s",
                     Py_TYPE(callback)->tp_name);
        return NULL;
    }
    PyObject *cb_args = PyTuple_New(nargs - 2);
    if (cb_args == NULL)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(cb_args, i - 2, args[i]);
    }
    Timer *t = PyObject_GC_New(Timer, &Timer_Type);
    if (t == NULL) {
        Py_DECREF(cb_args);
        return NULL;
    }
    Py_INCREF(table);
    t->table = table;
    Py_INCREF(callback);
    t->callback = callback;
    t->args = cb_args;
    t->id = -1;
    PyObject_GC_Track(t);

    int32_t id = table->start(table->loop, delay_ns);
    if (id < 0) {
        Py_DECREF(t);
        errno = -id;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    t->id = id;
    PyObject *key = PyLong_FromLong(id);
    if (key == NULL || PyDict_SetItem(table->timers, key, (PyObject *)t) < 0) {
        Py_XDECREF(key);
        table->cancel(table->loop, id);
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(key);
    return (PyObject *)t;
}

/* close(): the loop is about to be freed; start refuses from now on. */
static PyObject *TimerTable_close(TimerTable *table, PyObject *unused)
{
    (void)unused;
    table->loop = NULL;
    Py_RETURN_NONE;
}

static int TimerTable_traverse(TimerTable *table, visitproc visit, void *arg)
{
    Py_VISIT(table->timers);
    Py_VISIT(table->unreferenced);
    return 0;
}

static int TimerTable_clear(TimerTable *table)
{
    Py_CLEAR(table->timers);
    Py_CLEAR(table->unreferenced);
    return 0;
}

static void TimerTable_dealloc(TimerTable *table)
{
    PyObject_GC_UnTrack(table);
    TimerTable_clear(table);
    PyObject_GC_Del(table);
}

static PyMethodDef TimerTable_methods[] = {
    {"start", (PyCFunction)(void (*)(void))TimerTable_start, METH_FASTCALL,
     "start(seconds, callback, *args) -> Timer: run callback(*args) once, seconds "
     "from now (<= 0: at the next poll; NaN: ValueError; past ~146 years: never)."},
    {"close", (PyCFunction)TimerTable_close, METH_NOARGS,
     "The loop is about to be freed: start() raises RuntimeError from now on, "
     "cancel() does nothing."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TimerTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "labkit._lk_poll_py.TimerTable",
    .tp_basicsize = sizeof(TimerTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One loop's timers (see loop_c/lk_timers_py.c); made by timer_table().",
    .tp_dealloc = (destructor)TimerTable_dealloc,
    .tp_traverse = (traverseproc)TimerTable_traverse,
    .tp_clear = (inquiry)TimerTable_clear,
    .tp_methods = TimerTable_methods,
};

static void *address_arg(PyObject *arg, const char *what)
{
    void *p = PyLong_Check(arg) ? PyLong_AsVoidPtr(arg) : NULL;
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "timer_table() needs the address of %s as a nonzero int",
                     what);
    return p;
}

/* timer_table(start, cancel, loop, timers, unreferenced) -> TimerTable */
PyObject *lk__timer_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "timer_table() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    void *start = address_arg(args[0], "lk_timer_start");
    void *cancel = start ? address_arg(args[1], "lk_timer_cancel") : NULL;
    void *loop = cancel ? address_arg(args[2], "the loop") : NULL;
    if (loop == NULL)
        return NULL;
    if (!PyDict_CheckExact(args[3]) || !PySet_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "timer_table(): timers must be a dict and "
                                         "unreferenced a set");
        return NULL;
    }
    TimerTable *table = PyObject_GC_New(TimerTable, &TimerTable_Type);
    if (table == NULL)
        return NULL;
    table->start = (lk_timer_start_fn)start;
    table->cancel = (lk_timer_cancel_fn)cancel;
    table->loop = loop;
    Py_INCREF(args[3]);
    table->timers = args[3];
    Py_INCREF(args[4]);
    table->unreferenced = args[4];
    PyObject_GC_Track(table);
    return (PyObject *)table;
}

int lk__timers_py_init(PyObject *module)
{
    if (PyType_Ready(&Timer_Type) < 0 || PyType_Ready(&TimerTable_Type) < 0)
        return -1;
    Py_INCREF(&Timer_Type);
    if (PyModule_AddObject(module, "Timer", (PyObject *)&Timer_Type) < 0) {
        Py_DECREF(&Timer_Type);
        return -1;
    }
    return 0;
}
