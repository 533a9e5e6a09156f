"""labkit.socket's recv/send read their arguments as the stdlib's socket
does (loop_c/lk_sock_py.c): the same values accepted, the same exceptions
for the rest, and -- after a short read, when recv parks before its
syscall -- bad arguments still raise at once."""
import socket as stdlib_socket

import pytest

from labkit import socket as lsocket
from labkit import spawn
from labkit._park import parked_readers

pytestmark = pytest.mark.timeout(60)


class IntLike:
    """An object with __index__, as numpy's integers are."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


def _outcome(module, call):
    a, b = module.socketpair()
    a.settimeout(5)
    try:
        b.send(b"hello")
        try:
            result = "ok", call(a)
        except Exception as exc:
            result = type(exc), str(exc)
        a.setblocking(False)
        try:
            left = a.recv(10)
        except BlockingIOError:
            left = b""
        return result, left                  # and what is left to read
    finally:
        a.close()
        b.close()


CASES = {
    "bufsize __index__": lambda s: s.recv(IntLike(3)),
    "flags __index__": lambda s: s.recv(10, IntLike(0)),
    "send flags __index__": lambda s: s.send(b"x", IntLike(0)),
    "bufsize str": lambda s: s.recv("x"),
    "bufsize float": lambda s: s.recv(1.0),
    "bufsize past ssize_t": lambda s: s.recv(2**63),
    "flags past C int (PEEK)": lambda s: s.recv(10, 2**32 | stdlib_socket.MSG_PEEK),
    "flags below C int": lambda s: s.recv(10, -2**40),
    "flags past C long": lambda s: s.recv(10, 2**70),
    "send flags past C int": lambda s: s.send(b"x", 2**40),
    "send flags str": lambda s: s.send(b"x", "f"),
    "bufsize negative": lambda s: s.recv(-1),
    "send str": lambda s: s.send("x"),
    "sendall str": lambda s: s.sendall("x"),
    "sendall int": lambda s: s.sendall(3),
    "sendall list": lambda s: s.sendall([1]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recv_and_send_arguments_as_the_stdlib(case):
    assert _outcome(lsocket, CASES[case]) == _outcome(stdlib_socket, CASES[case])


def test_flags_that_do_not_fit_a_c_int_are_refused_not_truncated():
    a, b = lsocket.socketpair()
    with a, b:
        b.send(b"hello")
        with pytest.raises(OverflowError):
            a.recv(10, 2**32 | stdlib_socket.MSG_PEEK)   # truncated, it would peek
        with pytest.raises(OverflowError):
            a.send(b"x", 2**40)
        assert a.recv(10) == b"hello"             # not peeked: still there
        b.setblocking(False)                      # and the refused send sent nothing
        with pytest.raises(BlockingIOError):
            b.recv(10)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), ("x", TypeError),
                                      (1.5, TypeError), (2**63, OverflowError)])
def test_bad_recv_arguments_after_a_short_read_raise_without_waiting(bad, exc):
    # After a short read a blocking recv parks before its syscall; with no
    # data coming, a bad argument must still raise, as the stdlib's does.
    a, b = lsocket.socketpair()
    with a, b:
        b.send(b"hi")
        assert a.recv(10) == b"hi"                # short: the next recv parks first
        reader = spawn(a.recv, bad)
        reader.join(timeout=5)
        assert reader.dead and isinstance(reader.exception, exc)
        assert a.fileno() not in parked_readers
        flags = spawn(a.recv, 10, 2**40)
        flags.join(timeout=5)
        assert flags.dead and isinstance(flags.exception, OverflowError)
        assert a.recv(0) == b""                   # no wait either, as the stdlib
        b.send(b"late")
        assert a.recv(IntLike(10)) == b"late"
