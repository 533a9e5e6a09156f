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
    child.sendline("print('pings', len(pings))")
    child.expect(r"pings (\d+)\r?\n")  # the output, not the echo of the line
    count = int(child.match.group(1))
    child.expect(prompt)
    return count


def assert_served_while_the_prompt_waits(child, port: int, prompt: str) -> None:
    before = pings(child, prompt)
    time.sleep(0.5)  # nobody types: the prompt waits for input
    assert echo_once(port, b"hello") == b"hello"
    assert pings(child, prompt) >= before + 5  # one ping per 50 ms


def assert_ctrl_c_discards_the_half_typed_line(child) -> None:
    """``abc = 1 + `` Ctrl-C ``print('fresh')`` runs ``print('fresh')`` alone."""
    child.send("abc = 1 + ")
    time.sleep(0.3)  # the prompt waits, with a half-typed line
    child.sendintr()
    child.expect("KeyboardInterrupt", timeout=5)
    child.expect(PYTHON_PROMPT)
    out = type_line(child, "print('fresh')", PYTHON_PROMPT)
    assert "fresh" in out and "TypeError" not in out, out
    assert "False" in type_line(child, "print('abc' in dir())", PYTHON_PROMPT)


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


def test_labkit_repl_ctrl_c_at_the_prompt_discards_the_half_typed_line(labkit_repl):
    assert_ctrl_c_discards_the_half_typed_line(labkit_repl)


def test_labkit_repl_ctrl_c_stops_a_background_greenlet_that_never_yields(labkit_repl,
                                                                          echo_file):
    port = start_echo_server(labkit_repl, echo_file, PYTHON_PROMPT)
    type_line(labkit_repl, "g = labkit.spawn(exec, 'while True: pass')", PYTHON_PROMPT)
    time.sleep(0.3)  # it spins; the prompt waits
    labkit_repl.sendintr()
    labkit_repl.expect("labkit stopped greenlet", timeout=5)
    labkit_repl.expect(PYTHON_PROMPT)
    assert "True KeyboardInterrupt" in type_line(
        labkit_repl, "print(g.dead, type(g.exception).__name__)", PYTHON_PROMPT)
    assert echo_once(port) == b"ping"  # the other greenlets were spared


def test_labkit_repl_output_while_typing_goes_below_the_line_being_typed(labkit_repl):
    type_line(labkit_repl, "labkit.spawn_later(0.5, print, 'tick')", PYTHON_PROMPT)
    labkit_repl.send("abc")
    # The greenlet's line, then the prompt and the half-typed line again.
    labkit_repl.expect(r"tick\r?\n>>> abc", timeout=5)
    labkit_repl.sendline(" = 6 * 7")   # typing goes on where it was
    labkit_repl.expect(PYTHON_PROMPT)
    assert "42" in type_line(labkit_repl, "print(abc)", PYTHON_PROMPT)


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


def test_plain_python_input_hook_ctrl_c_at_the_prompt_discards_the_half_typed_line():
    with closing(spawn_in_pty(["-q"])) as child:
        child.expect(PYTHON_PROMPT)
        type_line(child, "import labkit, labkit.repl; labkit.repl.install_inputhook()",
                  PYTHON_PROMPT)
        assert_ctrl_c_discards_the_half_typed_line(child)


def test_plain_python_input_hook_output_while_typing_goes_below_the_line_being_typed():
    with closing(spawn_in_pty(["-q"])) as child:
        child.expect(PYTHON_PROMPT)
        type_line(child, "import labkit, labkit.repl; labkit.repl.install_inputhook()",
                  PYTHON_PROMPT)
        type_line(child, "labkit.spawn_later(0.5, print, 'tick')", PYTHON_PROMPT)
        child.send("abc")
        child.expect(r"tick\r?\n>>> abc", timeout=5)
        child.sendline(" = 6 * 7")
        child.expect(PYTHON_PROMPT)
        assert "42" in type_line(child, "print(abc)", PYTHON_PROMPT)


# -- IPython in a terminal ---------------------------------------------------------

#: (IPython arguments, TERM): prompt_toolkit's full prompt on a real terminal
#: type, its reduced prompt on a dumb one (Emacs shell, pexpect), and
#: IPython's own input()-based prompt.
IPYTHON_PROMPTS = {
    "prompt_toolkit": ([], "dumb"),
    "prompt_toolkit-xterm": ([], "xterm-256color"),
    "simple-prompt": (["--simple-prompt"], "dumb"),
}
#: the prompt, without the trailing space a real terminal type redraws over
IPYTHON_PROMPT_ANY_TERM = r"In \[\d+\]:"


def spawn_ipython(tmp_path, style: str):
    args, term = IPYTHON_PROMPTS[style]
    return spawn_in_pty(["-m", "IPython", "--no-banner", "--colors=NoColor",
                         f"--ipython-dir={tmp_path}", *args], term=term)


@pytest.mark.parametrize("prompt_style", list(IPYTHON_PROMPTS))
def test_ipython_extension_serves_while_the_prompt_waits(echo_file, tmp_path, prompt_style):
    pytest.importorskip("IPython")
    prompt = IPYTHON_PROMPT_ANY_TERM
    with closing(spawn_ipython(tmp_path, prompt_style)) as child:
        child.expect(prompt)
        type_line(child, "%load_ext labkit", prompt)
        port = start_echo_server(child, echo_file, prompt)
        assert_served_while_the_prompt_waits(child, port, prompt)


@pytest.mark.parametrize("prompt_style", ["prompt_toolkit", "simple-prompt"])
def test_ipython_unload_ext_parks_the_greenlets_and_load_ext_resumes_them(
        echo_file, tmp_path, prompt_style):
    pytest.importorskip("IPython")
    prompt = IPYTHON_PROMPT_ANY_TERM
    with closing(spawn_ipython(tmp_path, prompt_style)) as child:
        child.expect(prompt)
        type_line(child, "%load_ext labkit", prompt)
        start_echo_server(child, echo_file, prompt)
        type_line(child, "%unload_ext labkit", prompt)
        before = pings(child, prompt)
        time.sleep(0.3)
        assert pings(child, prompt) == before  # nobody runs the hub at the prompt
        type_line(child, "%load_ext labkit", prompt)
        deadline = time.monotonic() + 10
        while pings(child, prompt) < before + 3:
            assert time.monotonic() < deadline, "the pinger did not resume"
            time.sleep(0.1)
