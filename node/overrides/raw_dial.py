"""Open a raw TCP connection through the swarm's own transport, before any upgrade.

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
from libp2p.abc import IHost, IRawConnection


async def dial_raw(
    host: IHost, addr: multiaddr.Multiaddr, source: tuple[str, int] | None = None
) -> IRawConnection:
    """A raw connection to `addr` (from `source` (ip, port) when given and the transport
    supports it). Raises ConnectionError when no transport can dial `addr`."""
    swarm: Any = host.get_network()
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise ConnectionError(f"no transport can dial {addr}")
    dial_with_source = getattr(transport, "dial_with_source", None)
    if source is not None and dial_with_source is not None:
        raw: IRawConnection = await dial_with_source(addr, source)
    else:
        raw = await transport.dial(addr)
    return raw
