"""``python -m labkit tour``: watch a small server at work, and catch one mistake.

The tracer's demo, and a plug-in command of labkit's command line (the
``labkit.commands`` entry point in pyproject.toml; see labkit/plugins.py).

The tour is a scripted scenario that runs in about a second, with no Jupyter
and nothing to install beyond labkit and matplotlib:

1. an echo server (:class:`labkit.server.StreamServer`: one greenlet accepts,
   one greenlet per connection) listens on loopback;
2. three clients connect and each sends a few messages, timing every round
   trip, with short cooperative sleeps in between;
3. one greenlet, "careless", makes the classic mistake: it calls the real
   ``time.sleep`` instead of ``labkit.sleep``. That call does not park the
   greenlet, it stops the whole thread -- every other greenlet waits.

All of it runs under the tracer with the blocking monitor on
(``tracing.trace(blocking=...)``). Afterwards the tour prints:

- the trace summary: per greenlet, how often it ran, for how long, and how
  long it spent waiting;
- the blocking report: how long the loop was stuck, and the file:line that
  did it -- the line in this file that calls ``time.sleep``;
- what the block cost the clients: how late their short naps ended, at
  worst against typically;

and writes two files into the current directory (or ``--out DIR``):
``labkit-tour-timeline.png`` (one lane per greenlet, the block in red) and
``labkit-tour.perfetto.json`` (open it in https://ui.perfetto.dev), and,
where the ``perfetto`` package is installed, ``labkit-tour.pftrace`` (the
same in Perfetto's own format, which loads faster).

The timing of the scenario is fixed (the block starts 30 ms in and lasts
150 ms), so the files look the same from run to run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import labkit
from labkit import socket
from labkit.server import StreamServer

import tracing
from tracing import legend

#: The threshold of the blocking monitor: a stretch longer than this without
#: control coming back to the hub is reported.
BLOCKING_THRESHOLD = 0.05
#: How long the careless greenlet blocks the loop, and when it starts.
BLOCK_SECONDS = 0.15
BLOCK_AFTER = 0.03
CLIENTS = 3
MESSAGES = 6
#: Pause between two messages of one client. Short, so that the clients are
#: in the middle of their conversations when the block hits.
THINK_TIME = 0.02

TIMELINE_FILE = "labkit-tour-timeline.png"
#: Twice a screen's 100 dpi: sharp on a projector or a slide.
TIMELINE_DPI = 200
PERFETTO_FILE = "labkit-tour.perfetto.json"
PROTO_FILE = "labkit-tour.pftrace"


# -- the scenario --------------------------------------------------------------

def echo(sock, address) -> None:
    """The server's handler: send back every byte, until the client closes."""
    labkit.getcurrent().name = f"echo-handler-{address[1]}"
    while True:
        data = sock.recv(4096)
        if not data:
            return
        sock.sendall(data)


