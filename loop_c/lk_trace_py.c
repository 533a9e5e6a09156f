/* lk_trace_py.c -- labkit._lk_trace_py: write trace records without
 * leaving the GIL.
 *
 * Why a second extension module.  The hub's hooks write one record per
 * switch into a greenlet, so the cost of a record is added to every
 * switch.  Through cffi (labkit._lk_loop) a call to lk_trace_record costs
 * ~150-190 ns on the machine we measured, most of it cffi releasing the GIL before the call and
 * taking it back after -- for a function that runs ~20 ns.  cffi has no
 * per-function way to keep the GIL, and a cffi function cannot hand a
 * Python object back.  So this small module is plain CPython C API: one
 * builtin, record(kind, a, arg, b), called with METH_FASTCALL (no tuple
 * for the arguments) and never releasing the GIL.  It writes with the very
 * code lk_trace_record uses (lk__trace_write in lk_trace_ring.h), into the
 * ring that labkit._lk_loop allocated.
 *
 * How Python gets a writer for one ring (tracing/recorder.py):
 *
 *     ring = lib.lk_trace_new(capacity)                 # cffi, owns the ring
 *     record = _lk_trace_py.writer(int(ffi.cast("uintptr_t", ring)))
 *     record(lib.LK_TR_RESUME, id(g), lib.LK_WHY_READY, 0)
 *
 * writer() returns the builtin bound to the ring's address (its `self`),
 * the way a method is bound to its object, so a call passes exactly the
 * four arguments the hooks have.  The address is not a reference: the
 * recorder must unhook every writer before it frees the ring.
 *
 * The hooks' most frequent record, a greenlet's resume after a wait, has
 * builtins of their own that do the whole hook in one call (see "resume
 * records" below):
 *
 *     resume, resume_fd = _lk_trace_py.resumers(address, recorder.labels)
 *     resume(g, lib.LK_WHY_WAITER, "Event")       # a = id(g), b = labels[...]
 *     resume_fd(g, lib.LK_WHY_WAITER, fd, READ)   # b = labels[(fd, READ)]
 *
 * Contract: call these with the GIL held (any Python code does), from any
 * thread.  They raise OverflowError/TypeError for arguments that do not
 * fit the record's fields (resume: also whatever the label lookup raises,
 * e.g. TypeError for an unhashable label), and never anything else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "lk_trace_ring.h"

/* record(kind, a, arg, b): append one record to the ring `self` points to. */
static PyObject *record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "record() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    lk_trace *ring = (lk_trace *)PyLong_AsVoidPtr(self);
    unsigned long kind = PyLong_AsUnsignedLong(args[0]);
    long long a = PyLong_AsLongLong(args[1]);
    unsigned long arg = PyLong_AsUnsignedLong(args[2]);
    long long b = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())   /* one check for the four conversions */
        return NULL;
    if (kind > UINT32_MAX || arg > UINT32_MAX) {   /* the record's fields are 32-bit */
        PyErr_SetString(PyExc_OverflowError, "record(): kind and arg must fit in 32 bits");
        return NULL;
    }
    lk__trace_write(ring, lk_now_ns(), (uint32_t)kind, a, (uint32_t)arg, b);
    Py_RETURN_NONE;
}

static PyMethodDef record_def = {
    "record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
    "record(kind, a, arg, b): write one trace record into the bound ring.",
};

/* writer(address): the record builtin, bound to the ring at `address`. */
static PyObject *writer(PyObject *module, PyObject *address)
{
    (void)module;
    if (!PyLong_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "writer() takes the ring's address as an int");
        return NULL;
    }
    if (PyLong_AsVoidPtr(address) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "writer() needs a ring, not NULL");
        return NULL;
    }
    return PyCFunction_New(&record_def, address);
}

/* ------------------------------------------------------------ resume records
 *
 * The hooks' most frequent record is a greenlet's resume after a wait:
 * LK_TR_RESUME with a = id(g), arg = why (LK_WHY_*), b = the number of
 * the label it waited on in the recorder's label table (a dict subclass
 * whose __missing__ numbers new labels, tracing/recorder.py).  It used to
 * be a Python helper,
 *     record(LK_TR_RESUME, id(g), why, tracer.labels[label])
 * a frame, two global and two attribute lookups and two builtin calls
 * around a ~60 ns write: ~250 ns per wake-up, the larger part of the
 * flight recorder's cost (issue 20).  Here it is one C call:
 *
 *   resume(g, why, label)         labels[label]: a known label is read with
 *                                 PyDict_GetItemWithError (no Python code
 *                                 runs); a new one goes through
 *                                 PyObject_GetItem, i.e. __missing__;
 *   resume_fd(g, why, fd, event)  the label (fd, event) of an fd wait,
 *                                 without building or hashing that tuple:
 *                                 a table indexed by fd remembers each
 *                                 (fd, event)'s number after its first
 *                                 lookup.  The tuple-keyed lookup was most
 *                                 of resume()'s cost (~370 of ~540
 *                                 instructions under callgrind).
 *
 * Both are bound (like record) to a resume_state in a capsule: the ring,
 * a reference to the labels dict, the fd table.  The fd table relies on
 * the label table's one rule: a label's number never changes (labels are
 * only ever added). */

