"""Cells of notebooks/09_my_notebook_is_stuck.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        `wait_for(flag, limit)` waits until another greenlet puts something in
        the list `flag`, and returns True — or returns False after `limit`
        seconds. As written it spins: it never lets the other greenlet run,
        so it always gives up (and blocks the loop while it spins). Make it
        wait cooperatively.
        """,
        stub="""
        def wait_for(flag, limit):
            deadline = time.perf_counter() + limit
            while not flag:
                if time.perf_counter() > deadline:
                    return False
            return True
        """,
        solution="""
        def wait_for(flag, limit):
            deadline = time.perf_counter() + limit
            while not flag:
                if time.perf_counter() > deadline:
                    return False
                labkit.sleep(0.005)      # let the others run, then look again
            return True
        """,
        check="""
        flag = []

        def raise_the_flag():
            labkit.sleep(0.05)
            flag.append("up")

        labkit.spawn(raise_the_flag)
        assert wait_for(flag, 1.0) is True, "the flag went up after 0.05 s, but wait_for gave up"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        Write `stop_all_servers()`: stop every labkit server that is still
        listening in this kernel (`labkit.servers()`), and return how many it
        stopped.
        """,
        stub="""
        def stop_all_servers():
            return 0        # your code here
        """,
        solution="""
        def stop_all_servers():
            live = labkit.servers()
            for server in live:
                server.stop()
            return len(live)
        """,
        check="""
        for _ in range(2):
            StreamServer(("127.0.0.1", 0), lambda sock, address: None).start()
        stopped = stop_all_servers()
        assert stopped >= 2, f"stop_all_servers() says it stopped {stopped}"
        assert labkit.servers() == [], f"still listening: {labkit.servers()}"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 09 · My notebook is stuck

    A cell shows `[*]` and never finishes; the next one will not start;
    JupyterLab may even say "Idle". Usually a greenlet is at fault: a
    greenlet that never waits holds the one thread that runs the hub — and
    the kernel's own loop, which the hub is a guest of. This lesson makes it
    happen on purpose, and shows the four tools labkit gives you:

    1. the **blocking detector**: it names the line of every call that holds
       the loop too long (on after `%load_ext labkit`);
    2. the **stuck-loop watchdog**: while the loop is *still* stuck, it says
       where;
    3. the **interrupt** (■, or *Kernel → Interrupt*): it stops the runaway
       greenlet and leaves the kernel, the hub and the other greenlets alive;
    4. `%labkit_status` and `labkit.servers()`: what is alive, what it waits
       for, which servers still hold a port.
    """),
    code("""
    %load_ext labkit
    import os
    import signal
    import threading
    import time
    import labkit
    import tracing.magics
    from labkit.server import StreamServer

    %trace_blocking
    """, tag="detector-on"),
    md("""
    ## A call that blocks, reported

    The real `time.sleep` in a greenlet stops the whole loop while it sleeps.
    labkit warns the first time it sees one, and the detector reports the
    block — its length and the line — under the cell.
    """),
    code("""
    def nap():
        time.sleep(0.15)          # the real sleep: every greenlet stops

    labkit.spawn(nap).join()
    """, tag="blocking-sleep"),
    md("""
    ## A greenlet that never yields

    `spin` below loops forever without waiting. Once it runs, nothing else
    can: not the hub, not the kernel. The watchdog notices that the loop has
    not come back for a while and says so *while it is stuck* (normally after
    5 s; for this lesson, after 1 s). Then press ■ (*Interrupt the kernel*):
    labkit sees that a greenlet holds the loop, and raises
    `KeyboardInterrupt` **in that greenlet**, at the line it is running.

    So that this notebook can run on its own, a timer thread presses ■ for
    us after 2 s: it sends the kernel `SIGINT`, which is exactly what the
    button does. In a live notebook, remove that line and press ■ yourself.
    """),
    code("""
    tracing.magics.STUCK_AFTER = 1.0      # report a stuck loop after 1 s (default 5 s)
    %trace_blocking on 0.1
    """),
    code("""
    def spin():
        steps = 0
        while True:
            steps += 1                    # no wait, ever: the loop is stuck here

    spinner = labkit.spawn(spin)
    spinner.name = "spin"
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()   # "presses ■"
    labkit.sleep(10)                      # this cell waits; spin runs instead
    """, tag="runaway", raises=True),
    md("""
    Read the output from the top: the watchdog's "loop stuck for 1.0 s in
    greenlet spin at In[n], line L" while it was stuck; then the
    `KeyboardInterrupt` that stopped it, naming the greenlet and the line;
    then the detector's report of the whole block, once it ended. The
    interrupt ends the cell, which was waiting (a greenlet's
    `KeyboardInterrupt` goes to the main greenlet: it means "stop").

    Had the cell not been waiting — `spin` started, the cell finished, and the
    *next* cell hangs at `[*]` — the same button works the same way, and the
    next cell then runs normally. If the greenlet catches the
    `KeyboardInterrupt` and goes on spinning, press ■ again: the second one
    is raised at once.

    The kernel is fine, and so is the hub:
    """),
    code("""
    print("spin dead:", spinner.dead)
    print("it ended with:", repr(spinner.exception))
    labkit.sleep(0.01)                    # the hub still runs
    %labkit_status
    """, tag="after-interrupt"),
    md("""
    `%labkit_status` lists the greenlets that are alive (none, now) and
    remembers where the loop was last stuck.

    ## A server that will not go away

    A server started in a cell lives on after the cell — that is the point
    (notebook 02). But re-run a cell that starts a server on a *fixed* port,
    and the new server cannot bind it: the old one still listens.
    `labkit.servers()` lists the live servers, and the error names the one
    holding the port and how to stop it.
    """),
    code("""
    import socket as stdlib_socket
    with stdlib_socket.socket() as probe:          # find a free port
        probe.bind(("127.0.0.1", 0))
        PORT = probe.getsockname()[1]

    def start_echo():
        def echo(sock, address):
            while data := sock.recv(4096):
                sock.sendall(data)
        server = StreamServer(("127.0.0.1", PORT), echo)
        server.start()
        return server

    first = start_echo()
    print("listening on port", first.server_port)
    """, tag="first-server"),
    md("""
    Now "run that cell again" — the same call, a second time:
    """),
    code("""
    second = start_echo()
    """, tag="address-in-use", raises=True),
    md("""
    The error's note (at its end) names the server that holds the port and
    how to stop it. `labkit.servers()` lists every labkit server still
    listening in this kernel:
    """),
    code("""
    print("live servers:", labkit.servers())
    for server in labkit.servers():
        server.stop()
    print("live servers:", labkit.servers())
    """, tag="servers-stopped"),
    md("""
    The port is free again: the cell can run once more.
    """),
    code("""
    second = start_echo()
    print("started again on port", second.server_port)
    second.stop()
    """, tag="restarted"),
    md("""
    ## What to remember

    | symptom | tool |
    |---|---|
    | a cell is slow, others stall | the blocking detector's report names the line |
    | `[*]` forever | the watchdog's "loop stuck ... at In[n], line L" |
    | a greenlet will not stop | ■ Interrupt; twice if it swallows the first |
    | what is still running? | `%labkit_status` (`--stacks` for whole stacks) |
    | "Address already in use" | `labkit.servers()`, then `.stop()` |

    Next: **10**, the hub's socket wait, built by hand.
    """),
    *exercises(EXERCISES),
]
