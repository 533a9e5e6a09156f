/* lk_timeout_py.c -- TimeoutBase: the C half of labkit.Timeout (gevent's
 * Timeout), part of labkit._lk_poll_py.
 *
 * Why.  A Timeout is started and cancelled around every guarded call, and
 * nearly always cancelled before it fires.  In Python a start + cancel was
 * four frames (start_new, __init__, start, cancel) around a Timer object,
 * ~10,400 instructions under callgrind, while uvloop's call_later + cancel
 * is ~5,500.  Here start_new, __init__, start, cancel/close, pending,
 * __enter__ and __exit__ are C, and a started Timeout is itself the entry
 * of its loop's timer table (lk_timers_py.h) under an int id: no Timer
 * object, no callback tuple.  What is not on the hot path stays in Python
 * (labkit/timeout.py): _on_expiration (gevent's hook, which subclasses
 * override), __str__, __repr__, __lt__.
 *
 * Semantics are gevent's, as labkit/timeout.py documents them.  Where a
 * subclass overrides __init__, start or cancel, the C code calls the
 * override (it looks the method up on the instance's type and takes the
 * fast path only when it finds its own).
 *
 * How it finds the loop: start() runs in the greenlet that starts it; the
 * hub is that greenlet's parent when it is a Hub (a spawned greenlet), else
 * get_hub(); the table is hub.loop._timer_table.  labkit/timeout.py hands
 * greenlet.getcurrent, Hub and get_hub over once, with
 * configure_timeouts(); they live in the module's state (per interpreter).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#include "lk_timers_py.h"
#include "lk_timeout_py.h"

typedef struct {
    PyBaseExceptionObject base;
    PyObject *seconds;        /* None or a real number */
    PyObject *exception;      /* None, False, a str, or what to throw */
    PyObject *greenlet;       /* while started: the greenlet to throw into */
    PyObject *throws;         /* while started: what to throw; NULL = self */
    lk__timer_table *table;   /* while started: the table it is armed in */
    int32_t id;               /* its timer id there */
    char ref;
    char one_shot;
} TimeoutObject;

static timeout_state *state_of(PyTypeObject *defining_class)
{
    return (timeout_state *)PyType_GetModuleState(defining_class);
}

static int timeout_is_pending(TimeoutObject *self)
{
    return self->table != NULL && lk__table_holds(self->table, self->id, (PyObject *)self);
}

/* Drop the started state (the timer itself is already disarmed or fired). */
static void timeout_forget(TimeoutObject *self)
{
    Py_CLEAR(self->greenlet);
    Py_CLEAR(self->throws);
    Py_CLEAR(self->table);
}

/* ---------------------------------------------------------------- set-up */

/* seconds as Timeout keeps it: None, a float (not NaN), an int, or what
 * labkit._park.check_seconds makes of anything else (TypeError for a
 * non-number or a bool, a float for a Fraction...).  New reference. */
static PyObject *checked_seconds(PyObject *seconds)
{
    if (seconds == Py_None || PyLong_CheckExact(seconds)) {
        Py_INCREF(seconds);
        return seconds;
    }
    if (PyFloat_CheckExact(seconds)) {
        double d = PyFloat_AS_DOUBLE(seconds);
        if (d != d) {
            PyErr_SetString(PyExc_ValueError, "seconds must not be NaN");
            return NULL;
        }
        Py_INCREF(seconds);
        return seconds;
    }
    PyObject *park = PyImport_ImportModule("labkit._park");
    if (park == NULL)
        return NULL;
    PyObject *checked = PyObject_CallMethod(park, "check_seconds", "O", seconds);
    Py_DECREF(park);
    return checked;
}

static int timeout_setup(TimeoutObject *self, PyObject *seconds, PyObject *exception,
                         int ref, int one_shot)
{
    PyObject *checked = checked_seconds(seconds);
    if (checked == NULL)
        return -1;
    Py_XSETREF(self->seconds, checked);
    Py_INCREF(exception);
    Py_XSETREF(self->exception, exception);
    self->ref = (char)ref;
    self->one_shot = (char)one_shot;
    return 0;
}

