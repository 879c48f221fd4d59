"""An accepted connection that a DCUtR punch expects is upgraded as the security client.

Upstream (py-libp2p 0.8.1, `Swarm._handle_inbound_connection`) upgrades every connection
its listener accepts as the security responder. DCUtR fixes the roles on the punched
connection instead: the peer that dialed the relayed connection (A, the DCUtR responder)
is the client, the initiator (B) the server, whoever's SYN made the connection (libp2p
specs, relay/DCUtR.md). When A's listen port is reachable without a punch (a public or
dual-homed peer), B's SYN, sent from B's listen port, can reach A before A's own SYN to B
leaves: A's listener accepts it and upgrades it as the server, B (dialing as the server,
`Swarm.dial_addr_as_responder`) waits too, and neither speaks first until the punch
window ends (`dcutr_failed reason=timeout`; a dual-homed sentry was never hole-punched).
A's own dial of the same 4-tuple then fails because the listener's socket holds it.

Here A registers the endpoints it punches to for as long as the attempt lasts
(`PunchExpectations.expect`); a connection accepted from one of them is upgraded as the
client to that peer (`upgrade_outbound_raw_conn`: the peer id is checked in Noise, and the
swarm records the connection outbound, as A's own dial would be). Connections we dialed
ourselves (`is_initiator`), and accepted ones from any other endpoint, go the upstream way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from libp2p.abc import IHost, IRawConnection
from libp2p.peer.id import ID
from multiaddr import Multiaddr

log = logging.getLogger("sentrynet.dcutr")

Endpoint = tuple[str, int]


class PunchExpectations:
    """Endpoints (ip, port) a punch of ours is dialing, and the peer behind each."""

    def __init__(self) -> None:
        self._peers: dict[Endpoint, ID] = {}
        self.flipped = 0  # accepted connections upgraded as the client

    @contextlib.contextmanager
    def expect(self, peer: ID, endpoints: Iterable[Endpoint]) -> Iterator[None]:
        eps = [(ip, int(port)) for ip, port in endpoints]
        for ep in eps:
            self._peers[ep] = peer
        try:
            yield
        finally:
            for ep in eps:
                if self._peers.get(ep) == peer:
                    del self._peers[ep]

    def peer_at(self, remote: Endpoint | None) -> ID | None:
        if remote is None:
            return None
        return self._peers.get((remote[0], int(remote[1])))


def install_punch_inbound(host: IHost) -> PunchExpectations:
    """Route accepted connections from an expected punch endpoint to the client upgrade;
    returns the registry the DCUtR service fills."""
    swarm: Any = host.get_network()
    expected = PunchExpectations()
    upstream_upgrade = swarm.upgrade_inbound_raw_conn

    async def upgrade_inbound_raw_conn(raw_conn: IRawConnection, maddr: Multiaddr) -> Any:
        peer = None
        if not getattr(raw_conn, "is_initiator", True):
            with contextlib.suppress(Exception):
                peer = expected.peer_at(raw_conn.get_remote_address())
        if peer is None:
            return await upstream_upgrade(raw_conn, maddr)
        expected.flipped += 1
        log.info(
            "accepted %s during a punch to %s: upgrading as the client (DCUtR roles)",
            raw_conn.get_remote_address(),
            peer,
        )
        conn = await swarm.upgrade_outbound_raw_conn(raw_conn, peer)
        return conn.muxed_conn

    swarm.upgrade_inbound_raw_conn = upgrade_inbound_raw_conn
    return expected
