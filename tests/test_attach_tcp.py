"""tracing/attach.py over TCP: 127.0.0.1 with a token, the opt-in beside the Unix socket.

A real labkit process started with ``LABKIT_CONSOLE=tcp`` serves on a
loopback port; the token is in a 0600 file next to where its socket would
be. The right token is served, a wrong or missing one is refused with an
error while the process goes on serving others, and no address but a
loopback one can be listened on.
"""
import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from tracing import attach

pytestmark = pytest.mark.timeout(60)

TARGET = """\
import labkit

def ticker():
    while True:
        labkit.sleep(0.01)

labkit.spawn(ticker).name = "tcp-ticker"
labkit.sleep(0.05)
print("ready", flush=True)
labkit.sleep(30)
"""


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("attach-tcp") / "run"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture(scope="module")
def target(tmp_path_factory, runtime_dir):
    script = tmp_path_factory.mktemp("attach-tcp-script") / "tcp_target.py"
    script.write_text(TARGET)
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir, LABKIT_CONSOLE="tcp")
    child = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if line.strip() != "ready":
            pytest.fail(f"target did not start: {line!r} {child.stderr.read()[-2000:]}")
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()


def token_info(runtime_dir, pid):
    path = os.path.join(runtime_dir, "labkit", f"console-{pid}.token")
    with open(path) as f:
        return path, json.load(f)


def ask(host, port, request: bytes) -> dict:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        line = sock.makefile("rb").readline()
    from tracing.attach_client import decode
    return decode(json.loads(line))   # a frame's rows come as lists under "columns"


def test_the_token_file_is_private_and_names_a_loopback_port(target, runtime_dir):
    path, info = token_info(runtime_dir, target.pid)
    mode = os.lstat(path)
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.getuid()
    assert info["host"] == "127.0.0.1" and info["pid"] == target.pid
    assert len(info["token"]) == 64
    # no Unix socket: the process serves over TCP only, as asked
    assert not os.path.exists(os.path.join(runtime_dir, "labkit", f"console-{target.pid}.sock"))


def test_the_right_token_is_served_and_a_wrong_or_missing_one_refused(target, runtime_dir):
    _, info = token_info(runtime_dir, target.pid)
    host, port, token = info["host"], info["port"], info["token"]
    hello = ask(host, port, json.dumps({"op": "hello", "token": token}).encode() + b"\n")
    assert hello["pid"] == target.pid
    wrong = "0" * len(token) if token[0] != "0" else "1" * len(token)
    for request in ({"op": "frame", "token": wrong}, {"op": "frame"},
                    {"op": "frame", "token": token[:-1]}, {"op": "frame", "token": 12},
                    "not a dict"):
        answer = ask(host, port, json.dumps(request).encode() + b"\n")
        assert answer.get("error", "").startswith("refused: wrong or missing token"), answer
        assert "rows" not in answer
    # ... and it goes on serving the others
    frame = ask(host, port, json.dumps({"op": "frame", "token": token}).encode() + b"\n")
    assert "tcp-ticker" in {row["name"] for row in frame["rows"]}
    assert target.poll() is None


def test_the_command_finds_the_token_by_itself(target, runtime_dir):
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir, COLUMNS="160")
    result = subprocess.run([sys.executable, "-m", "labkit", "console", str(target.pid), "--once"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "tcp-ticker" in result.stdout and f"pid {target.pid}" in result.stdout


def test_a_client_with_a_wrong_token_gets_permission_error(target, runtime_dir, tmp_path):
    _, info = token_info(runtime_dir, target.pid)
    forged = tmp_path / "forged.token"
    forged.write_text(json.dumps(dict(info, token="f" * 64)))
    client = attach.AttachClient(target.pid, token_file=str(forged))
    try:
        with pytest.raises(PermissionError, match="token"):
            client.frame()
    finally:
        client.close()
    # a token file pointing off this machine is not followed
    remote = tmp_path / "remote.token"
    remote.write_text(json.dumps(dict(info, host="192.0.2.1")))
    with pytest.raises(ValueError, match="token_file.*loopback"):
        attach.AttachClient(target.pid, token_file=str(remote))


@pytest.mark.parametrize("tcp", ["0.0.0.0:0", ("192.0.2.1", 9000), "example.com:80", "::"])
def test_a_non_loopback_address_is_refused(tcp, tmp_path):
    with pytest.raises(ValueError, match="tcp: .* is not a loopback address"):
        attach.AttachServer(str(tmp_path / "t.token"), tcp=tcp)


def test_loopback_addresses_are_parsed():
    assert attach.loopback_address(True) == ("127.0.0.1", 0)
    assert attach.loopback_address(8123) == ("127.0.0.1", 8123)
    assert attach.loopback_address("127.0.0.2:80") == ("127.0.0.2", 80)
    assert attach.loopback_address("localhost") == ("127.0.0.1", 0)
    assert attach.loopback_address("::1") == ("::1", 0)
    with pytest.raises(ValueError, match="port"):
        attach.loopback_address("127.0.0.1:http")
    with pytest.raises(ValueError, match="port"):
        attach.loopback_address(70000)
    with pytest.raises(TypeError, match="tcp"):
        attach.loopback_address(1.5)


def test_serve_tcp_in_process_and_close_removes_the_token_file(tmp_path):
    import labkit
    path = str(tmp_path / "in-process.token")
    server = attach.AttachServer(path, tcp=True).start()
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        with open(path) as f:
            assert json.load(f)["token"] == server.token
        box = {}

        def client():   # a blocking client in a thread: the hub serves meanwhile
            with attach.AttachClient(token_file=path) as c:
                box["hello"] = c.request("hello")

        labkit.get_hub().threadpool.spawn(client).get(timeout=20)
        assert box["hello"]["pid"] == os.getpid()
    finally:
        server.close()
    assert not os.path.exists(path)
