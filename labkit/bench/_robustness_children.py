"""The child-process halves of the robustness scenarios that need a process of their own.

Private to :mod:`labkit.bench.robustness`: each function here runs in a
fresh interpreter started as ``python -m labkit.bench.robustness --child
NAME[:ARG]``, does what it must not do to the parent (lower the fd limit,
take SIGINT, fork), and prints one JSON line that the parent scenario of
the same name judges::

    emfile_server       <- robustness.emfile_accept_backoff
    keyboard_interrupt  <- robustness.keyboard_interrupt_while_dispatching
    fork                <- robustness.fork_with_live_servers
"""
from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time

from labkit.bench.robustness import _echo_handler, _echo_once

__all__ = ["CHILDREN"]


def _child_emfile_server(spare_fds: str) -> None:
    import resource

    from labkit.hub import get_hub, wait_read
    from labkit.server import StreamServer

    class Counter(io.StringIO):
        reports, first, last = 0, None, None

        def write(self, text):
            if "Too many open files" in text:
                now = time.monotonic()
                Counter.reports += 1
                Counter.first = Counter.first or now
                Counter.last = now
            return len(text)

    get_hub().exception_stream = Counter()
    server = StreamServer(("127.0.0.1", 0), _echo_handler, backlog=256)
    server.start()
    in_use = len(os.listdir("/proc/self/fd"))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + int(spare_fds), hard))
    print(json.dumps({"port": server.server_port}), flush=True)
    wait_read(0)                          # the parent closes our stdin: done
    server.stop()
    span = (Counter.last - Counter.first) if Counter.first else 0.0
    print(json.dumps({"emfile_reports": Counter.reports, "emfile_span": span}), flush=True)


def _child_keyboard_interrupt(signals: str) -> None:
    from labkit import sleep, spawn
    from labkit.hub import Hub, get_hub
    signals = int(signals)
    hub = get_hub()
    in_hub = [0]
    original = Hub._deliver_interrupt

    def counting_deliver(self):
        in_hub[0] += 1
        original(self)
    Hub._deliver_interrupt = counting_deliver

    stop = [False]
    switches = [0]

    def worker():
        while not stop[0]:
            switches[0] += 1
            sleep(0)

    workers = [spawn(worker) for _ in range(50)]
    hub.exception_stream = io.StringIO()   # interrupted workers are reported
    fired = []
    n_timers = 300
    for i in range(n_timers):
        hub.loop.timer(random.uniform(0.0, 0.3 * signals + 0.3), fired.append, i)

    def sender():
        for _ in range(signals):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=sender)
    t.start()
    interrupts = 0
    deadline = time.monotonic() + 0.2 * signals + 5
    # Every statement of these loops runs in the main greenlet, where a
    # signal may land between any two bytecodes -- in the loop's condition
    # too, not only inside sleep(): so the whole turn is inside the try.
    while True:
        try:
            if not (time.monotonic() < deadline and (interrupts < signals or t.is_alive())):
                break
            sleep(0.01)
        except KeyboardInterrupt:
            interrupts += 1
    # On a slow machine (the sanitizer build) the deadline can pass before
    # the sender is done: its last signals then arrive during this join.
    while True:
        try:
            if not t.is_alive():
                break
            t.join()
        except KeyboardInterrupt:
            interrupts += 1
    try:
        while len(fired) < n_timers and time.monotonic() < deadline + 5:
            sleep(0.05)
    except KeyboardInterrupt:
        interrupts += 1
    stop[0] = True
    for g in workers:
        g.join(timeout=5)
    after_ok = spawn(lambda: (sleep(0.001), 42)[1]).get() == 42
    print(json.dumps({
        "interrupts": interrupts, "in_hub": in_hub[0], "timers": n_timers,
        "timers_lost": n_timers - len(set(fired)), "after_ok": after_ok,
        "switches": switches[0],
        "workers_interrupted": sum(isinstance(g.exception, KeyboardInterrupt) for g in workers),
    }), flush=True)


def _child_fork() -> None:
    from labkit import sleep, spawn
    from labkit.server import StreamServer

    server = StreamServer(("127.0.0.1", 0), _echo_handler)
    server.start()
    assert _echo_once(server.server_port, b"before fork")
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the child
        code = 1
        try:
            os.close(report_r)
            server.close()                        # the parent's, not ours to serve
            own = StreamServer(("127.0.0.1", 0), _echo_handler)
            own.start()
            served = sum(_echo_once(own.server_port, f"child {i}".encode()) for i in range(20))
            reached = _echo_once(server.server_port, b"child to parent")
            timers = []
            for i in range(10):
                spawn(lambda i=i: (sleep(0.001 * i), timers.append(i)))
            sleep(0.05)
            own.stop()
            os.write(report_w, json.dumps({"served": served, "lost": 20 - served
                                           + (not reached) + (10 - len(timers))}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    served = lost = 0
    while True:                                   # keep serving while the child lives
        done, status = os.waitpid(pid, os.WNOHANG)
        ok = _echo_once(server.server_port, f"parent {served}".encode())
        served += ok
        lost += not ok
        if done:
            break
        sleep(0.005)
    child = json.loads(os.read(report_r, 4096) or b'{"served": 0, "lost": 1}')
    after_ok = all(_echo_once(server.server_port, b"after %d" % i) for i in range(10))
    server.stop()
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status),
                      "child_served": child["served"], "child_lost": child["lost"],
                      "parent_served": served, "parent_lost": lost,
                      "parent_after_ok": after_ok}), flush=True)


#: ``--child`` name -> the function that runs in the child process
CHILDREN = {"emfile_server": _child_emfile_server, "fork": _child_fork,
            "keyboard_interrupt": _child_keyboard_interrupt}
