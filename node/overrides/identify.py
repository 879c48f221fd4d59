"""Identify overrides: tell the node when a peer has been identified, and re-identify
a peer on every new connection.

Upstream (py-libp2p 0.8.1, BasicHost._schedule_identify) skips identify when the
peerstore already lists ping/identify for the peer (`_has_cached_protocols`). The
peerstore outlives connections, so after a relay restarts and we reconnect, identify
never runs again: its new addresses and protocols are never learnt and nothing tells the
relay client the peer is back. We treat a peer as identified only while
`_identified_peers` holds it (upstream pops it on disconnect).

Upstream also offers no hook for "identify finished"; we wrap `_identify_peer` and the
identify-push handler so callbacks run after the peerstore is updated.

Upstream `_identify_peer` also swallows every failure (stream open failed, read timed out,
the connection closed under it) and never tries again. Since the node keeps one connection
per peer, identify regularly starts on a duplicate that is closed a moment later; the peer
then stays connected but unidentified, and a configured relay is never matched (seen in the
relay-failover scenario: node7 unmatched for 71 s). We retry, bounded, while the peer is
still connected and not yet identified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.identity.identify_push.identify_push import (
    ID_PUSH,
    identify_push_handler_for,
)
from libp2p.peer.id import ID

from node.overrides.no_redial import no_dialing

log = logging.getLogger("sentrynet.overrides.identify")

IdentifiedCallback = Callable[[ID], None]
IDENTIFY_ATTEMPTS = 4
IDENTIFY_RETRY_S = 0.5  # back-off between attempts: 0.5 s, 1 s, 1.5 s


class IdentifyHook:
    def __init__(self) -> None:
        self.callbacks: list[IdentifiedCallback] = []

    def subscribe(self, cb: IdentifiedCallback) -> None:
        self.callbacks.append(cb)

    def fire(self, peer: ID) -> None:
        for cb in list(self.callbacks):
            try:
                cb(peer)
            except Exception:
                log.exception("identify callback failed")


def install_identify_hook(host: IHost) -> IdentifyHook:
    hook = IdentifyHook()
    h: Any = host
    orig_identify = h._identify_peer

    async def identify_peer(peer_id: ID, *, reason: str) -> None:
        for attempt in range(1, IDENTIFY_ATTEMPTS + 1):
            with no_dialing("identify"):  # node/overrides/no_redial.py
                await orig_identify(peer_id, reason=reason)
            if peer_id in h._identified_peers:
                hook.fire(peer_id)
                return
            if attempt == IDENTIFY_ATTEMPTS or not host.get_network().get_connections(peer_id):
                return
            log.info("identify of %s failed (attempt %d); retrying", peer_id, attempt)
            await trio.sleep(IDENTIFY_RETRY_S * attempt)

    h._identify_peer = identify_peer

    def has_cached_protocols(peer_id: ID) -> bool:
        # only an identify on the current connection counts (see module docstring)
        return peer_id in h._identified_peers

    h._has_cached_protocols = has_cached_protocols

    push_handler = identify_push_handler_for(host, use_varint_format=True)

    async def handle_push(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        await push_handler(stream)
        hook.fire(peer)

    host.set_stream_handler(ID_PUSH, handle_push)
    return hook


async def identify_now(host: IHost, peer: ID, reason: str) -> None:
    """Run identify with a connected peer now (upstream has no public call for it: the
    private `BasicHost._identify_peer`, which install_identify_hook makes retry)."""
    h: Any = host
    await h._identify_peer(peer, reason=reason)
