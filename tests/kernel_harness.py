"""Drive real kernels and real terminals from the tests (no mocks).

- Kernels: ``running_kernel()`` starts an ipykernel with jupyter_client on
  loopback and always shuts it down; ``run_cell`` executes one cell and
  collects its output; ``create_subshell`` asks ipykernel 7 for a subshell.
  They live in labkit.bench.notebook, which measures the same setup.
- Terminals: ``spawn_in_pty`` starts a REPL under pexpect in a pseudo
  terminal, and ``closing`` kills it however the test ends.
- ``echo_once`` is the test process's side of the echo server the kernel or
  REPL runs (ECHO_SERVER_CODE).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys

from labkit.bench._net import recv_exactly
from labkit.bench.notebook import (  # noqa: F401  (re-exported for the tests)
    ECHO_SERVER_CODE, CellResult, echo_round_trips, run_cell, running_kernel,
)


def kernel_has_subshells(kc, timeout: float = 10) -> bool:
    """Whether the kernel offers subshells (JEP 91: ipykernel 7 says so in
    kernel_info's supported_features; 6.x has none)."""
    reply = kc.kernel_info(reply=True, timeout=timeout)
    return "kernel subshells" in reply["content"].get("supported_features", ())


def create_subshell(kc, timeout: float = 10) -> str:
    """Ask the kernel for a new subshell (a control-channel request); its id."""
    msg = kc.session.msg("create_subshell_request", {})
    kc.control_channel.send(msg)
    while True:
        reply = kc.control_channel.get_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]["subshell_id"]


def echo_once(port: int, payload: bytes = b"ping", timeout: float = 2) -> bytes:
    """Connect to the echo server, send ``payload``, return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        return recv_exactly(conn, len(payload))


def spawn_in_pty(args: list[str], timeout: float = 15, term: str = "dumb"):
    """Start ``python ARGS`` in a pseudo terminal (pexpect), quiet and
    colourless, with this checkout of labkit importable; ``term`` is $TERM."""
    import pexpect
    env = dict(os.environ, TERM=term, PYTHONSTARTUP="", NO_COLOR="1",
               PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return pexpect.spawn(sys.executable, args, env=env, timeout=timeout,
                         encoding="utf-8", dimensions=(40, 200))


@contextlib.contextmanager
def closing(child):
    """Kill the pty child when the test is done, whatever happened."""
    try:
        yield child
    finally:
        child.close(force=True)
