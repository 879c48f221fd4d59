"""Turn off the swarm's auto-connector.

Upstream (py-libp2p 0.8.1, network/auto_connector.py) runs in every swarm and, whenever
the connection count is below the midpoint of [low_watermark, high_watermark] (default
target 200), dials peers from the peer store — every peer we ever heard of, including
the other network's private addresses peer exchange taught us. That fights
p2p.max_connections, floods unreachable addresses and hides which module opened a
connection. node/discovery.py decides whom to keep connected, so the auto-connector's
`maybe_connect` becomes a no-op.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost


def disable_auto_connector(host: IHost) -> None:
    swarm: Any = host.get_network()
    ac = getattr(swarm, "auto_connector", None)
    if ac is None:
        return

    async def maybe_connect() -> None:
        return None

    ac.maybe_connect = maybe_connect
