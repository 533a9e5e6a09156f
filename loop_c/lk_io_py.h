/* lk_io_py.h -- what the other files of labkit._lk_poll_py need of
 * lk_io_py.c: the io table's constructor, its types' setup, and the one
 * way this module reports a callback's failure to the hub. */
#ifndef LK_IO_PY_H
#define LK_IO_PY_H

#include <Python.h>

/* io_table(...): the module function (see lk_io_py.c). */
PyObject *lk__io_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* set_resumer(resume_fd or None): the module function (see lk_io_py.c). */
PyObject *lk__io_set_resumer(PyObject *module, PyObject *resumer);
/* Ready the IoTable type.  0 or -1. */
int lk__io_py_init(PyObject *module);

/* The pending exception, reported with on_error(entry) while it is
 * sys.exc_info() (entry NULL: None), as Python's `except: on_error(cb)`
 * did.  0, or -1 with on_error's own exception set (the hub re-raises
 * GreenletExit when it is being killed: the caller must stop). */
int lk__report_failure(PyObject *on_error, PyObject *entry);

#endif /* LK_IO_PY_H */
