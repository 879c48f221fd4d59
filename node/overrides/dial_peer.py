"""Route `Swarm.dial_peer` through the node's single-flight dialer.

Upstream (py-libp2p 0.8.1, Swarm.dial_peer) reuses an existing connection and joins its
own in-flight `dial_peer` for the same peer (`_ongoing_dials`), but it cannot see dials
made any other way: `Swarm.dial_addr` (our multi-address dial, circuits, DCUtR) and
`dial_unknown_peer`. `host.connect()` (relay client) and `host.new_stream()` to a peer
that is not connected yet (chain sync, peer exchange) call `dial_peer`, so they raced our
dialer and each other and every race left one more connection to the same peer (seen in
the sentry testnet: 5 outbound connections from node0 to node3 within 4 s). Here
`dial_peer` returns the peer's existing connections, else joins or starts the node
dialer's one direct dial to that peer (node/dialing.py).

`Swarm.get_connections(peer)` (what `new_stream` picks a connection from) prefers the
connections the node keeps: it leaves out a duplicate being closed
(node/runtime.duplicates). The swarm lists a connection before its notifees run, so a
duplicate would be visible for a moment before the node judged it: `usable` registers
such a connection with the node's tracker on the spot. Upstream would open streams on
a duplicate and they would die with it.

It also lists them best first (direct before relayed, then the oldest), the order the
swarm's default `best` selection opens streams in. Upstream code that takes
`get_connections(peer)[0]` as "the" connection then means the one its stream ran on:
`BasicHost._identify_peer` opens its stream with `new_stream` (direct preferred) but
judges whether the connection is relayed, and records the observation against it, by
`connections[0]`, the oldest. A peer that reached us through a circuit first and directly
afterwards (DCUtR, or a public peer behind an overlay that was still converging) then
told us our address over the direct connection and upstream threw it away as a relayed
observation: the node never learnt its router's public address and offered only its
private one in every DCUtR CONNECT (tests/docker/test_multihost.py, the b nodes).
"""

from __future__ import annotations

from typing import Any, Protocol

from libp2p.abc import IHost, INetConn
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

from node.overrides.no_redial import dialing_refused_by


class DialRoute(Protocol):
    """What the node's dialer (node/dialing.NodeDialer) offers the swarm."""

    def existing(self, peer: ID) -> list[INetConn]:
        """The peer's live connections, best first."""
        ...

    async def dial_peer(self, peer: ID) -> INetConn:
        """Join or start the one direct dial to peer."""
        ...

    def preference(self, conn: INetConn) -> tuple[bool, int]:
        """Sort key of a connection, best first (the order `existing` lists)."""
        ...

    def usable(self, conn: INetConn) -> bool:
        """Not a duplicate being closed (registers a connection the tracker missed)."""
        ...


def route_dial_peer(host: IHost, route: DialRoute) -> None:
    swarm: Any = host.get_network()
    orig_get_connections = swarm.get_connections

    def get_connections(peer_id: ID | None = None) -> list[INetConn]:
        conns: list[INetConn] = orig_get_connections(peer_id)
        if peer_id is None:
            return conns
        keep = [c for c in conns if route.usable(c)]
        return sorted(keep, key=route.preference) if keep else conns

    swarm.get_connections = get_connections

    async def dial_peer(peer_id: ID) -> list[INetConn]:
        conns = route.existing(peer_id)
        if conns:
            return conns
        refused_by = dialing_refused_by()
        if refused_by is not None:  # node/overrides/no_redial.py
            raise SwarmException(f"{peer_id} is not connected, and {refused_by} does not dial")
        return [await route.dial_peer(peer_id)]

    swarm.dial_peer = dial_peer
