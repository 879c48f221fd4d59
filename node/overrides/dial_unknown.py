"""Dial an address whose peer id we do not know yet (relay_servers / persistent_peers
entries written without /p2p/<id>).

Upstream (py-libp2p 0.8.1) only dials a known peer: `Swarm.dial_addr(addr, peer_id)` and
`TransportUpgrader.upgrade_security` raise "peer_id must be provided for outbound
connection", although its Noise handshake accepts `remote_peer=None` and learns the id
from the handshake. We open the TCP connection, run Noise with no expected id, then hand
the connection to the swarm like any outbound one. Identify then tells us who it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from node.overrides.raw_dial import dial_raw, is_quic


async def dial_unknown_peer(
    host: IHost,
    addr: multiaddr.Multiaddr,
    timeout: float = 5.0,
    connected: Callable[[ID], list[Any]] | None = None,
    upgrade_timeout: float = 30.0,
) -> ID:
    """Connect to `addr` (no /p2p component); return the peer id Noise authenticated.
    When `connected(peer)` reports a connection to that peer already, the new one is
    dropped after the handshake (no second connection to a peer we have)."""
    swarm: Any = host.get_network()
    if is_quic(addr):
        # py-libp2p 0.8.1's QUIC transport refuses a dial without the peer id to check
        raise ConnectionError(f"{addr}: a QUIC address needs its /p2p/<peer id>")
    with trio.fail_after(timeout):
        raw = await dial_raw(host, addr)
    # the handshake gets longer than the TCP connect: it takes seconds on a loaded machine
    with trio.fail_after(upgrade_timeout):
        try:
            secured = await swarm.upgrader.security_multistream.secure_outbound(raw, None)
            peer: ID = secured.get_remote_peer()
            if peer == host.get_id():
                raise ConnectionError(f"{addr} is ourselves")
            if connected is not None and connected(peer):
                await raw.close()
                host.get_peerstore().add_addrs(peer, [addr], 7200)
                return peer
            muxed = await swarm.upgrader.upgrade_connection(secured, peer)
        except BaseException:
            await raw.close()
            raise
    host.get_peerstore().add_addrs(peer, [addr], 7200)
    await swarm.add_conn(muxed, direction="outbound")
    return peer
