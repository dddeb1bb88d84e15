"""Where the backend may connect: a host policy checked on the very addresses it then connects to.

A name is resolved once, every address it resolves to is checked, and the connection goes to one of those
addresses (the request keeps the name for its ``Host`` header and TLS SNI). Checking a name and letting the HTTP
client resolve it again would let a DNS answer change in between (DNS rebinding): the check would see a public
address and the connection reach an internal one.

Without ``--allowed-hosts`` only public (globally routable) addresses are reachable, and Label Studio's own host
(the operator's, or a proven setup's); with it, only addresses of the hosts it names (names, IPs, CIDR networks).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore

from .protocol import RequestError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve(host: str) -> list[Address]:
    """Every address ``host`` resolves to (IPv4-mapped IPv6 as IPv4), sorted; empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        out.add(address)
    return sorted(out, key=lambda a: (a.version, int(a)))


class HostPolicy:
    """Which addresses URLs may reach: ``allowed`` (names, IPs, networks) or, when None, public addresses only;
    the (host, port) origins ``trusted()`` returns (Label Studio's) are reachable whatever they resolve to — that
    port only: Label Studio on localhost does not open the machine's other local ports."""

    def __init__(self, allowed: Iterable[str] | None = None,
                 trusted: Callable[[], Iterable[tuple[str, int]]] = tuple):
        self.allowed = [a.strip() for a in allowed or [] if a.strip()] or None
        self.trusted = trusted

    def check(self, host: str, port: int, addresses: list[Address]) -> None:
        """A 403 naming the first address ``host`` may not reach (``addresses``: what it resolved to)."""
        if not addresses:
            raise RequestError(502, f"{host}: cannot resolve the host name")
        if self.allowed is None:
            if (host.lower().rstrip("."), port) in {(h.lower().rstrip("."), p) for h, p in self.trusted()}:
                return
            inside = [a for a in addresses if not a.is_global]
            if inside:
                raise RequestError(403, f"{host} resolves to {inside[0]}, not a public address (loopback, private, "
                                        f"link-local...): images are fetched from such hosts only when --allowed-hosts "
                                        f"names them")
            return
        networks = self.networks()
        outside = [a for a in addresses if not any(a in n for n in networks)]
        if outside:
            raise RequestError(403, f"{host} resolves to {outside[0]}, outside --allowed-hosts "
                                    f"({', '.join(self.allowed)}); add the host there if it is trusted")

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in self.allowed or []:
            try:
                out.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                out.extend(ipaddress.ip_network(a) for a in resolve(entry))
        return out


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the policy accepted in the same lookup."""

    def __init__(self, policy: HostPolicy, resolver: Callable[[str], list[Address]] = resolve):
        self.policy, self.resolver = policy, resolver

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        addresses = self.resolver(host)
        self.policy.check(host, port, addresses)
        errors: list[Exception] = []
        for address in addresses:
            try:
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                errors.append(err)
        raise errors[-1]
