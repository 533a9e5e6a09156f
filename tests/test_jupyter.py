"""labkit.jupyter: the hub keeps running inside a real ipykernel between cells.

Every test talks to a real kernel through jupyter_client (see
tests/kernel_harness.py). Most share one kernel in which one cell started an
echo server and a pinger (ECHO_SERVER_CODE): starting a kernel takes a
second, and sharing it is also the point -- state survives from cell to cell.
"""
import time

import pytest

from kernel_harness import (
    ECHO_SERVER_CODE, create_subshell, echo_once, kernel_has_subshells, run_cell, running_kernel,
)

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

pytestmark = [pytest.mark.timeout(60), pytest.mark.e2e]


def ok(kc, code: str, timeout: float = 10) -> str:
    """Run a cell that must succeed; its stdout."""
    cell = run_cell(kc, code, timeout=timeout)
    assert cell.status == "ok", (cell.ename, cell.evalue, cell.stderr)
    return cell.stdout


def start_echo_server(kc) -> int:
    return int(ok(kc, ECHO_SERVER_CODE).split()[-1])


@pytest.fixture(scope="module")
def kernel():
    """One kernel with %load_ext labkit, an echo server and a pinger."""
    with running_kernel() as (km, kc):
        ok(kc, "%load_ext labkit")
        port = start_echo_server(kc)
        yield km, kc, port


def send_cell(kc, code: str) -> str:
    """Start executing ``code`` without waiting for it; its msg_id."""
    return kc.execute(code, stop_on_error=False)


def wait_for_reply(kc, msg_id: str, timeout: float) -> dict:
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def iopub_for(kc, msg_id: str, seconds: float) -> list:
    """The iopub messages whose parent is ``msg_id`` that arrive within ``seconds``."""
    found, deadline = [], time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = kc.get_iopub_msg(timeout=remaining)
        except Exception:
            break
        if msg["parent_header"].get("msg_id") == msg_id:
            found.append(msg)
    return found


# -- between cells ---------------------------------------------------------

def test_greenlets_advance_while_the_kernel_sits_idle(kernel):
    _km, kc, _port = kernel
    # One ping per 50 ms: about 10 per idle half second. Count only pings
    # between cells (the cells do not yield), until 10, with a deadline: a
    # busy machine may delay pings, a hub that does not run between cells
    # gives none.
    advanced, deadline = 0, time.monotonic() + 20
    while advanced < 10:
        assert time.monotonic() < deadline, f"only {advanced} pings between cells in 20 s"
        ok(kc, "pings_before = len(pings)")
        time.sleep(0.5)  # the kernel is idle: no cell runs
        advanced += int(ok(kc, "print(len(pings) - pings_before)"))


def test_the_echo_server_answers_while_the_kernel_sits_idle(kernel):
    _km, _kc, port = kernel
    time.sleep(0.2)
    assert echo_once(port, b"hello") == b"hello"


def test_a_later_cell_sees_the_same_greenlets(kernel):
    _km, kc, port = kernel
    assert ok(kc, "print(echo_server.dead, pinger.dead, echo_port)").split() == \
        ["False", "False", str(port)]


def test_a_greenlet_spawned_by_a_cell_runs_after_the_cell_finished(kernel):
    _km, kc, _port = kernel
    ok(kc, "box = []\nlabkit.spawn(box.append, 'ran')")  # ready callback, no fd, no timer
    time.sleep(0.1)
    assert ok(kc, "print(box)").strip() == "['ran']"


def test_print_in_a_greenlet_goes_to_the_cell_that_spawned_it(kernel):
    _km, kc, _port = kernel
    spawner = run_cell(kc, "labkit.spawn_later(0.3, print, 'late hello')")
    assert spawner.status == "ok"
    ok(kc, "pass")  # another cell runs before the greenlet prints
    texts = [m["content"]["text"] for m in iopub_for(kc, spawner.msg_id, 1.0)
             if m["msg_type"] == "stream"]
    assert "".join(texts) == "late hello\n"


# -- inside a cell -----------------------------------------------------------

def test_a_cell_that_blocks_runs_the_hub_itself(kernel):
    _km, kc, port = kernel
    msg_id = send_cell(kc, "n = len(pings); labkit.sleep(2); during = len(pings) - n")
    time.sleep(0.3)
    assert echo_once(port, b"during") == b"during"  # served while the cell blocks
    assert wait_for_reply(kc, msg_id, timeout=10)["status"] == "ok"
    # The pinger ran during the cell's 2 s: about 40 pings (0 if the cell
    # had blocked the hub); 10 leaves room for a busy machine.
    assert int(ok(kc, "print(during)")) >= 10


