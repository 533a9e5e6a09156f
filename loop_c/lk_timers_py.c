/* lk_timers_py.c -- the loop's timers as CPython objects: a loop's timer
 * table, and the Timer type, without a Python frame and without releasing
 * the GIL.
 *
 * Why.  Every guarded call (a Timeout), every sleep(seconds) and every wait
 * with a timeout starts a timer and, far more often than not, cancels it
 * before it fires.  Done in Python (labkit/_loop.py before) that was a
 * Loop.timer frame, a Timer.__init__ frame, a Timer.cancel frame, and two
 * cffi calls, each of which releases and retakes the GIL: callgrind counted
 * ~19,700 instructions for a Timeout start + cancel.  Here a start is one
 * builtin call and a cancel another.
 *
 * What lives where.  The heap (deadlines, ids, quarantine) stays in the C
 * loop (lk_timer_heap.c); this file calls lk_timer_start/lk_timer_cancel
 * through the addresses cffi gives (as lk_poll_py.c calls lk_poll), so
 * there is one timer implementation.  A C timer's id is a small slot number,
 * so the table is an array indexed by id: entry[id] is what fires when that
 * id fires -- a Timer (here), a Timeout (lk_timeout_py.c, which arms and
 * disarms through lk_timers_py.h, with no Timer object of its own) or a
 * greenlet to switch into (switch_after: sleep(seconds)'s timer, which
 * needs neither an object nor a callback of its own).  The
 * table owns a reference to each pending entry; an entry is *pending*
 * exactly while the table holds it under its id.  Loop.poll asks take(id)
 * for the (callback, args) of each id that fired.  The C loop quarantines a
 * fired id until the next poll, so a cancel after the firing never finds a
 * newer timer under the same id (see lk_timer_heap.c).
 *
 * The table holds the lk_loop pointer as a borrowed address: Loop.close()
 * calls table.close() before it frees the loop, after which start raises
 * RuntimeError, cancel does nothing and no entry is pending.  Everything
 * here runs on the loop's thread with the GIL held (labkit refuses
 * free-threaded CPython).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "lk_loop.h"
#include "lk_timers_py.h"

typedef int32_t (*lk_timer_start_fn)(lk_loop *loop, int64_t delay_ns);
typedef int (*lk_timer_cancel_fn)(lk_loop *loop, int32_t id);

/* Durations past this many seconds (~146 years) mean "never": they are
 * clamped to LK__NEVER_NS instead of overflowing int64 (as _loop.py did). */
#define LK__NEVER_NS      ((int64_t)1 << 62)
#define LK__NEVER_SECONDS 4611686018.427387904

struct lk__timer_table {
    PyObject_HEAD
    lk_timer_start_fn start;
    lk_timer_cancel_fn cancel;
    lk_loop *loop;            /* NULL once closed */
    PyObject **entries;       /* id -> pending Timer/Timeout/greenlet (owned), or NULL */
    uint8_t *flags;           /* id -> LK__UNREFERENCED | LK__SWITCH, for a pending entry */
    Py_ssize_t capacity;      /* of both arrays */
    Py_ssize_t pending;       /* non-NULL entries */
    Py_ssize_t pending_unreferenced;
};
typedef struct lk__timer_table TimerTable;

/* flags[id] of a pending entry: */
#define LK__UNREFERENCED 1    /* it does not keep the loop alive (ref=False) */
#define LK__SWITCH       2    /* a greenlet: switch into it, with no value */

typedef struct {
    PyObject_HEAD
    TimerTable *table;
    PyObject *callback;
    PyObject *args;           /* a tuple */
    int32_t id;
    char ref;                 /* keeps the loop alive (gevent's ref) */
} Timer;

static PyTypeObject Timer_Type;
static PyTypeObject TimerTable_Type;

/* ------------------------------------------------- the table, for C callers */

int lk__table_check(PyObject *obj)
{
    return Py_TYPE(obj) == &TimerTable_Type;
}

