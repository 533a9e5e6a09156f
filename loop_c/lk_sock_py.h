/* lk_sock_py.h -- lk_sock_py.c's module functions, for lk_poll_py.c's
 * method table: recv and send that never block and keep the GIL. */
#ifndef LK_SOCK_PY_H
#define LK_SOCK_PY_H

#include <Python.h>

/* recv(fd, bufsize, flags) -> bytes */
PyObject *lk__sock_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* send(fd, data, flags) -> int */
PyObject *lk__sock_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* LK_SOCK_PY_H */
