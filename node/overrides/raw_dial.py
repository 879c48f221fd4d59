"""Open a raw connection through the swarm's own transport, before any upgrade.

Upstream (py-libp2p 0.8.1) has no public "dial this address and give me the raw
connection": `Swarm.dial_addr` retries, consults the negative cache and upgrades in one go.
Three callers need the raw step on its own: dialing every address of a peer at once
(multi_addr_dial.py), dialing a peer whose id we do not know (dial_unknown.py) and DCUtR's
simultaneous open from our listen port (`TCP.dial_with_source`, node/dcutr/service.py). They reach
the transport through `Swarm.transport_manager.transport_for_dialing`.
"""

from __future__ import annotations

from typing import Any

import multiaddr
from libp2p.abc import IHost, IMuxedConn, INetConn, IRawConnection
from libp2p.peer.id import ID


def is_quic(addr: multiaddr.Multiaddr) -> bool:
    return "quic-v1" in {p.name for p in addr.protocols()}


def with_peer(addr: multiaddr.Multiaddr, peer: ID | None) -> multiaddr.Multiaddr:
    """`addr` ending in /p2p/`peer` (unless it names a peer already, or peer is None)."""
    if peer is None or "p2p" in {p.name for p in addr.protocols()}:
        return addr
    return multiaddr.Multiaddr(f"{addr}/p2p/{peer}")


async def dial_raw(
    host: IHost,
    addr: multiaddr.Multiaddr,
    source: tuple[str, int] | None = None,
    peer: ID | None = None,
) -> IRawConnection | IMuxedConn:
    """A raw connection to `addr` (from `source` (ip, port) when given and the transport
    supports it). Raises ConnectionError when no transport can dial `addr`.

    A QUIC address gives a connection that is already secured and multiplexed (TLS and
    QUIC streams are part of the handshake, which checks the peer id: `peer` is appended
    to the address for it); `attach` hands either kind to the swarm."""
    swarm: Any = host.get_network()
    if is_quic(addr):
        addr = with_peer(addr, peer)
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise ConnectionError(f"no transport can dial {addr}")
    dial_with_source = getattr(transport, "dial_with_source", None)
    if source is not None and dial_with_source is not None:
        raw: IRawConnection = await dial_with_source(addr, source)
    else:
        raw = await transport.dial(addr)
    return raw


async def attach(host: IHost, raw: IRawConnection | IMuxedConn, peer: ID) -> INetConn:
    """The swarm's connection for a dialed raw one: Noise + Yamux for TCP; a QUIC
    connection (already multiplexed) is only registered, as upstream's dial_addr does."""
    swarm: Any = host.get_network()
    if isinstance(raw, IMuxedConn):
        conn: INetConn = await swarm.add_conn(raw, direction="outbound")
    else:
        conn = await swarm.upgrade_outbound_raw_conn(raw, peer)
    return conn
