"""A gossipsub RPC the node cannot parse ends that peer's stream, not the node.

Upstream (py-libp2p 0.8.1, `Pubsub.stream_handler`) catches only StreamError, ParseError
and IncompleteReadError around `continuously_read_stream`. A frame whose body is not an
`RPC` protobuf raises google.protobuf's DecodeError from `RPC.ParseFromString`, and a
garbage control message can raise from `router.handle_rpc`; either escapes the stream
handler, the swarm connection's nursery and the swarm service, and the node's process goes
down (found by the fuzz tier: tests/node/test_fuzz.py, gossipsub_rpc). We register a handler
that does what upstream does for a ParseError (reset the stream, forget the peer) for any
exception, and logs it. The RPC was never the node's to count: nothing reached our code.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio
from libp2p.abc import INetStream

log = logging.getLogger("sentrynet.overrides.pubsub_rpc")


def install_pubsub_rpc_guard(pubsub: Any) -> None:
    """Re-register the pubsub stream handler (upstream registers it in Pubsub.__init__)
    for every router protocol, guarded."""
    upstream = pubsub.stream_handler

    async def guarded(stream: INetStream) -> None:
        try:
            await upstream(stream)
        except trio.Cancelled:
            raise
        except Exception as exc:
            peer = stream.muxed_conn.peer_id
            log.info("pubsub RPC from %s dropped: %s: %s", peer, type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            with contextlib.suppress(Exception):
                pubsub._handle_dead_peer(peer)

    for protocol in pubsub.router.get_protocols():
        pubsub.host.set_stream_handler(protocol, guarded)
