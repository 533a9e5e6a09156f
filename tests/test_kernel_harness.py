"""The kernel harness (tests/kernel_harness.py, labkit.bench.notebook) as a
client: every kernel test relies on it to talk to ipykernel the way a real
front end does.

run_cell reads each cell's execute_reply before it returns. ipykernel 7.0-7.3
(7.3 is the last release for Python 3.10) can leave a request unread for good
when it arrives while the kernel sends a reply, and the kernel never answers
again (fixed in 7.4); a client that sent the next cell as soon as it saw
idle sent into exactly that moment, and the kernel tests of a whole run on
3.10 timed out from some cell on.
"""
import pytest

from kernel_harness import run_cell, running_kernel

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]


def test_run_cell_reads_the_cells_reply_before_it_returns():
    with running_kernel() as (_km, kc):
        fine = run_cell(kc, "x = 1")
        assert fine.status == "ok" and fine.reply["status"] == "ok"
        failed = run_cell(kc, "raise ValueError('boom')")
        assert failed.status == "error" and failed.reply["ename"] == "ValueError"
        # Nothing is left for the next request to race: the reply was read.
        assert not kc.shell_channel.msg_ready()
        # Cells back to back, each sent as soon as the previous one is
        # done, all answer (with ipykernel 7.3, sending on idle alone left
        # the kernel deaf within a few hundred such cells).
        for i in range(100):
            cell = run_cell(kc, f"x = {i}")
            assert cell.status == "ok", (i, cell)
