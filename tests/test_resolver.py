"""labkit.resolver: who answers name lookups, and how it waits."""
import socket as std_socket

import pytest

import labkit
from labkit import config, resolver


@pytest.fixture(params=["thread", "block", "dnspython"])
def kind(request):
    if request.param == "dnspython":
        pytest.importorskip("dns.resolver")
    return request.param


def test_each_resolver_answers_like_the_socket_module_for_localhost(kind):
    r = resolver._KINDS[kind](labkit.get_hub())
    got = r.getaddrinfo("localhost", 80, std_socket.AF_INET, std_socket.SOCK_STREAM)
    assert got and all(info[4] == ("127.0.0.1", 80) for info in got)
    assert r.gethostbyname("localhost") == "127.0.0.1"
    with pytest.raises(std_socket.gaierror):
        r.getaddrinfo("no-such-host.invalid", 80)


def test_the_thread_resolver_asks_in_another_thread_while_the_hub_runs():
    import threading
    r = resolver.ThreadResolver(labkit.get_hub())
    assert r._call(threading.get_ident) != threading.get_ident()


def test_the_hub_resolver_is_the_configured_one_and_the_socket_module_asks_it():
    asked = []

    class Recording(resolver.BlockingResolver):
        def getaddrinfo(self, *args):
            asked.append(args[0])
            return super().getaddrinfo(*args)

    hub = labkit.get_hub()
    assert isinstance(hub.resolver, resolver.ThreadResolver)
    hub.resolver = Recording(hub)
    config.resolver = "block"
    try:
        from labkit import socket
        socket.getaddrinfo("localhost", 80)
    finally:
        del config.resolver
        del hub.resolver
    assert asked == ["localhost"]


def test_dnspython_reads_the_hosts_file_first(tmp_path):
    pytest.importorskip("dns.resolver")
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.2.3  lab.example  # a comment\n::1 six.example\n")
    r = resolver.DnsPythonResolver(labkit.get_hub())
    r._hosts = resolver._read_hosts(str(hosts))
    assert r.gethostbyname("lab.example") == "10.1.2.3"
    infos = r.getaddrinfo("six.example", 443, std_socket.AF_INET6)
    assert infos[0][4][:2] == ("::1", 443)