typedef struct {
    lk_trace *ring;
    PyObject *labels;        /* strong reference; a dict (subclass)        */
    uint32_t *fd_labels;     /* [fd * 4 + event]: label number, 0 unknown   */
    size_t    fd_slots;      /* entries in fd_labels                       */
} resume_state;

/* Beyond this fd, (fd, event) labels are looked up each time, uncached:
 * the table stays below 4 MiB whatever fd numbers a process reaches. */
#define FD_TABLE_MAX_FD (1 << 18)

static void resume_state_free(PyObject *capsule)
{
    resume_state *st = PyCapsule_GetPointer(capsule, NULL);
    if (st == NULL)
        return;
    Py_XDECREF(st->labels);
    PyMem_Free(st->fd_labels);
    PyMem_Free(st);
}

static inline resume_state *state_of(PyObject *self)
{
    /* self is always our capsule (PyCFunction_New below): no checks. */
    return (resume_state *)PyCapsule_GetPointer(self, NULL);
}

/* labels[key] as a C integer: -1 with an exception set on failure. */
static long long label_number(PyObject *labels, PyObject *key)
{
    long long number;
    PyObject *found = PyDict_GetItemWithError(labels, key);   /* borrowed */
    if (found != NULL)
        return PyLong_AsLongLong(found);
    if (PyErr_Occurred())   /* an unhashable label */
        return -1;
    found = PyObject_GetItem(labels, key);   /* __missing__ numbers it */
    if (found == NULL)
        return -1;
    number = PyLong_AsLongLong(found);
    Py_DECREF(found);
    return number;
}

static int check_why(PyObject *obj, uint32_t *why, const char *who)
{
    unsigned long value = PyLong_AsUnsignedLong(obj);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (value > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s(): why must fit in 32 bits", who);
        return -1;
    }
    *why = (uint32_t)value;
    return 0;
}

/* resume(g, why, label): see above. */
static PyObject *resume(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "resume() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    resume_state *st = state_of(self);
    uint32_t why;
    if (check_why(args[1], &why, "resume") < 0)
        return NULL;
    long long number = label_number(st->labels, args[2]);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    /* id(g): CPython's id() is the object's address. */
    lk__trace_write(st->ring, lk_now_ns(), LK_TR_RESUME, (int64_t)(intptr_t)args[0],
                    why, number);
    Py_RETURN_NONE;
}

/* The number of label (fd, event) (the objects the caller passed), from
 * the fd table when it has it. */
static long long fd_label_number(resume_state *st, PyObject *fd_obj, PyObject *event_obj)
{
    size_t slot = SIZE_MAX;
    long fd = PyLong_Check(fd_obj) ? PyLong_AsLong(fd_obj) : -1;
    long event = PyLong_Check(event_obj) ? PyLong_AsLong(event_obj) : -1;
    if (PyErr_Occurred())
        PyErr_Clear();   /* a huge int: not cached; the lookup below decides */
    else if (fd >= 0 && fd < FD_TABLE_MAX_FD && event >= 0 && event < 4)
        slot = (size_t)fd * 4 + (size_t)event;
    if (slot < st->fd_slots && st->fd_labels[slot] != 0)
        return st->fd_labels[slot];

    PyObject *key = PyTuple_Pack(2, fd_obj, event_obj);
    if (key == NULL)
        return -1;
    long long number = label_number(st->labels, key);
    Py_DECREF(key);
    if (number == -1 && PyErr_Occurred())
        return -1;
    if (slot != SIZE_MAX && number > 0 && number <= UINT32_MAX) {
        if (slot >= st->fd_slots) {   /* grow to a power of two past slot */
            size_t slots = st->fd_slots ? st->fd_slots : 256;
            while (slots <= slot)
                slots *= 2;
            uint32_t *table = PyMem_Realloc(st->fd_labels, slots * sizeof *table);
            if (table == NULL)
                return number;   /* uncached, still right */
            memset(table + st->fd_slots, 0, (slots - st->fd_slots) * sizeof *table);
            st->fd_labels = table;
            st->fd_slots = slots;
        }
        st->fd_labels[slot] = (uint32_t)number;
    }
    return number;
}

