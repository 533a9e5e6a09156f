/* lk_timers_py.h -- what lk_poll_py.c (the module) needs of lk_timers_py.c. */
#ifndef LK_TIMERS_PY_H
#define LK_TIMERS_PY_H

#include <Python.h>

/* timer_table(start, cancel, loop, timers, unreferenced): the module function. */
PyObject *lk__timer_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* Ready the Timer and TimerTable types; add Timer to the module.  0 or -1. */
int lk__timers_py_init(PyObject *module);

#endif /* LK_TIMERS_PY_H */
