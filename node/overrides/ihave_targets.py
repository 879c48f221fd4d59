"""IHAVE gossip goes to peers outside the mesh whatever their GRAFT backoff, as the spec
and go-libp2p do; upstream sends none to a peer in backoff.

Upstream (py-libp2p 0.8.1, `GossipSub.gossip_heartbeat` -> `_handle_topic_heartbeat`)
picks the peers to send IHAVE to with `_get_in_topic_gossipsub_peers_from_minus(topic,
count, mesh, backoff_check=True)`, so a peer in GRAFT backoff for the topic gets no IHAVE.
Backoff is about GRAFT alone: the gossipsub spec selects D_lazy peers "not in mesh[topic]"
for IHAVE, and go-libp2p's `emitGossip` excludes mesh, direct and low-score peers only. In
a small network a mesh can collapse (overfilled meshes pruned at random, both ends of each
pruned link in backoff for 60 s), leaving a host with one mesh peer and every other peer in
backoff; upstream then tells nobody outside that one peer about the host's messages. Seen
in a two-host sentry testnet (2026-12-06): a validator with one mesh peer (a full node),
the other two validators never got its votes in time, and consensus stalled for a minute.

This replaces the instance's `gossip_heartbeat` with one that selects the same number of
IHAVE targets (upstream's count) from the topic's gossipsub peers minus the mesh (or
fanout) peers and the direct peers, without the backoff filter.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from libp2p.peer.id import ID


def ihave_targets(gossipsub: Any, topic: str, current: set[ID]) -> list[ID]:
    """The peers to send this heartbeat's IHAVE for `topic` to: upstream's count, chosen at
    random among the topic's gossipsub peers outside `current` and the direct peers."""
    pubsub = gossipsub.pubsub
    in_topic = pubsub.peer_topics.get(topic, set())
    count = gossipsub._get_adaptive_gossip_peers_count(topic, len(in_topic) - len(current))
    eligible = gossipsub._get_in_topic_gossipsub_peers_from_minus(
        topic, len(in_topic), set(current) | set(gossipsub.direct_peers), False
    )
    return list(gossipsub.select_from_minus(count, eligible, ()))


def install_ihave_without_backoff(gossipsub: Any) -> None:
    """Replace the instance's `gossip_heartbeat` (see the module docstring)."""
    if getattr(gossipsub, "_sentrynet_ihave_without_backoff", False):
        return

    def gossip_heartbeat() -> defaultdict[ID, dict[str, list[bytes]]]:
        out: defaultdict[ID, dict[str, list[bytes]]] = defaultdict(dict)
        pubsub = gossipsub.pubsub
        topics = [(t, peers) for t, peers in gossipsub.mesh.items()]
        topics += [(t, peers) for t, peers in gossipsub.fanout.items() if t not in gossipsub.mesh]
        for topic, current in topics:
            if pubsub is None or topic not in pubsub.peer_topics:
                continue
            msg_ids = gossipsub.mcache.window(topic)
            if not msg_ids:
                continue
            for peer in ihave_targets(gossipsub, topic, set(current)):
                out[peer][topic] = list(msg_ids)
        return out

    gossipsub.gossip_heartbeat = gossip_heartbeat
    gossipsub._sentrynet_ihave_without_backoff = True