/* __init__(seconds=None, exception=None, ref=True, priority=-1, _one_shot=False) */
static int Timeout_init(TimeoutObject *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"seconds", "exception", "ref", "priority", "_one_shot", NULL};
    PyObject *seconds = Py_None, *exception = Py_None, *priority = NULL;
    int ref = 1, one_shot = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOpOp:Timeout", names, &seconds,
                                     &exception, &ref, &priority, &one_shot))
        return -1;
    /* BaseException.__init__(self): a Timeout's args are () */
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return -1;
    Py_XSETREF(self->base.args, empty);
    return timeout_setup(self, seconds, exception, ref, one_shot);
}

/* ------------------------------------------------------- start and cancel */

/* The timer table of the hub of the current greenlet; sets *current. */
static PyObject *current_table(timeout_state *st, PyObject **current)
{
    if (st->getcurrent == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "labkit._lk_poll_py.configure_timeouts() was not called");
        return NULL;
    }
    PyObject *g = PyObject_CallNoArgs(st->getcurrent);
    if (g == NULL)
        return NULL;
    /* A spawned greenlet's parent is its hub: skip the thread-local lookup. */
    PyObject *hub = PyObject_GetAttr(g, st->str_parent);
    if (hub == NULL) {
        Py_DECREF(g);
        return NULL;
    }
    if ((PyObject *)Py_TYPE(hub) != st->hub_type) {
        Py_DECREF(hub);
        hub = PyObject_CallNoArgs(st->get_hub);
        if (hub == NULL) {
            Py_DECREF(g);
            return NULL;
        }
    }
    PyObject *loop = PyObject_GetAttr(hub, st->str_loop);
    Py_DECREF(hub);
    PyObject *table = loop ? PyObject_GetAttr(loop, st->str_timer_table) : NULL;
    Py_XDECREF(loop);
    if (table != NULL && !lk__table_check(table)) {
        PyErr_SetString(PyExc_TypeError, "the hub's loop has no timer table");
        Py_CLEAR(table);
    }
    if (table == NULL) {
        Py_DECREF(g);
        return NULL;
    }
    *current = g;
    return table;
}

static int timeout_start(TimeoutObject *self, timeout_state *st)
{
    if (timeout_is_pending(self)) {
        PyErr_Format(PyExc_AssertionError, "%R is already started; cancel() it first", self);
        return -1;
    }
    PyObject *seconds = self->seconds;
    if (seconds == NULL || seconds == Py_None)
        return 0;
    int64_t delay_ns = lk__delay_ns_of(seconds);
    if (delay_ns < 0)
        return -1;
    PyObject *exc = self->exception;
    PyObject *throws = (exc == NULL || exc == Py_None || exc == Py_False || PyUnicode_Check(exc))
                       ? NULL : exc;
    PyObject *current;
    PyObject *table = current_table(st, &current);
    if (table == NULL)
        return -1;
    int32_t id = lk__table_arm((lk__timer_table *)table, delay_ns, (PyObject *)self, self->ref);
    if (id < 0) {
        Py_DECREF(current);
        Py_DECREF(table);
        return -1;
    }
    Py_XSETREF(self->table, (lk__timer_table *)table);
    self->id = id;
    Py_XSETREF(self->greenlet, current);
    Py_XINCREF(throws);
    Py_XSETREF(self->throws, throws);
    return 0;
}

static void timeout_cancel(TimeoutObject *self)
{
    if (self->table != NULL) {
        lk__table_disarm(self->table, self->id, (PyObject *)self);
        timeout_forget(self);
    }
}

/* Whether `name` on the instance's type is still TimeoutBase's own method
 * (`own`); if not, a subclass overrides it and we must call that. */
static int is_own(PyObject *self, PyObject *name, PyObject *own)
{
    return _PyType_Lookup(Py_TYPE(self), name) == own;
}

