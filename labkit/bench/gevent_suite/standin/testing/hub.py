"""Stand-in for ``gevent.testing.hub``: the hub class the tests run on.

gevent's QuietHub subclasses the hub so that errors the tests provoke on
purpose (``ExpectedException``) are not printed, and so that a test may
assign ``hub.handle_error`` (a subclass has an instance dict). Same
behaviour here, without gevent's private ``Hub._normalize_exception``.
"""
from contextlib import contextmanager

from gevent.hub import Hub

from .exception import ExpectedException


def _exception_class(kind, value):
    if isinstance(kind, type):
        return kind
    return type(value) if value is not None else type(kind)


class QuietHub(Hub):
    _resolver = None
    _threadpool = None

    EXPECTED_TEST_ERROR = (ExpectedException,)
    IGNORE_EXPECTED_TEST_ERROR = False

    @contextmanager
    def ignoring_expected_test_error(self):
        """Errors of ``EXPECTED_TEST_ERROR`` reported to ``handle_error`` in
        the body are dropped: they never reach the hub's parent."""
        old = self.IGNORE_EXPECTED_TEST_ERROR
        self.IGNORE_EXPECTED_TEST_ERROR = True
        try:
            yield
        finally:
            self.IGNORE_EXPECTED_TEST_ERROR = old

    def handle_error(self, context, type, value, tb):
        if self.IGNORE_EXPECTED_TEST_ERROR and issubclass(
                _exception_class(type, value), self.EXPECTED_TEST_ERROR):
            return None
        return Hub.handle_error(self, context, type, value, tb)

    def print_exception(self, context, t, v, tb):
        if issubclass(_exception_class(t, v), self.EXPECTED_TEST_ERROR):
            return None
        return Hub.print_exception(self, context, t, v, tb)
