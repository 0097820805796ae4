"""Who is calling: the client address behind ``[http] trusted_proxies``, and ``allow_from``.

The TCP peer is the client unless it is a trusted proxy; then ``X-Forwarded-For`` is read
from the right (each proxy appends the address it saw) and the client is the right-most
address that is not a trusted proxy. Anything a client wrote further left is never
believed. An entry that is not an IP address ends the walk: that hop is the client, and as
it has no address it matches no ``allow_from``. Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A header longer than this many hops is cut (from the left: the right end is what counts).
MAX_HOPS = 64


def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer name or a forwarded entry (``[v6]``, ``v4:port`` and
    IPv4-mapped IPv6 accepted); None when it is not one."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unmapped(networks: Iterable[Network]) -> tuple[Network, ...]:
    """``networks`` with IPv4-mapped IPv6 ones (``::ffff:192.0.2.0/120``) as the IPv4
    networks they name: client addresses are compared in their IPv4 form."""
    out: list[Network] = []
    for net in networks:
        mapped = net.network_address.ipv4_mapped if net.version == 6 else None
        if mapped is not None and net.prefixlen >= 96:
            out.append(ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}"))
        else:
            out.append(net)
    return tuple(out)


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]
) -> Address | None:
    """The client's address (see the module docstring); None when it is not an address."""
    address = parse_address(peer)
    if address is None or not trusted or not _within(address, trusted):
        return address
    hops = [hop for value in forwarded_for for hop in value.split(",")][-MAX_HOPS:]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None or not _within(address, trusted):
            return address
    return address  # every hop was a trusted proxy: the left-most one is the client


def allowed(address: Address | None, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` lies in one of ``networks``."""
    return address is not None and _within(address, networks)