/* self.start(), the override if there is one: 0 or -1 */
static int call_start(PyObject *self, timeout_state *st)
{
    if (is_own(self, st->str_start, st->own_start))
        return timeout_start((TimeoutObject *)self, st);
    PyObject *r = PyObject_CallMethodNoArgs(self, st->str_start);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int no_arguments(const char *name, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", name);
        return -1;
    }
    return 0;
}

static PyObject *Timeout_start(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    if (no_arguments("start", nargs, kwnames) < 0)
        return NULL;
    if (timeout_start((TimeoutObject *)self, state_of(cls)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Timeout_cancel(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames)
{
    (void)cls;
    (void)args;
    if (no_arguments("cancel", nargs, kwnames) < 0)
        return NULL;
    timeout_cancel((TimeoutObject *)self);
    Py_RETURN_NONE;
}

static PyObject *Timeout_enter(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    if (no_arguments("__enter__", nargs, kwnames) < 0)
        return NULL;
    if (!timeout_is_pending((TimeoutObject *)self) && call_start(self, state_of(cls)) < 0)
        return NULL;
    Py_INCREF(self);
    return self;
}

/* __exit__(typ, value, tb): cancel; swallow our own exception if it is False */
static PyObject *Timeout_exit(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 3 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "__exit__() takes exactly 3 positional arguments");
        return NULL;
    }
    timeout_state *st = state_of(cls);
    if (is_own(self, st->str_cancel, st->own_cancel)) {
        timeout_cancel((TimeoutObject *)self);
    } else {
        PyObject *r = PyObject_CallMethodNoArgs(self, st->str_cancel);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    if (args[1] == self && ((TimeoutObject *)self)->exception == Py_False)
        Py_RETURN_TRUE;
    Py_RETURN_NONE;
}

/* start_new(timeout=None, exception=None, ref=True, _one_shot=False) */
static PyObject *Timeout_start_new(PyObject *type, PyTypeObject *cls, PyObject *const *args,
                                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *names[] = {"timeout", "exception", "ref", "_one_shot"};
    PyObject *values[4] = {Py_None, Py_None, Py_True, Py_False};
    if (nargs > 4) {
        PyErr_Format(PyExc_TypeError, "start_new() takes at most 4 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        values[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < 4; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                found = i;
                break;
            }
        }
        if (found < 0 || found < nargs) {
            PyErr_Format(PyExc_TypeError, found < 0
                         ? "start_new() got an unexpected keyword argument %R"
                         : "start_new() got multiple values for argument %R", key);
            return NULL;
        }
        values[found] = args[nargs + k];
    }
    timeout_state *st = state_of(cls);
    PyObject *timeout = values[0];
    if (PyObject_TypeCheck(timeout, (PyTypeObject *)st->timeout_type)) {
        if (!timeout_is_pending((TimeoutObject *)timeout) && call_start(timeout, st) < 0)
            return NULL;
        Py_INCREF(timeout);
        return timeout;
    }
    int one_shot = PyObject_IsTrue(values[3]);
    int ref = one_shot < 0 ? -1 : PyObject_IsTrue(values[2]);
    if (ref < 0)
        return NULL;
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *t;
    if (tp->tp_init == (initproc)Timeout_init && tp->tp_new == st->base_new) {
        /* cls(timeout, exception, ...) without parsing an argument tuple */
        t = tp->tp_new(tp, st->empty_tuple, NULL);
        if (t != NULL && timeout_setup((TimeoutObject *)t, timeout, values[1], ref, one_shot) < 0)
            Py_CLEAR(t);
    } else {
        /* Keywords only where they differ from the defaults: gevent's own
         * subclasses take (timeout, exception) or fewer. */
        PyObject *call_args[4] = {timeout, values[1], Py_False, Py_True};
        if (one_shot) {
            call_args[2] = ref ? Py_True : Py_False;
            t = PyObject_Vectorcall(type, call_args, 2, st->kw_ref_one_shot);
        } else if (ref) {
            t = PyObject_Vectorcall(type, call_args, 2, NULL);
        } else {
            t = PyObject_Vectorcall(type, call_args, 2, st->kw_ref);
        }
    }
    if (t == NULL)
        return NULL;
    if (call_start(t, st) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

static PyObject *Timeout_get_pending(TimeoutObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(timeout_is_pending(self));
}

/* The timer fired (take() found this Timeout under its id): what to run,
 * (self._on_expiration, (greenlet, throws)); the started state moves there. */
PyObject *lk__timeout_fired(PyObject *entry)
{
    TimeoutObject *self = (TimeoutObject *)entry;
    PyObject *hook = PyObject_GetAttrString(entry, "_on_expiration");
    if (hook == NULL) {
        timeout_forget(self);
        return NULL;
    }
    PyObject *pair = Py_BuildValue("(N(OO))", hook,
                                   self->greenlet ? self->greenlet : Py_None,
                                   self->throws ? self->throws : entry);
    timeout_forget(self);
    return pair;
}

/* ----------------------------------------------------- the type's plumbing */

static int Timeout_traverse(TimeoutObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->seconds);
    Py_VISIT(self->exception);
    Py_VISIT(self->greenlet);
    Py_VISIT(self->throws);
    Py_VISIT(self->table);
    return ((PyTypeObject *)PyExc_BaseException)->tp_traverse((PyObject *)self, visit, arg);
}

static int Timeout_clear(TimeoutObject *self)
{
    Py_CLEAR(self->seconds);
    Py_CLEAR(self->exception);
    timeout_forget(self);
    return ((PyTypeObject *)PyExc_BaseException)->tp_clear((PyObject *)self);
}

static void Timeout_dealloc(TimeoutObject *self)
{
    /* A started Timeout is never deallocated: its table holds it. */
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->seconds);
    Py_CLEAR(self->exception);
    timeout_forget(self);
    /* BaseException's dealloc untracks the object itself, and before 3.11
     * with the unchecked macro, which crashes on an object already
     * untracked: hand it over tracked, as CPython's subtype_dealloc does. */
    PyObject_GC_Track(self);
    ((PyTypeObject *)PyExc_BaseException)->tp_dealloc((PyObject *)self);
    Py_DECREF(tp);
}

#define METHOD_FLAGS (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef Timeout_methods[] = {
    {"start", (PyCFunction)(void (*)(void))Timeout_start, METHOD_FLAGS,
     "Arm the timer for the current greenlet (AssertionError if it is armed)."},
    {"cancel", (PyCFunction)(void (*)(void))Timeout_cancel, METHOD_FLAGS,
     "Disarm (harmless if it already fired or never started)."},
    {"close", (PyCFunction)(void (*)(void))Timeout_cancel, METHOD_FLAGS,
     "gevent's name for cancel()."},
    {"__enter__", (PyCFunction)(void (*)(void))Timeout_enter, METHOD_FLAGS,
     "Start unless pending; return self."},
    {"__exit__", (PyCFunction)(void (*)(void))Timeout_exit, METHOD_FLAGS,
     "Cancel; swallow this Timeout if its exception is False."},
    {"start_new", (PyCFunction)(void (*)(void))Timeout_start_new, METHOD_FLAGS | METH_CLASS,
     "start_new(timeout=None, exception=None, ref=True) -> Timeout: create and "
     "start one (a Timeout given as timeout: start it unless pending, return it)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Timeout_members[] = {
    {"seconds", T_OBJECT, offsetof(TimeoutObject, seconds), 0, "None: never fires"},
    {"exception", T_OBJECT, offsetof(TimeoutObject, exception), 0, "what it raises"},
    {"ref", T_BOOL, offsetof(TimeoutObject, ref), 0, "False: does not keep the loop alive"},
    {"_one_shot", T_BOOL, offsetof(TimeoutObject, one_shot), 0, "gevent's flag"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Timeout_getset[] = {
    {"pending", (getter)Timeout_get_pending, NULL, "True while the timer is armed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Timeout_slots[] = {
    {Py_tp_doc, "The C half of labkit.Timeout (see loop_c/lk_timeout_py.c)."},
    {Py_tp_init, Timeout_init},
    {Py_tp_traverse, Timeout_traverse},
    {Py_tp_clear, Timeout_clear},
    {Py_tp_dealloc, Timeout_dealloc},
    {Py_tp_methods, Timeout_methods},
    {Py_tp_members, Timeout_members},
    {Py_tp_getset, Timeout_getset},
    {0, NULL},
};

static PyType_Spec Timeout_spec = {
    .name = "labkit._lk_poll_py.TimeoutBase",
    .basicsize = sizeof(TimeoutObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Timeout_slots,
};

/* configure_timeouts(getcurrent, hub_type, get_hub) */
PyObject *lk__configure_timeouts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "configure_timeouts() takes 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (!PyCallable_Check(args[0]) || !PyType_Check(args[1]) || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure_timeouts(getcurrent, hub_type, get_hub): two callables "
                        "around a type");
        return NULL;
    }
    timeout_state *st = PyModule_GetState(module);
    Py_INCREF(args[0]);
    Py_XSETREF(st->getcurrent, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(st->hub_type, args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(st->get_hub, args[2]);
    Py_RETURN_NONE;
}

int lk__timeout_py_init(PyObject *module)
{
    timeout_state *st = PyModule_GetState(module);
    PyObject *type = PyType_FromModuleAndSpec(module, &Timeout_spec, PyExc_BaseException);
    if (type == NULL)
        return -1;
    st->timeout_type = type;
    st->base_new = ((PyTypeObject *)type)->tp_new;
    PyObject *dict = ((PyTypeObject *)type)->tp_dict;
    st->own_start = PyDict_GetItemString(dict, "start");
    st->own_cancel = PyDict_GetItemString(dict, "cancel");
    Py_XINCREF(st->own_start);
    Py_XINCREF(st->own_cancel);
    st->str_parent = PyUnicode_InternFromString("parent");
    st->str_loop = PyUnicode_InternFromString("loop");
    st->str_timer_table = PyUnicode_InternFromString("_timer_table");
    st->str_start = PyUnicode_InternFromString("start");
    st->str_cancel = PyUnicode_InternFromString("cancel");
    st->empty_tuple = PyTuple_New(0);
    st->kw_ref = Py_BuildValue("(s)", "ref");
    st->kw_ref_one_shot = Py_BuildValue("(ss)", "ref", "_one_shot");
    if (st->own_start == NULL || st->own_cancel == NULL || st->str_parent == NULL
        || st->str_loop == NULL || st->str_timer_table == NULL || st->str_start == NULL
        || st->str_cancel == NULL || st->empty_tuple == NULL || st->kw_ref == NULL
        || st->kw_ref_one_shot == NULL)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, "TimeoutBase", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

int lk__timeout_state_traverse(PyObject *module, visitproc visit, void *arg)
{
    timeout_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_VISIT(st->timeout_type);
    Py_VISIT(st->getcurrent);
    Py_VISIT(st->hub_type);
    Py_VISIT(st->get_hub);
    Py_VISIT(st->own_start);
    Py_VISIT(st->own_cancel);
    return 0;
}

int lk__timeout_state_clear(PyObject *module)
{
    timeout_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_CLEAR(st->timeout_type);
    Py_CLEAR(st->getcurrent);
    Py_CLEAR(st->hub_type);
    Py_CLEAR(st->get_hub);
    Py_CLEAR(st->own_start);
    Py_CLEAR(st->own_cancel);
    Py_CLEAR(st->str_parent);
    Py_CLEAR(st->str_loop);
    Py_CLEAR(st->str_timer_table);
    Py_CLEAR(st->str_start);
    Py_CLEAR(st->str_cancel);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->kw_ref);
    Py_CLEAR(st->kw_ref_one_shot);
    return 0;
}
