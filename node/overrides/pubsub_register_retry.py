"""Pubsub keeps trying to register a connected peer after a failed stream negotiation.

Upstream (py-libp2p 0.8.1, `Pubsub._handle_new_peer_with_retry`) retries opening its
stream to a new peer, with back-off, while the peer stays connected, but only after a
SwarmException or StreamClosed. When the stream opens and multistream-select then fails
on it, `BasicHost.new_stream` raises StreamFailure (a HostException), which that loop
takes for "non-retryable" and gives up on: the peer is never registered
(`Pubsub.peers`), so the node sends it no message, subscription or GRAFT for as long as
the connection lasts, though the peer still sends to us. A negotiation fails that way
when the connection it runs on is closed under it, and two crossed dials are exactly
that: both ends register the peer on the first connection, the second one arrives and
the duplicate rule (node/runtime.duplicates) closes one of them, mid-negotiation on one
end or the other. In the seed testnet the two sentries dial each other at start (each
reserves on the other) and carry the only path between the networks: when the sentry
that lost the race gave up, no vote crossed and no validator ever committed height 1
(CI, seed-exact, 2026-12-07). It also fails while the peer has not mounted gossipsub yet.

Here a StreamFailure is retried like a SwarmException (upstream's back-off, 0.5 s doubling
to 10 s, while the peer stays connected), up to RETRIES times in a row for one peer: a
peer that really speaks no gossipsub costs that many negotiations, then upstream's
giving up. Identify's protocol list does not decide it: it is read once per connection,
and a peer that mounts gossipsub after identify answered would be given up on again.
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.host.exceptions import StreamFailure
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID

log = logging.getLogger("sentrynet.overrides.pubsub_register_retry")

RETRIES = 6  # with upstream's back-off: about 25 s of trying


def install_pubsub_register_retry(pubsub: Any, retries: int = RETRIES) -> None:
    """`_handle_new_peer` raises a failed negotiation as a SwarmException, which
    upstream's retry loop retries while the peer is connected, `retries` times in a row."""
    if getattr(pubsub, "_sentrynet_register_retry", False):
        return
    register = pubsub._handle_new_peer
    failed: dict[ID, int] = {}

    async def handle_new_peer(peer_id: ID) -> None:
        try:
            await register(peer_id)
        except StreamFailure as exc:
            n = failed.get(peer_id, 0) + 1
            if n > retries:
                failed.pop(peer_id, None)
                raise
            failed[peer_id] = n
            log.debug("pubsub stream to %s not negotiated (%s): try %d", peer_id, exc, n)
            raise SwarmException(f"pubsub stream to {peer_id} not negotiated: {exc}") from exc
        failed.pop(peer_id, None)

    pubsub._handle_new_peer = handle_new_peer
    pubsub._sentrynet_register_retry = True