static int table_grow(TimerTable *table, int32_t id)
{
    Py_ssize_t capacity = table->capacity ? table->capacity : 64;
    while (capacity <= id)
        capacity *= 2;
    PyObject **entries = PyMem_Realloc(table->entries, capacity * sizeof *entries);
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table->entries = entries;
    uint8_t *flags = PyMem_Realloc(table->flags, capacity);
    if (flags == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table->flags = flags;
    memset(entries + table->capacity, 0, (capacity - table->capacity) * sizeof *entries);
    memset(flags + table->capacity, 0, capacity - table->capacity);
    table->capacity = capacity;
    return 0;
}

/* Arm a timer for `entry` with `flags` (LK__UNREFERENCED, LK__SWITCH). */
static int32_t table_arm(TimerTable *table, int64_t delay_ns, PyObject *entry, uint8_t flags)
{
    if (table->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the loop is closed");
        return -1;
    }
    int32_t id = table->start(table->loop, delay_ns);
    if (id < 0) {
        errno = -id;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (id >= table->capacity && table_grow(table, id) < 0) {
        table->cancel(table->loop, id);
        return -1;
    }
    /* entries[id] is NULL: the C loop hands out an id only when no timer
     * holds it, and its last entry was taken or disarmed then. */
    Py_INCREF(entry);
    table->entries[id] = entry;
    table->flags[id] = flags;
    table->pending++;
    table->pending_unreferenced += flags & LK__UNREFERENCED;
    return id;
}

int32_t lk__table_arm(TimerTable *table, int64_t delay_ns, PyObject *entry, int referenced)
{
    return table_arm(table, delay_ns, entry, referenced ? 0 : LK__UNREFERENCED);
}

int lk__table_holds(TimerTable *table, int32_t id, PyObject *entry)
{
    return id >= 0 && id < table->capacity && table->entries[id] == entry;
}

/* Forget entries[id] (pending); the caller takes over the reference. */
static PyObject *table_forget(TimerTable *table, int32_t id)
{
    PyObject *entry = table->entries[id];
    table->entries[id] = NULL;
    table->pending--;
    table->pending_unreferenced -= table->flags[id] & LK__UNREFERENCED;
    table->flags[id] = 0;
    return entry;
}

int lk__table_disarm(TimerTable *table, int32_t id, PyObject *entry)
{
    if (!lk__table_holds(table, id, entry))
        return 0;
    table_forget(table, id);
    if (table->loop != NULL)
        table->cancel(table->loop, id);
    Py_DECREF(entry);     /* the caller owns another reference */
    return 1;
}

/* Whether the entry pending under id keeps the loop alive. */
static void table_set_referenced(TimerTable *table, int32_t id, int referenced)
{
    uint8_t was = table->flags[id] & LK__UNREFERENCED;
    table->pending_unreferenced += !referenced - was;
    table->flags[id] = (uint8_t)((table->flags[id] & ~LK__UNREFERENCED)
                                 | (referenced ? 0 : LK__UNREFERENCED));
}

/* ------------------------------------------------------------------ Timer */

/* (t->table is NULL only after the collector cleared t, tp_clear, while
 * something in the same dead cycle -- a __del__ -- could still reach it:
 * such a timer is inactive, and every method below is a no-op on it.) */
static int timer_is_active(Timer *t)
{
    return t->table != NULL && lk__table_holds(t->table, t->id, (PyObject *)t);
}

static PyObject *Timer_cancel(Timer *t, PyObject *unused)
{
    (void)unused;
    if (t->table != NULL)
        lk__table_disarm(t->table, t->id, (PyObject *)t);
    Py_RETURN_NONE;
}

static PyObject *Timer_get_active(Timer *t, void *closure)
{
    (void)closure;
    return PyBool_FromLong(timer_is_active(t));
}

static PyObject *Timer_get_ref(Timer *t, void *closure)
{
    (void)closure;
    return PyBool_FromLong(t->ref);
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
    t->ref = (char)truth;
    if (timer_is_active(t))
        table_set_referenced(t->table, t->id, truth);
    return 0;
}

static PyObject *Timer_repr(Timer *t)
{
    if (t->callback == NULL)
        return PyUnicode_FromFormat("<Timer id=%d inactive>", (int)t->id);
    return PyUnicode_FromFormat("<Timer id=%d %s callback=%R>", (int)t->id,
                                timer_is_active(t) ? "active" : "inactive", t->callback);
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

int64_t lk__delay_ns_of(PyObject *seconds)
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
    int64_t delay_ns = lk__delay_ns_of(args[0]);
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
    t->ref = 1;
    PyObject_GC_Track(t);

    int32_t id = lk__table_arm(table, delay_ns, (PyObject *)t, 1);
    if (id < 0) {
        Py_DECREF(t);
        return NULL;
    }
    t->id = id;
    return (PyObject *)t;
}

/* ------------------------------------------- greenlets as entries (sleep) */

/* greenlet.greenlet, and the interned name "switch": looked up at the first
 * switch_after (greenlet's type is static, one per process; labkit runs
 * with the GIL). */
static PyTypeObject *greenlet_type;
static PyObject *str_switch;

static int know_greenlet(void)
{
    if (greenlet_type != NULL)
        return 0;
    PyObject *module = PyImport_ImportModule("greenlet");
    PyObject *type = module ? PyObject_GetAttrString(module, "greenlet") : NULL;
    Py_XDECREF(module);
    if (type == NULL)
        return -1;
    if (!PyType_Check(type)) {
        Py_DECREF(type);
        PyErr_SetString(PyExc_ImportError, "greenlet.greenlet is not a type");
        return -1;
    }
    str_switch = PyUnicode_InternFromString("switch");
    if (str_switch == NULL) {
        Py_DECREF(type);
        return -1;
    }
    greenlet_type = (PyTypeObject *)type;
    return 0;
}

/* switch_after(seconds, g) -> id: arm a timer whose entry is greenlet g
 * itself: when it fires, g.switch() runs (no value).  What sleep(seconds)
 * parks on: no Timer object and no bound g.switch while it waits -- two
 * allocations and two objects the collector walks per sleeping greenlet
 * fewer; a million sleepers hold nothing in the table but their greenlets. */
static PyObject *TimerTable_switch_after(TimerTable *table, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "switch_after() takes seconds and a greenlet (%zd given)",
                     nargs);
        return NULL;
    }
    if (know_greenlet() < 0)
        return NULL;
    PyObject *g = args[1];
    if (!PyObject_TypeCheck(g, greenlet_type)) {
        PyErr_Format(PyExc_TypeError, "switch_after(): g must be a greenlet, not %.100s",
                     Py_TYPE(g)->tp_name);
        return NULL;
    }
    int64_t delay_ns = lk__delay_ns_of(args[0]);
    if (delay_ns < 0)
        return NULL;
    int32_t id = table_arm(table, delay_ns, g, LK__SWITCH);
    if (id < 0)
        return NULL;
    return PyLong_FromLong(id);
}

