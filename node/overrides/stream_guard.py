"""An inbound stream whose handler raises ends that stream, not the connection or the node.

Upstream (py-libp2p 0.8.1) runs every inbound stream as `SwarmConn._handle_muxed_stream`
-> `Swarm.common_stream_handler` (`BasicHost._swarm_stream_handler`: multistream
negotiation, then the protocol's handler) in the connection's nursery, with no `except`
around the handler. An exception a handler does not catch cancels the connection's other
streams and escapes the connection and the swarm: one unexpected input, in an upstream
handler (identify, ping, gossipsub) or one of ours, takes the node's process down (found
for gossipsub RPC by the fuzz tier, node/overrides/pubsub_rpc.py). We register, as the
swarm's one stream handler, upstream's handler inside a guard: any exception but trio's
Cancelled is logged with its traceback, counted per protocol (`/status handler_errors`,
`sentrynet_stream_handler_errors_total`, event `stream_handler_error`) and the stream is
reset. The count is a bug report, not a rejection: a handler that meets bad input must
reject and count it itself (`messages_rejected_total`); the fuzz tier fails on any
handler error. A stream or connection that went away under the handler (reset, EOF,
closed: GONE) is the network's doing, not a bug: logged, not counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.network.stream.exceptions import StreamError
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError

log = logging.getLogger("sentrynet.overrides.stream_guard")

OnHandlerError = Callable[[str, BaseException], None]
NEGOTIATION = "negotiation"  # the protocol label when multistream itself raised
# the stream or its connection went away under the handler (the peer reset or left)
GONE = (
    StreamError,
    ConnectionClosedError,
    MuxedConnError,
    MuxedStreamError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ConnectionError,
)


def install_stream_guard(host: IHost, on_error: OnHandlerError) -> None:
    """Wrap the swarm's stream handler (set by BasicHost.__init__) once."""
    network: Any = host.get_network()
    if getattr(network, "_sentrynet_stream_guard", False):
        return
    upstream = network.common_stream_handler

    async def guarded(stream: INetStream) -> None:
        try:
            await upstream(stream)
        except trio.Cancelled:
            raise
        except GONE as exc:
            log.info("stream %s ended under its handler: %s: %s", stream.get_protocol(),
                     type(exc).__name__, exc)  # fmt: skip
            with contextlib.suppress(Exception):
                await stream.reset()
        except Exception as exc:
            protocol = str(stream.get_protocol() or NEGOTIATION)
            peer = getattr(stream.muxed_conn, "peer_id", None)
            log.error(
                "stream handler for %s (peer %s) raised %s: %s; stream reset, node goes on",
                protocol,
                peer,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            with contextlib.suppress(Exception):
                on_error(protocol, exc)
            with contextlib.suppress(Exception):
                await stream.reset()

    network.set_stream_handler(guarded)
    network._sentrynet_stream_guard = True
