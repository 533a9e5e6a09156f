/* lk_timeout_py.h -- what lk_poll_py.c (the module) needs of lk_timeout_py.c:
 * TimeoutBase, and the module state it keeps (per interpreter). */
#ifndef LK_TIMEOUT_PY_H
#define LK_TIMEOUT_PY_H

#include <Python.h>

typedef struct {
    PyObject *timeout_type;     /* TimeoutBase */
    newfunc base_new;           /* its tp_new (BaseException's) */
    PyObject *own_start;        /* TimeoutBase.__dict__["start"] */
    PyObject *own_cancel;       /* TimeoutBase.__dict__["cancel"] */
    PyObject *getcurrent;       /* configure_timeouts(): greenlet.getcurrent */
    PyObject *hub_type;         /*   labkit.hub.Hub */
    PyObject *get_hub;          /*   labkit.hub.get_hub */
    PyObject *str_parent, *str_loop, *str_timer_table, *str_start, *str_cancel;
    PyObject *empty_tuple, *kw_ref, *kw_ref_one_shot;
} timeout_state;

/* configure_timeouts(getcurrent, hub_type, get_hub): the module function. */
PyObject *lk__configure_timeouts(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* Make TimeoutBase and add it to the module.  0 or -1. */
int lk__timeout_py_init(PyObject *module);
int lk__timeout_state_traverse(PyObject *module, visitproc visit, void *arg);
int lk__timeout_state_clear(PyObject *module);

#endif /* LK_TIMEOUT_PY_H */