/* resume_fd(g, why, fd, event): resume(g, why, (fd, event)), see above. */
static PyObject *resume_fd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "resume_fd() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    resume_state *st = state_of(self);
    uint32_t why;
    if (check_why(args[1], &why, "resume_fd") < 0)
        return NULL;
    long long number = fd_label_number(st, args[2], args[3]);
    if (number == -1 && PyErr_Occurred())
        return NULL;
    lk__trace_write(st->ring, lk_now_ns(), LK_TR_RESUME, (int64_t)(intptr_t)args[0],
                    why, number);
    Py_RETURN_NONE;
}

static PyMethodDef resume_def = {
    "resume", (PyCFunction)(void (*)(void))resume, METH_FASTCALL,
    "resume(g, why, label): write the resume record of greenlet g (a = id(g), "
    "arg = why, b = labels[label]) into the bound ring.",
};

static PyMethodDef resume_fd_def = {
    "resume_fd", (PyCFunction)(void (*)(void))resume_fd, METH_FASTCALL,
    "resume_fd(g, why, fd, event): resume(g, why, (fd, event)) without building "
    "the tuple once (fd, event)'s label number is known.",
};

/* resumers(address, labels) -> (resume, resume_fd), bound to the ring at
 * `address` and to the label table `labels` (kept alive by them). */
static PyObject *resumers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "resumers() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *address = args[0], *labels = args[1];
    if (!PyLong_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "resumers() takes the ring's address as an int");
        return NULL;
    }
    lk_trace *ring = (lk_trace *)PyLong_AsVoidPtr(address);
    if (ring == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "resumers() needs a ring, not NULL");
        return NULL;
    }
    if (!PyDict_Check(labels)) {
        PyErr_Format(PyExc_TypeError, "resumers(): labels must be a dict, not %.100s",
                     Py_TYPE(labels)->tp_name);
        return NULL;
    }
    PyObject *result = NULL, *capsule = NULL, *plain = NULL, *fd = NULL;
    resume_state *st = PyMem_Calloc(1, sizeof *st);
    if (st == NULL)
        return PyErr_NoMemory();
    st->ring = ring;
    Py_INCREF(labels);
    st->labels = labels;
    capsule = PyCapsule_New(st, NULL, resume_state_free);
    if (capsule == NULL) {
        Py_DECREF(labels);
        PyMem_Free(st);
        return NULL;
    }
    plain = PyCFunction_New(&resume_def, capsule);
    fd = PyCFunction_New(&resume_fd_def, capsule);
    if (plain != NULL && fd != NULL)
        result = PyTuple_Pack(2, plain, fd);
    Py_XDECREF(plain);
    Py_XDECREF(fd);
    Py_DECREF(capsule);
    return result;
}

static PyMethodDef module_functions[] = {
    {"writer", writer, METH_O,
     "writer(address) -> record: a function that writes trace records into the "
     "lk_trace ring at address (an int, from ffi.cast('uintptr_t', ring))."},
    {"resumers", (PyCFunction)(void (*)(void))resumers, METH_FASTCALL,
     "resumers(address, labels) -> (resume, resume_fd): resume(g, why, label) writes "
     "the resume record (a = id(g), arg = why, b = labels[label]) into the ring at "
     "address; resume_fd(g, why, fd, event) the same for label (fd, event)."},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase init, so the module can say what it needs of the interpreter.
 * Py_mod_gil: record() writes the ring with plain loads and stores and
 * relies on the GIL to keep two writers apart, so a free-threaded CPython
 * must keep its GIL on for us (labkit refuses to import there anyway).
 * Py_mod_multiple_interpreters: the module keeps no state of its own, so
 * several interpreters may load it -- but only interpreters that share one
 * GIL, because that GIL is what serializes the writers of a ring.  (labkit
 * as a whole cannot load in an own-GIL subinterpreter today: greenlet
 * refuses.)  The #ifdefs keep this compiling on 3.10-3.11, which have
 * neither slot. */
static PyModuleDef_Slot module_slots[] = {
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
    .m_name = "labkit._lk_trace_py",
    .m_doc = "Write labkit trace records with the GIL held (see loop_c/lk_trace_py.c).",
    .m_size = 0,
    .m_methods = module_functions,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__lk_trace_py(void)
{
    return PyModuleDef_Init(&module_def);
}