def client(number: int, port: int, lateness: list) -> None:
    """Send MESSAGES short lines, each echoed back, with a short nap after
    each; append how late each nap ended (seconds past THINK_TIME)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for i in range(MESSAGES):
            message = f"client {number} says {i}\n".encode()
            conn.sendall(message)
            received = b""
            while len(received) < len(message):
                received += conn.recv(4096)
            nap_start = time.perf_counter()
            labkit.sleep(THINK_TIME)   # cooperative: the others run meanwhile
            lateness.append(time.perf_counter() - nap_start - THINK_TIME)


def careless() -> None:
    """Wait a little (cooperatively), then block the loop (the mistake)."""
    labkit.sleep(BLOCK_AFTER)
    time.sleep(BLOCK_SECONDS)   # the mistake: the real sleep stops every greenlet


def run_scenario():
    """Run the scenario under the tracer; return (trace, how late the
    clients' naps ended, in s)."""
    lateness: list[float] = []
    with tracing.trace(blocking=BLOCKING_THRESHOLD, report=False) as trace:
        server = StreamServer(("127.0.0.1", 0), echo)
        server.start()
        server._serving.name = "echo-server"   # the accept loop's greenlet
        greenlets = [labkit.spawn(client, n, server.server_port, lateness)
                     for n in range(1, CLIENTS + 1)]
        for n, g in enumerate(greenlets, 1):
            g.name = f"client-{n}"
        blocker = labkit.spawn(careless)
        blocker.name = "careless"
        labkit.joinall(greenlets + [blocker], raise_error=True)
        server.stop(timeout=1)
    return trace, lateness


# -- the report ----------------------------------------------------------------

def _write_files(trace, out_dir: str) -> list[str]:
    """The timeline PNG, the Perfetto JSON and, if the perfetto package is
    there, the Perfetto protobuf; their absolute paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.abspath(os.path.join(out_dir, TIMELINE_FILE))
    perfetto = os.path.abspath(os.path.join(out_dir, PERFETTO_FILE))
    fig = trace.timeline()
    fig.suptitle("labkit tour: echo server, three clients, one blocking call")
    FigureCanvasAgg(fig)   # Agg, explicitly: no display, no pyplot window
    fig.savefig(png, dpi=TIMELINE_DPI, bbox_inches="tight")
    trace.to_perfetto(perfetto)
    written = [png, perfetto]
    try:
        proto = os.path.abspath(os.path.join(out_dir, PROTO_FILE))
        trace.to_perfetto_proto(proto)
        written.append(proto)
    except ModuleNotFoundError:   # optional: pip install perfetto
        pass
    return written


def _print_blocking_report(trace) -> None:
    blocks = trace.blocking()
    print(f"\nWhat blocked the loop (the blocking monitor, threshold "
          f"{BLOCKING_THRESHOLD * 1e3:.0f} ms):")
    if not blocks:
        print("  nothing -- every greenlet gave control back in time")
        return
    for block in blocks:
        print(f"  {block}")
        for frame in block.stack[-3:]:
            print(f"      {frame}")


def _print_cost(lateness: list[float]) -> None:
    if not lateness:
        return
    typical, worst = statistics.median(lateness), max(lateness)
    print(f"\nWhat it cost the others: the clients asked for {THINK_TIME * 1e3:.0f} ms naps. "
          f"Typically they woke\n{typical * 1e3:.1f} ms late; the worst woke "
          f"{worst * 1e3:.0f} ms late, because their timers could not fire\n"
          f"while careless held the thread -- though they had nothing to do with it.")


def main(argv: list[str] | None = None) -> int:
    """An echo server, clients and one blocking call, traced; writes a
    timeline PNG and a Perfetto JSON (--out DIR)

    ``python -m labkit tour [--out DIR]``; returns the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit tour",
        description="Run an echo server, clients and one blocking call under the "
                    "tracer; print what happened and write a timeline and a "
                    "Perfetto trace.")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="where to write the timeline PNG and the Perfetto JSON "
                             "(default: the current directory)")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.exit(1, "labkit tour: the timeline needs matplotlib: "
                       "pip install matplotlib (or labkit[jupyter])\n")

    print(f"labkit tour: an echo server, {CLIENTS} clients and one careless greenlet, "
          f"traced.\n")
    print(f"  - echo-server accepts connections; one echo-handler greenlet per client")
    print(f"  - client-1..{CLIENTS} send {MESSAGES} messages each, "
          f"labkit.sleep({THINK_TIME}) between them")
    print(f"  - careless calls time.sleep({BLOCK_SECONDS}) -- the real one -- after "
          f"{BLOCK_AFTER * 1e3:.0f} ms\n")
    started = time.perf_counter()
    trace, lateness = run_scenario()
    elapsed = time.perf_counter() - started
    print(f"Done in {elapsed * 1e3:.0f} ms: {len(lateness)} echoes, {trace!r}\n")

    print("What each greenlet did (the trace summary):")
    print(trace.summary())
    _print_blocking_report(trace)
    _print_cost(lateness)

    written = _write_files(trace, args.out)
    print("\nFiles written:\n" + "\n".join(f"  {path}" for path in written))
    if len(written) > 2:
        proto_note = (f"  - {PROTO_FILE}: the same, in Perfetto's own format "
                      f"(smaller, loads faster).\n")
    else:
        proto_note = (f"  - (pip install perfetto to get {PROTO_FILE} too: the same in "
                      f"Perfetto's own format, which loads faster)\n")
    print(f"\nHow to look at them:\n"
          f"  - {TIMELINE_FILE}: any image viewer. One lane per greenlet, time "
          f"left to right;\n    the colours (the legend under the picture):\n"
          f"{legend.text(indent='      ')}\n"
          f"  - {PERFETTO_FILE}: open https://ui.perfetto.dev and drag the file onto "
          f"the page\n    (or chrome://tracing -> Load). Each greenlet is a thread; "
          f"arrows are switches;\n    waits are async slices (a late wake-up "
          f"nested in its wait); counters: ready queue,\n    loop lag, live "
          f"greenlets.\n" + proto_note)
    print("Next: in Jupyter, %load_ext labkit, then %%trace on a cell, or "
          "tracing.Dashboard() to watch live\n(notebooks/ has the lessons); "
          "python -m labkit bench to see what a switch costs.")
    return 0
