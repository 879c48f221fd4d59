"""Open a protocol stream on one chosen connection.

`host.new_stream(peer, ...)` lets the swarm pick among the peer's connections, so with a
direct and a relayed connection to the same peer the caller cannot say which one carries
the stream. Several protocols must choose: a reservation is refused over a relayed
connection (circuit relay v2 spec), DCUtR runs over the relayed one, liveness pings each
connection separately.

Upstream (py-libp2p 0.8.1) has no call for it: we open the muxed stream on the connection
and negotiate with the host's own `BasicHost.multiselect_client` (not part of IHost).
"""

from __future__ import annotations

import contextlib
from typing import Any

from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator


async def open_stream_on(host: Any, conn: Any, protocols: list[Any], timeout: float) -> Any:
    """A stream on exactly `conn`, negotiated to one of `protocols` (multistream-select
    bounded by `timeout`); the stream is reset when negotiation fails."""
    stream = await conn.new_stream()
    try:
        proto = await host.multiselect_client.select_one_of(
            protocols, MultiselectCommunicator(stream), max(1, int(timeout))
        )
    except BaseException:
        await reset_stream(stream)
        raise
    stream.set_protocol(proto)
    return stream


async def reset_stream(stream: Any) -> None:
    """Reset a stream; where reset fails, close it; never raise."""
    try:
        await stream.reset()
    except Exception:
        with contextlib.suppress(Exception):
            await stream.close()
