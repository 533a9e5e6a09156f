"""Name resolvers (gevent's ``gevent.resolver``): who answers ``getaddrinfo``
and friends for labkit's sockets, and how it waits.

    hub.resolver.getaddrinfo("example.org", 443)    # the configured one
    labkit.config.resolver = "dnspython"             # or LABKIT_RESOLVER=dnspython

- :class:`ThreadResolver` ("thread", the default): the C library's resolver
  (``/etc/hosts``, nsswitch, DNS) run in a small thread pool of the hub, so
  only the asking greenlet waits. What ``labkit.socket`` does itself.
- :class:`BlockingResolver` ("block"): the C library's resolver, called
  directly: the whole hub waits for each answer. For comparison, or where
  answers come from ``/etc/hosts`` only.
- :class:`DnsPythonResolver` ("dnspython", needs ``pip install dnspython``):
  ``/etc/hosts`` first, then dnspython's DNS queries, run in the hub's
  resolver threads. Answers the same questions as the others, independent
  of the C library (no nsswitch, same results on every libc).

All three have gevent's methods: ``getaddrinfo``, ``gethostbyname``,
``gethostbyname_ex``, ``gethostbyaddr``, ``getnameinfo``, ``close``, with
the socket module's signatures and errors (``socket.gaierror``,
``socket.herror``). ``hub.resolver`` is the one ``labkit.config.resolver``
names, made on first use; when it is not "thread", ``labkit.socket``'s
functions ask it.
"""
from __future__ import annotations

import socket as _stdlib

__all__ = ["ThreadResolver", "BlockingResolver", "DnsPythonResolver", "Resolver"]


class BlockingResolver:
    """The C library's resolver, called directly (blocks the hub)."""

    def __init__(self, hub=None):
        self.hub = hub

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        return _stdlib.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(self, hostname):
        return _stdlib.gethostbyname(hostname)

    def gethostbyname_ex(self, hostname):
        return _stdlib.gethostbyname_ex(hostname)

    def gethostbyaddr(self, ip_address):
        return _stdlib.gethostbyaddr(ip_address)

    def getnameinfo(self, sockaddr, flags):
        return _stdlib.getnameinfo(sockaddr, flags)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} hub={self.hub!r}>"


class ThreadResolver(BlockingResolver):
    """The C library's resolver in the hub's resolver threads (the default)."""

    def _call(self, function, *args):
        from labkit.socket import _resolve_in_thread
        return _resolve_in_thread(function, *args)

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        return self._call(_stdlib.getaddrinfo, host, port, family, type, proto, flags)

    def gethostbyname(self, hostname):
        return self._call(_stdlib.gethostbyname, hostname)

    def gethostbyname_ex(self, hostname):
        return self._call(_stdlib.gethostbyname_ex, hostname)

    def gethostbyaddr(self, ip_address):
        return self._call(_stdlib.gethostbyaddr, ip_address)

    def getnameinfo(self, sockaddr, flags):
        return self._call(_stdlib.getnameinfo, sockaddr, flags)


class DnsPythonResolver(ThreadResolver):
    """``/etc/hosts``, then DNS through dnspython, in the hub's resolver
    threads. Raises ImportError at construction without dnspython."""

    def __init__(self, hub=None):
        super().__init__(hub)
        import dns.resolver
        import dns.reversename
        self._dns = dns
        self._resolver = dns.resolver.Resolver()
        self._hosts = _read_hosts()

    # -- lookups (in a resolver thread) ---------------------------------------
    def _addresses(self, host: str, family: int) -> list:
        """(family, address) pairs for ``host``: the hosts file, else DNS."""
        if _is_numeric(host):
            kind = _stdlib.AF_INET6 if ":" in host else _stdlib.AF_INET
            return [(kind, host)] if family in (0, kind) else []
        found = [(f, a) for f, a in self._hosts.get(host.lower(), ())
                 if family in (0, f)]
        if found:
            return found
        answers = []
        for kind, rdtype in ((_stdlib.AF_INET, "A"), (_stdlib.AF_INET6, "AAAA")):
            if family not in (0, kind):
                continue
            try:
                answer = self._resolver.resolve(host, rdtype)
            except (self._dns.resolver.NoAnswer, self._dns.resolver.NXDOMAIN):
                continue
            except self._dns.exception.DNSException as exc:
                raise _stdlib.gaierror(_stdlib.EAI_AGAIN, str(exc)) from None
            answers += [(kind, record.to_text()) for record in answer]
        if not answers:
            raise _stdlib.gaierror(_stdlib.EAI_NONAME, "Name or service not known")
        return answers

    def _getaddrinfo(self, host, port, family, type, proto, flags):
        if host is None:
            return _stdlib.getaddrinfo(host, port, family, type, proto, flags)
        if isinstance(host, bytes):
            host = host.decode("idna")
        result = []
        for kind, address in self._addresses(host, family):
            # The C call on a numeric address: ports, socket types and
            # sockaddr shapes exactly as the stdlib makes them.
            result += _stdlib.getaddrinfo(address, port, kind, type, proto,
                                          flags | _stdlib.AI_NUMERICHOST)
        return result

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        return self._call(self._getaddrinfo, host, port, family, type, proto, flags)

    def gethostbyname(self, hostname):
        return self.gethostbyname_ex(hostname)[2][0]

    def _gethostbyname_ex(self, hostname):
        addresses = [a for f, a in self._addresses(hostname, _stdlib.AF_INET)]
        return hostname, [], addresses

    def gethostbyname_ex(self, hostname):
        return self._call(self._gethostbyname_ex, hostname)

    def _gethostbyaddr(self, ip_address):
        for name, entries in self._hosts.items():
            if any(address == ip_address for _f, address in entries):
                return name, [], [ip_address]
        try:
            answer = self._resolver.resolve(self._dns.reversename.from_address(ip_address),
                                            "PTR")
        except self._dns.exception.DNSException as exc:
            raise _stdlib.herror(1, f"Unknown host ({exc})") from None
        return answer[0].to_text().rstrip("."), [], [ip_address]

    def gethostbyaddr(self, ip_address):
        return self._call(self._gethostbyaddr, ip_address)


def _is_numeric(host: str) -> bool:
    for family in (_stdlib.AF_INET, _stdlib.AF_INET6):
        try:
            _stdlib.inet_pton(family, host.partition("%")[0])
            return True
        except (OSError, ValueError):
            pass
    return False


def _read_hosts(path: str = "/etc/hosts") -> dict:
    """name -> [(family, address)] from a hosts file (missing: empty)."""
    table: dict = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return table
    for line in lines:
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or not _is_numeric(fields[0]):
            continue
        family = _stdlib.AF_INET6 if ":" in fields[0] else _stdlib.AF_INET
        for name in fields[1:]:
            table.setdefault(name.lower(), []).append((family, fields[0]))
    return table


_KINDS = {"thread": ThreadResolver, "block": BlockingResolver, "dnspython": DnsPythonResolver}


def Resolver(hub=None):  # noqa: N802 - gevent's spelling of "the configured resolver"
    """The resolver ``labkit.config.resolver`` names, for ``hub``."""
    from labkit import config
    return _KINDS[config.resolver](hub)