def test_interrupt_raises_keyboard_interrupt_in_the_blocked_cell(kernel):
    km, kc, port = kernel
    msg_id = send_cell(kc, "pings_then = len(pings)\nlabkit.sleep(30)")
    time.sleep(0.5)  # the cell is now parked in the hub
    km.interrupt_kernel()
    # The reply within 5 s of a 30 s sleep is the proof that the interrupt
    # ended it (no bound in milliseconds: a busy machine may take a second).
    reply = wait_for_reply(kc, msg_id, timeout=5)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    # The hub and the background greenlets survived.
    assert echo_once(port, b"still here") == b"still here"
    time.sleep(0.3)
    assert ok(kc, "print(pinger.dead, len(pings) > pings_then)").split() == ["False", "True"]


def test_interrupt_stops_a_busy_cell_and_spares_the_greenlets(kernel):
    km, kc, port = kernel
    msg_id = send_cell(kc, "while True: pass")
    time.sleep(0.5)
    km.interrupt_kernel()
    reply = wait_for_reply(kc, msg_id, timeout=5)
    assert reply["ename"] == "KeyboardInterrupt"
    assert echo_once(port) == b"ping"


def test_the_real_time_sleep_in_a_greenlet_warns_once_in_the_cell_that_spawned_it(kernel):
    _km, kc, _port = kernel
    cell = run_cell(kc, "import time\n"
                        "time.sleep(0.001)\n"          # the cell's own code: no warning
                        "def napper():\n"
                        "    time.sleep(0.001)\n"
                        "labkit.spawn(napper).join()\n"
                        "labkit.spawn(napper).join()")
    assert cell.status == "ok"
    assert cell.stderr.count("RuntimeWarning: time.sleep(0.001) in a greenlet") == 1, cell.stderr
    assert "labkit.sleep(0.001)" in cell.stderr and "patch_all()" in cell.stderr


