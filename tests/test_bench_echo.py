"""Specification of the TCP echo benchmark (labkit/bench/echo.py).

Runs the smallest configuration (N = 1, 0.3 s per run) against labkit and
asyncio, which is always there, and checks the structure of what it prints
and of its JSON. Timings are never asserted: the machine is shared.
"""
import json
import re

import pytest

from labkit.bench import echo

pytestmark = pytest.mark.timeout(60)


def test_quick_run_prints_one_row_per_server_with_rates_and_ratios(tmp_path, capsys):
    out_file = tmp_path / "echo.json"
    status = echo.main(["--quick", "--impls", "labkit,asyncio", "--json", str(out_file)])
    out = capsys.readouterr().out

    assert status == 0, out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("server"))
    assert "N=1 msg/s" in header and "labkit/peer" in header
    labkit_row = next(line for line in lines if line.startswith("labkit StreamServer"))
    asyncio_row = next(line for line in lines if line.startswith("asyncio streams"))
    # labkit: a rate and no ratio; the peer: a rate and a ratio labkit/peer
    assert re.search(r"[\d,]+\s+-\s", labkit_row), labkit_row
    assert re.search(r"[\d,]+\s+\d+\.\d\d×", asyncio_row), asyncio_row
    assert "higher is better" in out

    document = json.loads(out_file.read_text())
    for impl in ("labkit", "asyncio"):
        result = document["results"][impl]["1"]
        assert result["status"] == "ok" and result["msgs_per_s"] > 0
        assert result["conns"] == 1


def test_format_table_is_a_pure_function_of_the_results():
    ok = {"status": "ok", "msgs_per_s": 100_000.0, "server_cpu": 1.0, "client_cpu": 0.5}
    results = {"labkit": {50: ok},
               "gevent": {50: dict(ok, msgs_per_s=50_000.0)},
               "uvloop": {50: {"status": "n/a", "reason": "not installed"}}}
    table = echo.format_table(results, [50]).splitlines()
    assert table[0].split()[:3] == ["server", "N=50", "msg/s"]
    assert "100,000" in table[1] and "10.0" in table[1]     # µs of server CPU per msg
    assert "2.00×" in table[2]                             # labkit twice as fast
    assert "n/a" in table[3]


def test_unknown_server_is_a_usage_error():
    with pytest.raises(SystemExit):
        echo.parse_args(["--impls", "nginx"])


def test_the_loop_server_echoes_what_each_client_sends_whole_and_in_order():
    # labkit-loop's callbacks, with a message far bigger than a socket
    # buffer (sends the kernel takes in part, then a wait for writable),
    # two clients at once, and one that closes first.
    import socket
    import threading
    server, port = echo.start_server("labkit-loop")
    try:
        big = bytes(range(256)) * 32768   # 8 MiB
        a = socket.create_connection(("127.0.0.1", port), timeout=20)
        b = socket.create_connection(("127.0.0.1", port), timeout=20)
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.close()
        with a, b:
            a.sendall(b"hello")
            assert a.recv(100) == b"hello"
            # (the server echoes as it reads: send from a thread, read here)
            sender = threading.Thread(target=b.sendall, args=(big,), daemon=True)
            sender.start()
            got = bytearray()
            while len(got) < len(big):
                chunk = b.recv(1 << 20)
                assert chunk
                got += chunk
            sender.join(20)
            assert got == big
            a.sendall(b"again")
            assert a.recv(100) == b"again"
        # New connections take the numbers of the closed ones' fds: served too.
        for n in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as d:
                d.sendall(b"cycle %d" % n)
                assert d.recv(100) == b"cycle %d" % n
    finally:
        server.kill()
        server.wait()
