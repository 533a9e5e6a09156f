/* lk_timers_py.h -- what the other files of labkit._lk_poll_py need of
 * lk_timers_py.c: the timer table (one per loop), as C calls.
 *
 * A table maps a C timer id (a small slot number, see lk_timer_heap.c) to
 * the object that fired when it fires: a Timer (lk_timers_py.c), a greenlet
 * (switch_after, lk_timers_py.c) or a Timeout (lk_timeout_py.c).  The table
 * holds a strong reference to every pending entry; an entry is pending
 * exactly while the table holds it under its id.  Everything runs with the
 * GIL held, on the loop's thread. */
#ifndef LK_TIMERS_PY_H
#define LK_TIMERS_PY_H

#include <Python.h>
#include <stdint.h>

typedef struct lk__timer_table lk__timer_table;

/* Arm a timer of `delay_ns` (already clamped to >= 0) for `entry`: the id,
 * or -1 with an exception set (a closed loop: RuntimeError; the C loop's
 * -errno: OSError).  `referenced` = 0: it does not keep the loop alive. */
int32_t lk__table_arm(lk__timer_table *table, int64_t delay_ns, PyObject *entry, int referenced);
/* Whether `entry` is pending under `id`. */
int lk__table_holds(lk__timer_table *table, int32_t id, PyObject *entry);
/* If `entry` is pending under `id`: forget it, cancel the C timer, return 1
 * (the table's reference is dropped: the caller must own one).  Else 0. */
int lk__table_disarm(lk__timer_table *table, int32_t id, PyObject *entry);
/* Is `obj` a table?  (Timeout.start checks what it got from the hub.) */
int lk__table_check(PyObject *obj);

/* seconds (a real number) -> delay in ns, clamped to [0, ~146 years];
 * -1 with an exception set for NaN or a non-number. */
int64_t lk__delay_ns_of(PyObject *seconds);

/* lk_timeout_py.c: the (callback, args) pair to run for a Timeout that
 * fired (the entry take() found, any entry that is not a Timer); the
 * Timeout's pending state moves into the pair.  NULL with an exception. */
PyObject *lk__timeout_fired(PyObject *timeout);

/* timer_table(start, cancel, loop): the module function. */
PyObject *lk__timer_table_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* Ready the Timer and TimerTable types; add Timer to the module.  0 or -1. */
int lk__timers_py_init(PyObject *module);

#endif /* LK_TIMERS_PY_H */
