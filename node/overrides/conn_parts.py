"""The parts of a swarm connection below the INetConn / IMuxedConn interfaces.

Upstream (py-libp2p 0.8.1) Yamux keeps its secured (Noise) connection in
`Yamux.secured_conn` and its close in `Yamux.event_closed`; neither is part of
IMuxedConn. The node needs the first to close a connection whose muxer close is stuck
(node/runtime.ConnectionTracker.close) and to watch reads (read_watch.py), the second to
wait for a close without polling. Who dialed is recorded by the swarm when it adds the
connection (`SwarmConn.direction`, not part of INetConn).
"""

from __future__ import annotations

from typing import Any

import trio


def secured_conn(conn: Any) -> Any:
    """The secured connection under a swarm (or muxed) connection, or None."""
    muxed = getattr(conn, "muxed_conn", conn)
    return getattr(muxed, "secured_conn", None)


def direction_of(conn: Any) -> str:
    """ "inbound" or "outbound", as the swarm recorded it (an unknown one counts as outbound
    unless its name says in)."""
    raw = getattr(conn, "direction", "unknown")
    direction = str(getattr(raw, "value", None) or raw).lower()
    if direction not in ("inbound", "outbound"):
        direction = "inbound" if "in" in direction else "outbound"
    return direction


def closed_event(conn: Any) -> trio.Event | None:
    """The muxer's close event of a swarm (or muxed) connection, or None."""
    muxed = getattr(conn, "muxed_conn", conn)
    ev = getattr(muxed, "event_closed", None)
    return ev if isinstance(ev, trio.Event) else None
