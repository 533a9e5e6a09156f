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
 * Contract: call record() with the GIL held (any Python code does), from
 * any thread.  It raises OverflowError/TypeError for arguments that do
 * not fit the record's fields, and never anything else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyMethodDef module_functions[] = {
    {"writer", writer, METH_O,
     "writer(address) -> record: a function that writes trace records into the "
     "lk_trace ring at address (an int, from ffi.cast('uintptr_t', ring))."},
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