/* cancel(id, entry) -> bool: disarm the timer `id` if `entry` is what is
 * pending under it (switch_after's greenlet); False if it fired or was
 * cancelled already -- never someone else's timer that reuses the id. */
static PyObject *TimerTable_cancel(TimerTable *table, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "cancel() takes an id and an entry (%zd given)", nargs);
        return NULL;
    }
    long id = PyLong_AsLong(args[0]);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id < 0 || id > INT32_MAX)
        Py_RETURN_FALSE;
    PyObject *entry = args[1];
    if (!lk__table_holds(table, (int32_t)id, entry))
        Py_RETURN_FALSE;
    /* the table's reference goes; the caller's (args[1]) outlives this call */
    lk__table_disarm(table, (int32_t)id, entry);
    Py_RETURN_TRUE;
}

/* take(id) -> (callback, args) or None: the C timer `id` fired; forget its
 * entry and say what to run (None: it was cancelled after it fired). */
static PyObject *TimerTable_take(TimerTable *table, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id < 0 || id >= table->capacity || table->entries[id] == NULL)
        Py_RETURN_NONE;
    uint8_t flags = table->flags[id];
    PyObject *entry = table_forget(table, (int32_t)id);
    PyObject *pair;
    if (flags & LK__SWITCH) {
        /* (g.switch, ()): the bound method is made now, not while g sleeps */
        PyObject *switch_ = PyObject_GetAttr(entry, str_switch);
        pair = switch_ ? Py_BuildValue("(N())", switch_) : NULL;
    } else if (Py_TYPE(entry) == &Timer_Type) {
        Timer *t = (Timer *)entry;
        pair = PyTuple_Pack(2, t->callback ? t->callback : Py_None,
                            t->args ? t->args : Py_None);
    } else {
        pair = lk__timeout_fired(entry);
    }
    Py_DECREF(entry);
    return pair;
}

