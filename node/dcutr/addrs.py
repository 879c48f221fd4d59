"""DCUtR address selection: what we advertise in CONNECT and what we dial.

Why this exists (py-libp2p 0.8.1 behaviour it replaces):
- Stock DCUtR first tries every peerstore address of the peer (its private listen
  addresses included), one dial timeout each, before the punch itself; through real NAT
  that took ~12 s (docs/design.md "py-libp2p through real NAT"). We dial only the
  candidates the peer reported in CONNECT, filtered, all at once.
- Stock's relay-address filter takes the peer id *after* `/p2p-circuit/p2p/` as the relay,
  but py-libp2p's relayed connections are addressed `/p2p/<relay>/p2p-circuit/p2p/<peer>`,
  so it looks up the remote peer itself: `relay_of_circuit` reads the id before
  `/p2p-circuit`.

What we advertise: our listen port at each external IP identify observed for us (a
port-preserving NAT maps the hole-punch socket, which is bound to the listen port, to that
same port; the observed port itself belongs to the ephemeral socket of the connection to
the observer), plus any observed address that already carries the listen port. With no
observation at all (no NAT, e.g. loopback) we advertise the listen addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from multiaddr import Multiaddr

MAX_CANDIDATES = 8


TRANSPORTS = ("tcp", "quic")  # what DCUtR punches: TCP simultaneous open, QUIC (RFC 9000)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    transport: str = "tcp"  # tcp | quic (QUIC v1 over UDP)

    @property
    def family(self) -> int:
        return 6 if ":" in self.ip else 4

    def multiaddr(self) -> Multiaddr:
        return Multiaddr(str(self))

    def __str__(self) -> str:
        tail = f"tcp/{self.port}" if self.transport == "tcp" else f"udp/{self.port}/quic-v1"
        return f"/ip{self.family}/{self.ip}/{tail}"


def endpoint_of(addr: Multiaddr | str) -> Endpoint | None:
    """`/ip4|ip6/<ip>/tcp/<port>[/p2p/<id>]` or `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<id>]`
    -> endpoint; anything else (circuit, ws, draft-29 quic, dns) -> None."""
    try:
        ma = addr if isinstance(addr, Multiaddr) else Multiaddr(addr)
        names = [p.name for p in ma.protocols()]
    except Exception:
        return None
    if len(names) < 2 or names[0] not in ("ip4", "ip6"):
        return None
    if names[1] == "tcp":
        transport, rest = "tcp", names[2:]
    elif names[1:3] == ["udp", "quic-v1"]:
        transport, rest = "quic", names[3:]
    else:
        return None
    if any(n != "p2p" for n in rest):
        return None
    try:
        ip = ma.value_for_protocol(names[0])
        port = int(ma.value_for_protocol(names[1]))
    except Exception:
        return None
    if not ip or not 0 < port < 65536:
        return None
    return Endpoint(str(ip), port, transport)


def relay_of_circuit(addr: Multiaddr | str) -> str | None:
    """Relay peer id of a relayed-connection address `[...]/p2p/<relay>/p2p-circuit[/...]`."""
    parts = str(addr).split("/p2p-circuit")[0].split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "p2p":
            return parts[i + 1]
    return None


def advertised_endpoints(
    listen: Iterable[Endpoint], observed: Iterable[Endpoint]
) -> list[Endpoint]:
    """Endpoints for our CONNECT: observed IPs at each listen port (TCP and QUIC: the
    router's public IP is the same for both), an observed QUIC address as it is (our QUIC
    dials leave from the listening socket, node/overrides/quic_reuse.py, so it is the
    mapping of that socket even where the router does not keep the port), else the
    listen addrs."""
    listen = [e for e in listen if not _ip(e.ip).is_unspecified]
    listen_ips = {e.ip for e in listen}
    quic_listen = any(e.transport == "quic" for e in listen)
    out: list[Endpoint] = []
    for obs in observed:
        if obs.ip in listen_ips or not _usable_remote(obs.ip):
            continue
        for lst in listen:
            if lst.family == obs.family:
                _add(out, Endpoint(obs.ip, lst.port, lst.transport))
        if obs.transport == "quic" and quic_listen:
            _add(out, obs)
    if not out:
        for lst in listen:
            _add(out, lst)
    return out[:MAX_CANDIDATES]


def external_observations(
    observed: Iterable[Endpoint], listen: Iterable[Endpoint]
) -> list[Endpoint]:
    """The observations that show a NAT in front of us: those at an IP that is not one of
    our own. A peer on our own network (a neighbour, a relay homed on our network too)
    reports our private listen address; that says nothing about the router's public side,
    and a node that took it for its observed address offered only private addresses in
    CONNECT (advertised_endpoints falls back to the listen addresses)."""
    own = {e.ip for e in listen}
    return [e for e in observed if e.ip not in own]


def dial_candidates(
    reported: Iterable[Multiaddr | str],
    own: Iterable[Endpoint],
    exclude: Iterable[Endpoint] = (),
    transports: Iterable[str] = TRANSPORTS,
) -> tuple[list[Endpoint], list[str]]:
    """Peer-reported addresses -> (endpoints to dial at once, why each other was dropped).

    Dropped: anything but TCP and QUIC v1 (circuits, ws, dns), a transport not in
    `transports` (config `dcutr.transports`) or one we do not listen on,
    unspecified/multicast/link-local IPs, loopback unless we listen on loopback ourselves
    (then we share the host), our own endpoints (a peer behind the same NAT reports our
    public address too) and `exclude` (the relay).
    """
    allowed = set(transports)
    own = list(own)
    own_set = set(own)
    exclude_set = set(exclude)
    on_loopback = any(_ip(e.ip).is_loopback for e in own)
    keep: list[Endpoint] = []
    dropped: list[str] = []
    for addr in reported:
        ep = endpoint_of(addr)
        why = None
        if ep is None:
            why = "not ip/tcp or ip/udp/quic-v1"
        elif ep.transport not in allowed:
            why = f"{ep.transport} not punched (dcutr.transports)"
        elif not _usable_remote(ep.ip):
            why = "unspecified/multicast/link-local"
        elif _ip(ep.ip).is_loopback and not on_loopback:
            why = "loopback"
        elif ep in own_set:
            why = "our own address"
        elif ep in exclude_set:
            why = "relay address"
        elif not any(o.family == ep.family for o in own):
            why = "no listen address of this IP family"
        elif not any(o.family == ep.family and o.transport == ep.transport for o in own):
            why = f"we do not listen on {ep.transport}"
        if why is not None:
            dropped.append(f"{addr} ({why})")
        elif ep is not None:
            _add(keep, ep)
    return keep[:MAX_CANDIDATES], dropped


def lan_only(
    cands: Iterable[Endpoint],
    peer_own: Iterable[Endpoint],
    links: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] | None,
) -> bool:
    """Every candidate the peer offered is one of its own addresses (what it listens on,
    as identify reported them) at a private IP outside every network we are on: its LAN
    address, which only its neighbours can reach. A peer offers that when no node outside
    its network has observed it yet (rust-libp2p offers its address candidates, the
    first of which can come from a relay that reached it on its LAN side): the punch cannot
    work until it learns its public address, and its failure says nothing about the NATs.
    False when `links` is None (we cannot tell) or nothing was offered."""
    if links is None:
        return False
    cands, own_ips, nets = list(cands), {e.ip for e in peer_own}, list(links)
    if not cands:
        return False
    for c in cands:
        ip = _ip(c.ip)
        if c.ip not in own_ips or ip.is_global or ip.is_loopback:
            return False
        if any(ip.version == n.version and ip in n for n in nets):
            return False
    return True


def _add(out: list[Endpoint], ep: Endpoint) -> None:
    if ep not in out:
        out.append(ep)


def _ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip.split("%")[0])


def _usable_remote(ip: str) -> bool:
    try:
        a = _ip(ip)
    except ValueError:
        return False
    return not (a.is_unspecified or a.is_multicast or a.is_link_local)
