"""Cells of notebooks/02_a_server_in_the_notebook.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        Write `shout(sock, address)`, a connection handler that answers every
        message with the same bytes in upper case (`data.upper()`), until the
        client closes. The checker starts a `StreamServer` with it, talks to
        it, and stops it.
        """,
        stub="""
        def shout(sock, address):
            while True:
                data = sock.recv(4096)
                if not data:
                    return
                sock.sendall(data)      # your change here
        """,
        solution="""
        def shout(sock, address):
            while True:
                data = sock.recv(4096)
                if not data:
                    return
                sock.sendall(data.upper())
        """,
        check="""
        shouting = StreamServer(("127.0.0.1", 0), shout)
        shouting.start()
        try:
            with socket.create_connection(("127.0.0.1", shouting.server_port)) as conn:
                conn.sendall(b"hello")
                reply = conn.recv(4096)
        finally:
            shouting.stop(timeout=1)
        assert reply == b"HELLO", f"the server answered {reply!r}"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        Write `ask_all(port, messages)`: one client greenlet per message, all
        connected to the echo server at `port` *at the same time*; each sends
        its message and returns the reply. Return the replies in the order of
        `messages`. The checker counts how many connections were open at once.
        """,
        stub="""
        def ask_all(port, messages):
            replies = []
            for message in messages:
                with socket.create_connection(("127.0.0.1", port)) as conn:
                    conn.sendall(message)
                    replies.append(conn.recv(4096))
            return replies
        """,
        solution="""
        def ask_all(port, messages):
            def ask(message):
                with socket.create_connection(("127.0.0.1", port)) as conn:
                    conn.sendall(message)
                    return conn.recv(4096)
            clients = [labkit.spawn(ask, message) for message in messages]
            labkit.joinall(clients)
            return [g.value for g in clients]
        """,
        check="""
        open_now, most_open = 0, 0

        def slow_echo(sock, address):      # holds each connection 0.2 s
            global open_now, most_open
            open_now += 1
            most_open = max(most_open, open_now)
            try:
                data = sock.recv(4096)
                labkit.sleep(0.2)
                sock.sendall(data)
            finally:
                open_now -= 1

        counting = StreamServer(("127.0.0.1", 0), slow_echo)
        counting.start()
        try:
            replies = ask_all(counting.server_port, [b"a", b"b", b"c"])
        finally:
            counting.stop(timeout=1)
        assert replies == [b"a", b"b", b"c"], f"ask_all returned {replies}"
        assert most_open == 3, f"at most {most_open} connection(s) were open at once, not 3"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 02 · A server that lives in the notebook

    With `%load_ext labkit`, the hub keeps running while the kernel is idle —
    between cells. So you can start a server in one cell, talk to it from the
    next, inspect it, and watch it live, without threads and without blocking
    the notebook.
    """),
    code("""
    %load_ext labkit
    import collections
    import threading
    import labkit
    from labkit import socket
    from labkit.server import StreamServer
    """),
    md("""
    ## An echo server

    `StreamServer` runs one greenlet that accepts connections and spawns one
    greenlet per connection to run `echo`. `sock.recv` looks blocking, but it
    only *parks this greenlet* until data arrives: every other connection keeps
    being served meanwhile.
    """),
    code("""
    served = collections.Counter()      # bytes echoed, per client address

    def echo(sock, address):
        labkit.getcurrent().name = f"echo-{address[1]}"
        while True:
            data = sock.recv(4096)          # parks until the client sends something
            if not data:
                return                      # the client closed the connection
            sock.sendall(data)
            served[address] += len(data)

    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()                          # returns at once; the server runs in the hub
    server._serving.name = "echo-server"
    print("listening on port", server.server_port)
    """, tag="server-start"),
    md("""
    The cell finished, yet the server is still there, parked in `accept`.
    `%labkit_status` lists the live greenlets and what each one waits for.
    """),
    code("""
    %labkit_status
    """, tag="status-idle"),
    md("""
    ## Clients, as greenlets

    Each client is a greenlet too. Three of them talk to the server at the same
    time; `joinall` waits for all of them (cooperatively: the server runs
    while this cell waits).
    """),
    code("""
    def client(number, messages):
        replies = []
        with socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            for i in range(messages):
                line = f"client {number}, message {i}\\n".encode()
                conn.sendall(line)
                replies.append(conn.recv(4096).decode().strip())
                labkit.sleep(0.01)
        return replies

    clients = [labkit.spawn(client, n, 3) for n in range(3)]
    labkit.joinall(clients)
    for g in clients:
        print(g.value)
    print("connections served so far:", len(served))
    """, tag="clients"),
    md("""
    ## A client from outside the hub

    A plain Python thread has no hub of its own: its sockets block *that
    thread* only. It can talk to our server while this notebook's main thread
    keeps running the hub. Notice how the cell waits: with `labkit.sleep`, so
    the hub keeps serving. (`thread.join()` would block the main thread — and
    with it the hub and the server the thread is waiting for.)
    """),
    code("""
    import socket as stdlib_socket

    thread_replies = []

    def thread_client():
        with stdlib_socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            for i in range(3):
                conn.sendall(f"from a thread {i}".encode())
                thread_replies.append(conn.recv(4096).decode())

    thread = threading.Thread(target=thread_client)
    thread.start()
    while thread.is_alive():
        labkit.sleep(0.02)             # wait cooperatively: the server keeps answering
    print(thread_replies)
    """, tag="thread-client"),
    md("""
    ## Watching it live

    The dashboard records what the hub does and redraws a few times a second:
    a timeline of the last seconds, counters, and the latest calls that blocked
    the loop. It keeps updating while the kernel is idle. Start some background
    load, show the dashboard, and watch (in a live notebook, run the cells one
    by one and look at the picture between them).
    """),
    code("""
    from tracing.dashboard import Dashboard

    def chatty(number):
        with socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            while True:
                conn.sendall(b"hello")
                conn.recv(4096)
                labkit.sleep(0.05 * (number + 1))

    load = [labkit.spawn(chatty, n) for n in range(3)]
    for n, g in enumerate(load):
        g.name = f"chatty-{n}"
    dash = Dashboard(window=3)
    dash
    """, tag="dashboard"),
    code("""
    labkit.sleep(1.5)      # let it run for a moment (in a live notebook, just wait)
    print("dashboard refreshes so far:", dash.refreshes)
    """),
    md("""
    ## Cleaning up

    `dash.close()` stops the dashboard's recorder and its drawing thread;
    `killall` stops the load; `server.stop()` closes the listener and lets the
    handlers finish.
    """),
    code("""
    dash.close()
    labkit.killall(load)
    server.stop(timeout=1)
    print("labkit threads left:", [t.name for t in threading.enumerate()
                                  if t.name.startswith("labkit-dashboard")])
    print("server closed:", server.closed)
    """, tag="cleanup"),
    md("""
    ## What to remember

    - Greenlets spawned in a cell keep running after the cell ends: the hub is
      a guest of the kernel's own event loop.
    - Waiting in a cell should be cooperative (`labkit.sleep`, `joinall`), or
      the hub — and everything it serves — stops with it.
    - `%labkit_status` and the dashboard tell you what is alive and what it
      is doing.

    Next: **03**, what happens when something *does* block the loop.
    """),
    *exercises(EXERCISES),
]