/* Drop every pending entry (the loop is closing). */
static void table_drop_entries(TimerTable *table)
{
    for (Py_ssize_t id = 0; id < table->capacity; id++) {
        if (table->entries[id] != NULL) {
            PyObject *entry = table_forget(table, (int32_t)id);
            Py_DECREF(entry);
        }
    }
}

/* close(): the loop is about to be freed; start refuses from now on. */
static PyObject *TimerTable_close(TimerTable *table, PyObject *unused)
{
    (void)unused;
    table->loop = NULL;
    table_drop_entries(table);
    Py_RETURN_NONE;
}

static PyObject *TimerTable_get_pending(TimerTable *table, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(table->pending);
}

static PyObject *TimerTable_get_referenced(TimerTable *table, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(table->pending - table->pending_unreferenced);
}

static int TimerTable_traverse(TimerTable *table, visitproc visit, void *arg)
{
    for (Py_ssize_t id = 0; id < table->capacity; id++)
        Py_VISIT(table->entries[id]);
    return 0;
}

static int TimerTable_clear(TimerTable *table)
{
    if (table->entries != NULL)
        table_drop_entries(table);
    return 0;
}

static void TimerTable_dealloc(TimerTable *table)
{
    PyObject_GC_UnTrack(table);
    TimerTable_clear(table);
    PyMem_Free(table->entries);
    PyMem_Free(table->flags);
    PyObject_GC_Del(table);
}

static PyMethodDef TimerTable_methods[] = {
    {"start", (PyCFunction)(void (*)(void))TimerTable_start, METH_FASTCALL,
     "start(seconds, callback, *args) -> Timer: run callback(*args) once, seconds "
     "from now (<= 0: at the next poll; NaN: ValueError; past ~146 years: never)."},
    {"switch_after", (PyCFunction)(void (*)(void))TimerTable_switch_after, METH_FASTCALL,
     "switch_after(seconds, g) -> id: g.switch() (no value) once, seconds from now; "
     "g, a greenlet, is itself the entry (no Timer object).  Disarm with cancel(id, g)."},
    {"cancel", (PyCFunction)(void (*)(void))TimerTable_cancel, METH_FASTCALL,
     "cancel(id, entry) -> bool: disarm timer `id` if `entry` is pending under it "
     "(True); False if it fired or was cancelled (harmless, any number of times)."},
    {"take", (PyCFunction)TimerTable_take, METH_O,
     "take(id) -> (callback, args) or None: the C timer `id` fired (lk_poll said "
     "so): forget what was pending under it and return what to run; None if "
     "nothing is (it was cancelled after it fired)."},
    {"close", (PyCFunction)TimerTable_close, METH_NOARGS,
     "The loop is about to be freed: start() raises RuntimeError from now on, "
     "cancel() does nothing, nothing is pending."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TimerTable_getset[] = {
    {"pending", (getter)TimerTable_get_pending, NULL, "how many timers are pending", NULL},
    {"referenced", (getter)TimerTable_get_referenced, NULL,
     "how many of them keep the loop alive (ref=True)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
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
    .tp_getset = TimerTable_getset,
};

static void *address_arg(PyObject *arg, const char *what)
{
    void *p = PyLong_Check(arg) ? PyLong_AsVoidPtr(arg) : NULL;
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "timer_table() needs the address of %s as a nonzero int",
                     what);
    return p;
}

/* timer_table(start, cancel, loop) -> TimerTable */
PyObject *lk__timer_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "timer_table() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    void *start = address_arg(args[0], "lk_timer_start");
    void *cancel = start ? address_arg(args[1], "lk_timer_cancel") : NULL;
    void *loop = cancel ? address_arg(args[2], "the loop") : NULL;
    if (loop == NULL)
        return NULL;
    TimerTable *table = PyObject_GC_New(TimerTable, &TimerTable_Type);
    if (table == NULL)
        return NULL;
    table->start = (lk_timer_start_fn)start;
    table->cancel = (lk_timer_cancel_fn)cancel;
    table->loop = loop;
    table->entries = NULL;
    table->flags = NULL;
    table->capacity = table->pending = table->pending_unreferenced = 0;
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
