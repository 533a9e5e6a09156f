"""labkit.repl and ``python -m labkit``: the hub runs while a prompt waits.

Each test drives a real REPL in a pseudo terminal (pexpect): it types
ECHO_SERVER_CODE at the prompt, leaves the prompt waiting, and talks to the
echo server from the test process.
"""
import re
import time

import pytest

from kernel_harness import ECHO_SERVER_CODE, closing, echo_once, spawn_in_pty

pytest.importorskip("pexpect")

pytestmark = pytest.mark.timeout(60)

PYTHON_PROMPT = ">>> "
IPYTHON_PROMPT = r"In \[\d+\]: "
#: how the user starts the labkit REPL
LABKIT_REPL = ["-m", "labkit"]


@pytest.fixture
def echo_file(tmp_path):
    path = tmp_path / "echo_server.py"
    path.write_text(ECHO_SERVER_CODE)
    return path


def type_line(child, line: str, prompt: str) -> str:
    """Type ``line``, wait for the next prompt; what was printed in between."""
    child.sendline(line)
    child.expect(prompt)
    return child.before


def start_echo_server(child, echo_file, prompt: str) -> int:
    child.sendline(f"exec(open({str(echo_file)!r}).read())")
    child.expect(r"echo_port (\d+)")
    port = int(child.match.group(1))
    child.expect(prompt)
    return port


def pings(child, prompt: str) -> int:
    out = type_line(child, "print('pings', len(pings))", prompt)
    return int(re.search(r"pings (\d+)", out).group(1))


def assert_served_while_the_prompt_waits(child, port: int, prompt: str) -> None:
    before = pings(child, prompt)
    time.sleep(0.5)  # nobody types: the prompt waits for input
    assert echo_once(port, b"hello") == b"hello"
    assert pings(child, prompt) >= before + 5  # one ping per 50 ms


# -- python -m labkit --------------------------------------------------------

@pytest.fixture
def labkit_repl():
    with closing(spawn_in_pty(LABKIT_REPL)) as child:
        child.expect("labkit .* REPL")
        child.expect("import labkit")  # the banner's last line
        child.expect(PYTHON_PROMPT)
        yield child


def test_labkit_repl_serves_while_the_prompt_waits(labkit_repl, echo_file):
    port = start_echo_server(labkit_repl, echo_file, PYTHON_PROMPT)
    assert_served_while_the_prompt_waits(labkit_repl, port, PYTHON_PROMPT)


def test_labkit_repl_runs_blocking_calls_at_top_level(labkit_repl):
    out = type_line(labkit_repl, "g = labkit.spawn(lambda: 6 * 7); labkit.sleep(0.1); "
                                 "labkit.joinall([g]); print('value', g.value)", PYTHON_PROMPT)
    assert "value 42" in out


def test_labkit_repl_ctrl_c_stops_the_statement_not_the_repl(labkit_repl, echo_file):
    port = start_echo_server(labkit_repl, echo_file, PYTHON_PROMPT)
    for statement in ("labkit.sleep(30)", "exec('while True: pass')"):
        labkit_repl.sendline(statement)
        time.sleep(0.3)
        start = time.monotonic()
        labkit_repl.sendintr()
        labkit_repl.expect("KeyboardInterrupt", timeout=5)
        assert time.monotonic() - start < 1.0
        labkit_repl.expect(PYTHON_PROMPT)
    assert echo_once(port) == b"ping"  # the server greenlets were spared
    assert "False" in type_line(labkit_repl, "print(pinger.dead)", PYTHON_PROMPT)


def test_labkit_repl_prints_a_failing_statement_and_goes_on(labkit_repl):
    out = type_line(labkit_repl, "1 / 0", PYTHON_PROMPT)
    assert "ZeroDivisionError" in out and "_run_statement" not in out
    assert "ok" in type_line(labkit_repl, "print('ok')", PYTHON_PROMPT)


def test_labkit_repl_exit_status_comes_from_exit(labkit_repl):
    labkit_repl.sendline("exit(3)")
    labkit_repl.expect(r"exiting labkit REPL|\$|$", timeout=5)
    labkit_repl.wait()
    assert labkit_repl.exitstatus == 3


# -- plain python with PyOS_InputHook ----------------------------------------------

def test_plain_python_input_hook_serves_while_the_prompt_waits(echo_file):
    with closing(spawn_in_pty(["-q"])) as child:
        child.expect(PYTHON_PROMPT)
        type_line(child, "import labkit, labkit.repl; labkit.repl.install_inputhook()",
                  PYTHON_PROMPT)
        port = start_echo_server(child, echo_file, PYTHON_PROMPT)
        assert_served_while_the_prompt_waits(child, port, PYTHON_PROMPT)
        # A blocking call at the prompt runs the hub, and Ctrl-C ends it.
        child.sendline("labkit.sleep(30)")
        time.sleep(0.3)
        child.sendintr()
        child.expect("KeyboardInterrupt", timeout=2)
        child.expect(PYTHON_PROMPT)
        # Without the hook the greenlets stay parked while the prompt waits.
        type_line(child, "labkit.repl.uninstall_inputhook()", PYTHON_PROMPT)
        before = pings(child, PYTHON_PROMPT)
        time.sleep(0.3)
        assert pings(child, PYTHON_PROMPT) == before


# -- IPython in a terminal ---------------------------------------------------------

@pytest.mark.parametrize("prompt_style", [[], ["--simple-prompt"]],
                         ids=["prompt_toolkit", "simple-prompt"])
def test_ipython_extension_serves_while_the_prompt_waits(echo_file, tmp_path, prompt_style):
    pytest.importorskip("IPython")
    args = ["-m", "IPython", "--no-banner", "--colors=NoColor",
            f"--ipython-dir={tmp_path}", *prompt_style]
    with closing(spawn_in_pty(args)) as child:
        child.expect(IPYTHON_PROMPT)
        type_line(child, "%load_ext labkit", IPYTHON_PROMPT)
        port = start_echo_server(child, echo_file, IPYTHON_PROMPT)
        assert_served_while_the_prompt_waits(child, port, IPYTHON_PROMPT)
