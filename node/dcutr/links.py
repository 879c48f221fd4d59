"""The networks this node reaches without a gateway (its on-link subnets), from the kernel.

Why: a peer's CONNECT can offer only its own private LAN address (a peer that no node
outside its network has observed yet offers what its neighbours saw: its listen address).
From another private network that address is unreachable, and a punch to it cannot work;
DCUtR must tell that apart from a NAT that defeats the punch (node/dcutr/addrs.lan_only).
The multiaddr carries no prefix length, so whether an address is on one of our links is
read from the routing table: a route with no gateway is a link.

Linux only (/proc/net/route, /proc/net/ipv6_route, both per network namespace); elsewhere
`on_link_networks` returns None and the caller cannot tell, so it treats every candidate
as reachable, which is how DCUtR behaved before.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ROUTE_V4 = Path("/proc/net/route")
ROUTE_V6 = Path("/proc/net/ipv6_route")


def on_link_networks(route_v4: Path = ROUTE_V4, route_v6: Path = ROUTE_V6) -> list[Network] | None:
    """Every subnet with a gateway-less route (not the default route); None when the
    IPv4 table cannot be read."""
    try:
        v4 = route_v4.read_text()
    except OSError:
        return None
    nets = _parse_v4(v4)
    with contextlib.suppress(OSError):
        nets += _parse_v6(route_v6.read_text())
    return nets


def _parse_v4(text: str) -> list[Network]:
    """/proc/net/route: Iface Destination Gateway Flags RefCnt Use Metric Mask ...; the
    addresses are 32-bit hex in host (little-endian) byte order."""
    out: list[Network] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        try:
            dest, gateway, mask = (int(f[i], 16) for i in (1, 2, 7))
        except ValueError:
            continue
        if gateway != 0 or mask == 0:
            continue
        ip = socket.inet_ntoa(struct.pack("<I", dest))
        netmask = socket.inet_ntoa(struct.pack("<I", mask))
        try:
            out.append(ipaddress.IPv4Network(f"{ip}/{netmask}", strict=False))
        except ValueError:
            continue
    return out


def _parse_v6(text: str) -> list[Network]:
    """/proc/net/ipv6_route: dest(32 hex) plen(hex) src srcplen nexthop(32 hex) metric
    refcnt use flags iface; a link has an all-zero next hop; lo's local routes are not
    links to anyone."""
    out: list[Network] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10 or f[9] == "lo":
            continue
        try:
            plen = int(f[1], 16)
            dest = ipaddress.IPv6Address(bytes.fromhex(f[0]))
        except ValueError:
            continue
        if plen == 0 or int(f[4], 16) != 0:
            continue
        out.append(ipaddress.IPv6Network(f"{dest}/{plen}", strict=False))
    return out
