"""Stand-in for ``gevent.testing.leakcheck``: the decorators, as no-ops.

gevent's own run leak checks only when GEVENTTEST_LEAKCHECK is set (the
runner never sets it), and they count objects of gevent's loop internals.
"""


def ignores_leakcheck(func):
    """Mark ``func`` as exempt from leak checks (which never run here)."""
    func.ignore_leakcheck = True
    return func


def wrap_refcount(method):
    return method
