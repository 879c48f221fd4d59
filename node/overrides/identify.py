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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost, INetStream
from libp2p.identity.identify_push.identify_push import (
    ID_PUSH,
    identify_push_handler_for,
)
from libp2p.peer.id import ID

log = logging.getLogger("sentrynet.overrides.identify")

IdentifiedCallback = Callable[[ID], None]


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
        await orig_identify(peer_id, reason=reason)
        if peer_id in h._identified_peers:
            hook.fire(peer_id)

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
