"""tracing.introspect: what each live greenlet is doing, in this process
(%labkit_status prints it; tests/test_magics.py runs the magic in a kernel)."""
import pytest

import labkit
from tracing.introspect import format_run_info, run_info

pytestmark = pytest.mark.timeout(60)


def test_run_info_says_what_each_greenlet_waits_for_and_where():
    def napper():
        labkit.sleep(10)  # STATUS-NAP

    from labkit import socket
    left, right = socket.socketpair()

    def reader():
        left.recv(10)

    nap, read = labkit.spawn(napper), labkit.spawn(reader)
    nap.name, read.name = "napper", "reader"
    labkit.sleep(0.01)
    try:
        infos = {info.name: info for info in run_info()}
        assert infos["napper"].state == "waiting"
        assert "sleep(10)" in infos["napper"].waits_on
        assert infos["napper"].where.startswith("test_tracing_introspect.py:")
        assert infos["reader"].waits_on.endswith(f"fd {left.fileno()} read")
        text = format_run_info(stacks=True, names=("napper",))
        assert "napper" in text and "reader" not in text and "in napper" in text
    finally:
        labkit.killall([nap, read])
        left.close()
        right.close()


def test_a_greenlet_not_started_yet_says_so():
    g = labkit.spawn(lambda: None)
    g.name = "late"
    try:
        [info] = [i for i in run_info() if i.name == "late"]
        assert info.state == "not started"
    finally:
        g.join()
