"""labkit.backdoor: a Python prompt over TCP, loopback by default."""
import warnings

import pytest

import labkit
from labkit import socket
from labkit.backdoor import BackdoorServer

pytestmark = pytest.mark.timeout(30)


def read_until(sock, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_is_a_prompt_into_the_process(capsys):
    server = BackdoorServer(locals={"answer": 42})
    server.start()
    try:
        assert server.server_host == "127.0.0.1"          # loopback by default
        assert "labkit backdoor on 127.0.0.1" in capsys.readouterr().err
        with socket.create_connection(("127.0.0.1", server.server_port)) as client:
            assert b"labkit backdoor" in read_until(client, b">>> ")
            client.sendall(b"answer + 1\n")
            assert b"43" in read_until(client, b">>> ")
            client.sendall(b"print('from', 'print')\n")
            assert b"from print" in read_until(client, b">>> ")
            client.sendall(b"import labkit; labkit.sleep(0.01); 'slept'\n")
            assert b"'slept'" in read_until(client, b">>> ")
    finally:
        server.stop()


def test_the_other_greenlets_keep_running_during_a_session():
    server = BackdoorServer()
    server.start()
    ticks = []
    ticker = labkit.spawn(lambda: [ticks.append(labkit.sleep(0.002)) for _ in range(20)])
    try:
        with socket.create_connection(("127.0.0.1", server.server_port)) as client:
            read_until(client, b">>> ")
            client.sendall(b"x = 1\n")
            read_until(client, b">>> ")
        ticker.join(5)
        assert len(ticks) == 20
    finally:
        server.stop()


def test_a_non_loopback_address_is_warned_about():
    server = BackdoorServer(("0.0.0.0", 0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server.start()
    server.stop()
    assert any("not a loopback" in str(w.message) for w in caught)
