"""labkit.ssl: TLS over cooperative sockets (a throw-away CA from trustme)."""

import pytest

import labkit
from helpers import echo
from labkit import socket, ssl
from labkit.server import StreamServer

trustme = pytest.importorskip("trustme")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def contexts(ca):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.fixture
def tls_echo_server(contexts):
    server = StreamServer(("127.0.0.1", 0), echo, ssl_context=contexts[0])
    server.start()
    yield server
    server.stop(timeout=0.5)


def tls_connect(server, client_context, timeout=5):
    raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout)
    return client_context.wrap_socket(raw, server_hostname="localhost")


def test_the_module_reexports_the_stdlib_names():
    import ssl as stdlib_ssl
    for name in ("PROTOCOL_TLS_CLIENT", "CERT_REQUIRED", "SSLError",
                 "SSLWantReadError", "Purpose", "OPENSSL_VERSION"):
        assert getattr(ssl, name) is getattr(stdlib_ssl, name)
    assert issubclass(ssl.SSLContext, stdlib_ssl.SSLContext)
    assert issubclass(ssl.SSLSocket, stdlib_ssl.SSLSocket)
    assert issubclass(ssl.SSLSocket, socket.socket)


def test_handshake_and_echo(tls_echo_server, contexts):
    with tls_connect(tls_echo_server, contexts[1]) as tls:
        assert isinstance(tls, ssl.SSLSocket)
        assert tls.version().startswith("TLS")
        tls.sendall(b"secret")
        assert tls.recv(100) == b"secret"


def test_many_clients_handshake_concurrently(tls_echo_server, contexts):
    def client(n):
        with tls_connect(tls_echo_server, contexts[1]) as tls:
            message = b"client %d" % n
            tls.sendall(message)
            return tls.recv(100) == message

    greenlets = [labkit.spawn(client, n) for n in range(20)]
    labkit.joinall(greenlets, raise_error=True, timeout=20)
    assert all(g.value for g in greenlets)


def test_sendall_of_a_large_buffer_while_another_greenlet_reads(tls_echo_server, contexts):
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    with tls_connect(tls_echo_server, contexts[1]) as tls:
        def reader():
            received = bytearray()
            while len(received) < len(payload):
                chunk = tls.recv(65536)
                assert chunk
                received += chunk
            return bytes(received)

        r = labkit.spawn(reader)
        tls.sendall(payload)
        assert r.get(timeout=20) == payload


def test_read_times_out_like_a_socket(tls_echo_server, contexts):
    with tls_connect(tls_echo_server, contexts[1]) as tls:
        tls.settimeout(0.05)
        with pytest.raises(socket.timeout):
            tls.recv(10)


def test_makefile_readline(tls_echo_server, contexts):
    with tls_connect(tls_echo_server, contexts[1]) as tls:
        tls.sendall(b"line one\nline two\n")
        reader = tls.makefile("rb")
        assert reader.readline() == b"line one\n"
        assert reader.readline() == b"line two\n"
        reader.close()


def test_an_untrusted_certificate_fails_the_handshake(tls_echo_server):
    stranger = ssl.create_default_context()  # does not trust our CA
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(tls_echo_server, stranger)


def test_unwrap_returns_to_plain_text(contexts):
    server_context, client_context = contexts
    a, b = socket.socketpair()

    def server_side():
        tls = server_context.wrap_socket(a, server_side=True)
        assert tls.recv(10) == b"tls"
        plain = tls.unwrap()
        assert plain.recv(10) == b"plain"

    server = labkit.spawn(server_side)
    tls = client_context.wrap_socket(b, server_hostname="localhost")
    tls.sendall(b"tls")
    plain = tls.unwrap()
    plain.sendall(b"plain")
    server.get(timeout=5)
    plain.close()
    a.close()


def test_get_server_certificate_fetches_it_without_blocking_the_server(tls_echo_server, ca):
    pem = ssl.get_server_certificate(("127.0.0.1", tls_echo_server.server_port))
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    with ca.cert_pem.tempfile() as ca_file:    # verified against the CA too
        assert ssl.get_server_certificate(("127.0.0.1", tls_echo_server.server_port),
                                          ca_certs=ca_file) == pem
