"""Hear when bytes arrive on a connection.

Upstream (py-libp2p 0.8.1) has no keepalive and no "last received" time per connection.
The Yamux muxer reads every frame (its own keepalive pongs, gossip, sync: anything the
peer sends) through its secured connection's `read` (conn_parts.secured_conn). We wrap
`read` on that one instance so node/liveness.py can tell a slow peer (a ping timed out
but data arrived) from a silent one. Per connection by nature: liveness calls
`watch_reads` for each connection it watches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from libp2p.abc import INetConn

from node.overrides.conn_parts import secured_conn

log = logging.getLogger("sentrynet.overrides.read_watch")


def watch_reads(conn: INetConn, on_data: Callable[[], None]) -> bool:
    """Call `on_data()` whenever a read on `conn` returns bytes; False when it cannot be
    watched (another muxer, or already watched)."""
    secured = secured_conn(conn)
    read = getattr(secured, "read", None)
    if secured is None or read is None or getattr(read, "_read_watch", False):
        return False

    async def counting_read(*args: Any, **kwargs: Any) -> Any:
        data = await read(*args, **kwargs)
        if data:
            on_data()
        return data

    counting_read._read_watch = True  # type: ignore[attr-defined]
    try:
        secured.read = counting_read
    except Exception:
        log.debug("cannot watch reads on %s", conn, exc_info=True)
        return False
    return True
