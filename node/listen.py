"""Did the host really listen where the config says? py-libp2p does not say.

py-libp2p 0.8.1's `host.run(listen_addrs=...)` logs a failed bind (an address in use, an
address not on this host) at a level we silence and carries on without that listener, so
a node whose p2p port was taken used to log "listening on ..." and answer `ready: true`
with empty `listen_addrs`: reachable by nobody, and nothing said why. After the host
starts, every configured TCP or QUIC listen address must appear among its transport addresses;
for the ones that do not, we bind the address ourselves to get the operating system's
reason, and the node stops with an error naming `p2p.listen_addrs` and that reason.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import multiaddr


class ListenFailed(OSError):
    """A configured p2p listen address has no listener."""


def _ip_port(addr: multiaddr.Multiaddr) -> tuple[str, str, int] | None:
    """(tcp|quic, ip, port) of a TCP or QUIC address; None for anything else."""
    protocols = {p.name for p in addr.protocols()}
    if "tcp" in protocols:
        kind, port_proto = "tcp", "tcp"
    elif "udp" in protocols and "quic-v1" in protocols:
        kind, port_proto = "quic", "udp"
    else:
        return None
    ip = addr.value_for_protocol("ip4") if "ip4" in protocols else None
    if ip is None and "ip6" in protocols:
        ip = addr.value_for_protocol("ip6")
    if ip is None:
        return None
    return kind, str(ip), int(addr.value_for_protocol(port_proto))


def _bind_error(kind: str, ip: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    try:
        with socket.socket(family, sock_type) as s:
            s.bind((ip, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the host did not start a listener there (the address can be bound now)"


def unbound(
    configured: Iterable[multiaddr.Multiaddr], bound: Iterable[multiaddr.Multiaddr]
) -> list[str]:
    """One line per configured TCP or QUIC address without a listener: the address and why."""
    have = [x for x in (_ip_port(b) for b in bound) if x is not None]
    problems = []
    for addr in configured:
        want = _ip_port(addr)
        if want is None:
            continue
        kind, ip, port = want
        wildcard = ip in ("0.0.0.0", "::")
        if any(
            h_kind == kind and (wildcard or h_ip == ip) and (port == 0 or h_port == port)
            for h_kind, h_ip, h_port in have
        ):
            continue
        problems.append(f"{addr}: {_bind_error(kind, ip, port)}")
    return problems


def check_listening(
    configured: Iterable[multiaddr.Multiaddr], bound: Iterable[multiaddr.Multiaddr]
) -> None:
    problems = unbound(configured, bound)
    if problems:
        raise ListenFailed(
            "p2p.listen_addrs: cannot listen on "
            + "; ".join(problems)
            + " (another process on this port? set p2p.listen_addrs to a free address)"
        )
