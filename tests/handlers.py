"""StreamServer handlers shared by the server, ssl and wsgi tests."""


def echo(sock, address):
    """Send back whatever arrives, until the peer closes."""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)
