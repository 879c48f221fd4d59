"""A pubsub stream that dies while its peer stays connected does not erase what the peer
subscribes to.

Upstream (py-libp2p 0.8.1, `Pubsub._handle_dead_peer`) forgets every subscription of the
peer (`_forget_all_subscriptions`) whenever one of its pubsub streams fails: a write to
it (our sending loop), a read from it, or a registration that did not finish. It then
opens a new stream to the peer if the peer is still connected, and sends the peer our
subscriptions again on it. The peer does not send us its own again: it announces them
once, on its stream to us, and that stream usually never broke. So we no longer count
the peer as subscribed to any topic, for as long as the connection lasts: it is never
grafted to a mesh, and none of our messages is sent to it (gossipsub sends only to peers
of the topic). A node whose streams all went that way publishes to nobody.

Streams fail that way whenever a connection carrying one is closed while another
connection to the same peer stays: the duplicate rule (node/runtime.duplicates) closes
one of two crossed dials, DCUtR closes a relayed connection after an upgrade. In the
seed testnet (CI and a repro loop, 2026-12-07) a validator was left with pubsub streams
to all four peers and an empty topic table: it heard every vote and none of its own left
it; with another validator stopped, the remaining three could not commit.

go-libp2p (pubsub.go, handleDeadPeers) keeps the peer's topics when the peer is still
connected ("must be a duplicate connection being closed") and respawns the writer. Here
the same: when the peer still has a live connection, its subscriptions are put back after
upstream's clean-up; the rest of that clean-up (mesh, outbound queue, the new stream)
runs as upstream. A peer that is really gone loses them, as upstream.
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.peer.id import ID

log = logging.getLogger("sentrynet.overrides.pubsub_keep_subscriptions")


def install_pubsub_keep_subscriptions(pubsub: Any) -> None:
    """Wrap `_handle_dead_peer`: a still-connected peer keeps its topics.
    `pubsub.sentrynet_subscriptions_kept` counts the times it mattered."""
    if getattr(pubsub, "_sentrynet_keep_subscriptions", False):
        return
    forget = pubsub._handle_dead_peer
    pubsub.sentrynet_subscriptions_kept = 0

    def handle_dead_peer(peer_id: ID) -> None:
        topics = [t for t, peers in list(pubsub.peer_topics.items()) if peer_id in peers]
        count = pubsub._peer_subscription_count.get(peer_id)
        forget(peer_id)
        if not topics or not pubsub._peer_is_connected(peer_id):
            return
        for topic in topics:
            pubsub.peer_topics.setdefault(topic, set()).add(peer_id)
        if count is not None:
            pubsub._peer_subscription_count[peer_id] = count
        pubsub.sentrynet_subscriptions_kept += 1
        log.info(
            "pubsub stream to %s ended, the peer is still connected: kept its %d "
            "subscription(s), opening a new stream",
            peer_id,
            len(topics),
        )

    pubsub._handle_dead_peer = handle_dead_peer
    pubsub._sentrynet_keep_subscriptions = True