def test_address_in_use_names_the_server_still_holding_the_port(kernel):
    _km, kc, _port = kernel
    ok(kc, "import labkit.server\n"
           "def first_run():\n"     # the cell's first run: nothing keeps the server
           "    labkit.server.StreamServer(('127.0.0.1', 0), lambda s, a: None).start()\n"
           "first_run()\n"
           "[held] = [s for s in labkit.servers() if s.server_port != echo_port]\n"
           "fixed_port = held.server_port; del held")
    again = run_cell(kc, "labkit.server.StreamServer(('127.0.0.1', fixed_port), "
                         "lambda s, a: None).start()")
    assert again.ename == "OSError", (again.ename, again.evalue)
    # The note is part of the traceback (an exception note, 3.11+), or on
    # stderr right after it (Python 3.10, or an IPython before 8.14, which hides notes).
    text = "\n".join(line for m in again.outputs if m["msg_type"] == "error"
                     for line in m["content"]["traceback"])
    text += "\n".join(m["content"]["text"] for m in again.outputs
                      if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
    assert "Address already in use" in text and "is held by <" in text, text
    assert ".stop()" in text and "labkit.servers()" in text, text
    assert ok(kc, "[s.stop() for s in labkit.servers() if s.server_port == fixed_port]\n"
                  "print(fixed_port in [s.server_port for s in labkit.servers()])"
              ).strip() == "False"


RUNAWAY_CELL = """
import time
def runaway(kind):
    while True:                    # never yields to the hub
        if kind == "sleep":
            time.sleep(0.05)       # the real one: labkit is not patched here
runaway_g = labkit.spawn(runaway, KIND)
"""


def test_interrupt_stops_a_greenlet_that_never_yields_between_cells(kernel):
    km, kc, port = kernel
    ok(kc, RUNAWAY_CELL.replace("KIND", "'spin'"))   # returns; the next tick spins
    stuck = send_cell(kc, "print('after', runaway_g.dead)")
    time.sleep(0.5)
    km.interrupt_kernel()
    reply = wait_for_reply(kc, stuck, timeout=10)
    assert reply["status"] == "ok"
    # The kernel, the hub and the other greenlets survived; the runaway did not.
    assert echo_once(port, b"alive") == b"alive"
    assert ok(kc, "labkit.sleep(0.2)\n"
                  "print(type(runaway_g.exception).__name__, pinger.dead)").split() == \
        ["KeyboardInterrupt", "False"]


def test_interrupt_stops_a_greenlet_looping_on_the_real_sleep_while_a_cell_waits(kernel):
    km, kc, port = kernel
    msg_id = send_cell(kc, RUNAWAY_CELL.replace("KIND", "'sleep'") + "labkit.sleep(30)")
    time.sleep(0.5)
    km.interrupt_kernel()
    reply = wait_for_reply(kc, msg_id, timeout=10)
    assert reply["ename"] == "KeyboardInterrupt"
    assert "stopped greenlet" in reply["evalue"]
    assert echo_once(port, b"alive") == b"alive"
    assert ok(kc, "labkit.sleep(0.2)\nprint(runaway_g.dead, pinger.dead)").split() == \
        ["True", "False"]


def test_the_between_cells_sigint_handler_leaves_other_threads_alone(kernel):
    # ipykernel calls post_handler_hook in whichever thread handled the
    # message; only the main thread may install a signal handler.
    _km, kc, _port = kernel
    assert ok(kc, "import threading, labkit.jupyter\n"
                  "errors = []\n"
                  "def from_a_thread():\n"
                  "    try:\n"
                  "        labkit.jupyter.active()._sigint.install_between_cells()\n"
                  "    except Exception as exc:\n"
                  "        errors.append(exc)\n"
                  "t = threading.Thread(target=from_a_thread); t.start(); t.join()\n"
                  "print(errors)").strip() == "[]"


def test_a_second_interrupt_stops_a_hub_callback_that_never_returns(kernel):
    km, kc, port = kernel
    ok(kc, "def spin_in_the_hub():\n"
           "    while True:\n"
           "        pass\n"
           "labkit.get_hub().run_callback(spin_in_the_hub)")
    stuck = send_cell(kc, "print('after')")
    time.sleep(0.5)
    km.interrupt_kernel()                       # the first one is for the cell
    with pytest.raises(Exception):
        wait_for_reply(kc, stuck, timeout=1.0)
    km.interrupt_kernel()
    assert wait_for_reply(kc, stuck, timeout=10)["status"] == "ok"
    assert echo_once(port, b"alive") == b"alive"
    assert ok(kc, "labkit.sleep(0.2)\nprint(pinger.dead)").strip() == "False"


STUBBORN_CELL = """
caught = []
def stubborn():                    # swallows the first KeyboardInterrupt
    while True:
        try:
            while True:
                pass
        except KeyboardInterrupt:
            caught.append(1)
            if len(caught) == 2:
                raise
stubborn_g = labkit.spawn(stubborn)
"""


def test_a_second_interrupt_stops_a_greenlet_that_swallowed_the_first(kernel):
    km, kc, _port = kernel
    ok(kc, STUBBORN_CELL)
    stuck = send_cell(kc, "print(len(caught), stubborn_g.dead)")
    time.sleep(0.5)
    km.interrupt_kernel()
    with pytest.raises(Exception):              # the first is swallowed: still stuck
        wait_for_reply(kc, stuck, timeout=1.5)
    km.interrupt_kernel()
    assert wait_for_reply(kc, stuck, timeout=10)["status"] == "ok"
    assert ok(kc, "print(len(caught), stubborn_g.dead, pinger.dead)").split() == \
        ["2", "True", "False"]


# -- subshells -------------------------------------------------------------

def test_a_subshell_gets_a_clear_error_and_can_marshal_to_the_main_hub(kernel):
    _km, kc, _port = kernel
    if not kernel_has_subshells(kc):   # ipykernel 6.x, what Python 3.10 gets
        pytest.skip("this ipykernel has no subshells (JEP 91; ipykernel >= 7)")
    subshell = create_subshell(kc)
    touched = run_cell(kc, "labkit.sleep(0.1)", subshell_id=subshell)
    assert touched.ename == "SubshellError"
    assert "call_in_main" in touched.evalue
    read_only = run_cell(kc, "print(pinger.dead)", subshell_id=subshell)
    assert read_only.stdout.strip() == "False"
    marshalled = run_cell(
        kc, "import labkit.jupyter\n"
            "print(labkit.jupyter.call_in_main(lambda: (labkit.sleep(0.05), 'done')[1], timeout=5))",
        subshell_id=subshell)
    assert marshalled.stdout.strip() == "done", (marshalled.ename, marshalled.evalue)


# -- attaching and detaching -------------------------------------------------

@pytest.fixture
def fresh_kernel():
    with running_kernel() as (km, kc):
        yield km, kc


def test_a_cell_that_spawns_before_load_ext_gets_the_hub_attached_and_a_note(fresh_kernel):
    _km, kc = fresh_kernel
    assert ok(kc, "import labkit\nprint(labkit.sleep(0) is None)").strip() == "True"
    cell = run_cell(kc, "box = []\nlabkit.spawn_later(0.1, box.append, 'ran')")
    assert cell.status == "ok" and "%load_ext labkit had not run" in cell.stderr, cell.stderr
    deadline = time.monotonic() + 10
    while ok(kc, "print(box)").strip() != "['ran']":   # it runs between cells
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "labkit: this cell" not in run_cell(kc, "labkit.spawn(box.append, 2)").stderr


def test_unload_ext_detaches_and_load_ext_attaches_again(fresh_kernel):
    _km, kc = fresh_kernel
    ok(kc, "%load_ext labkit")
    start_echo_server(kc)
    ok(kc, "%unload_ext labkit\nimport labkit.jupyter\nassert labkit.jupyter.active() is None")
    ok(kc, "n = len(pings)")
    time.sleep(0.4)
    assert ok(kc, "print(len(pings) - n)").strip() == "0"  # parked, not running
    ok(kc, "%load_ext labkit\nn = len(pings)")
    time.sleep(0.4)
    assert int(ok(kc, "print(len(pings) - n)")) >= 4


def test_load_ext_brings_the_tracers_magics_and_survives_a_broken_plugin(fresh_kernel):
    _km, kc = fresh_kernel
    ok(kc, "import labkit.plugins\n"
           "labkit.plugins.register_ipython('broken', object())")   # no load_ipython_extension
    cell = run_cell(kc, "%load_ext labkit", timeout=10)
    assert cell.status == "ok", (cell.ename, cell.evalue)
    assert "labkit plug-in 'broken' failed to load: AttributeError" in cell.stderr
    assert "hub: " in ok(kc, "%labkit_status")   # the tracer's magics loaded
    assert ok(kc, "import labkit.jupyter\n"
                  "print(labkit.jupyter.active() is not None)").strip() == "True"


def test_gui_labkit_is_a_polling_fallback(fresh_kernel):
    _km, kc = fresh_kernel
    ok(kc, "import labkit.jupyter\n%gui labkit")
    port = start_echo_server(kc)
    time.sleep(0.3)
    assert echo_once(port, b"polled") == b"polled"


# -- monkey patching inside a running kernel -----------------------------------

HAND_OFF_CELL = """
import threading, queue, labkit
requests, replies, handed = queue.Queue(), queue.Queue(), []
def server():                      # a greenlet: parks in get(), runs between cells
    while (item := requests.get()) is not None:
        labkit.sleep(0.01)
        replies.put(item * 10)
def user():                        # a real OS thread: blocks natively
    handed.append(threading.get_native_id() != main_id)
    for i in range(3):
        requests.put(i)
        handed.append(replies.get(timeout=10))
    requests.put(None)
main_id = threading.get_native_id()
labkit.spawn(server)
user_thread = threading.Thread(target=user)
user_thread.start()                # the cell ends at once; the kernel sits idle
"""


def test_patch_all_in_a_kernel_keeps_it_working_and_unload_restores_it(fresh_kernel):
    _km, kc = fresh_kernel
    ok(kc, "%load_ext labkit")
    # The kernel is a host: threads stay OS threads (mixed mode).
    assert ok(kc, "import threading\noriginal_lock = threading.Lock\n"
                  "from labkit import monkey\nmonkey.patch_all()\n"
                  "print(monkey.thread_mode())").strip() == "native"
    assert ok(kc, "print(6 * 7)").strip() == "42"            # cells still run
    # A user's thread hands work to a greenlet through queue.Queue and back,
    # while no cell runs: the thread's put wakes the guest hub.
    ok(kc, HAND_OFF_CELL)
    time.sleep(0.5)
    assert ok(kc, "user_thread.join(10)\nprint(handed, user_thread.is_alive())").strip() \
        == "[True, 0, 10, 20] False"
    # Output still reaches the notebook, from a greenlet too.
    assert ok(kc, "labkit.spawn(print, 'from a greenlet').join()").strip() == "from a greenlet"
    # The kernel's own threads: history is saved by its thread, the heartbeat beats.
    history = ok(kc, "hm = get_ipython().history_manager\n"
                     "print(hm.save_thread is None or hm.save_thread.is_alive())\n"
                     "hm.save_flag.set()\n"
                     "import time; time.sleep(0.3)\n"
                     "print(len(list(hm.get_range(hm.session_number, raw=True))) >= 5)")
    assert history.split() == ["True", "True"]
    assert kc.is_alive() and kc.hb_channel.is_beating()
    # %unload_ext puts every original back; cells still run.
    ok(kc, "%unload_ext labkit")
    assert ok(kc, "import socket\n"
                  "print(threading.Lock is original_lock, socket.socket.__module__,\n"
                  "      monkey.is_module_patched('threading'), monkey.thread_mode())"
              ).split() == ["True", "socket", "False", "None"]
