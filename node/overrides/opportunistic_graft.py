"""No opportunistic grafting without peer scoring, as in go-libp2p; upstream grafts two
more peers on every heartbeat and so tears the small meshes apart.

Upstream (py-libp2p 0.8.1, `GossipSub.mesh_heartbeat` -> `_perform_opportunistic_grafting`,
its "enhanced opportunistic grafting for Gossipsub 2.0") grafts up to two more peers on
every heartbeat whenever a topic mesh holds at least D_low peers and a peer outside it
scores at least max(half the mesh median, 1.1 x the worst mesh score, gossip_threshold).
The node sets no scoring parameters, so every score is 0 and every peer outside the mesh
qualifies. Meshes grow by two a second, pass D_high, and the next heartbeat prunes each of
them back to D at random; the two ends of a pruned link back off each other for 60 s, and
with both ends pruning, peers were left with no mesh at all. Ten hosts connected to each
other on loopback, D/D_low/D_high 4/3/5, sampled every 0.5 s for 20 s: upstream 48
opportunistic grafts, 19 prunes, some host below D_low in every sample and hosts at 0 mesh
peers; with this override no opportunistic graft, 3-4 prunes (simultaneous grafts at the
start), and no host below D_low after the first 5 s (two runs each).

Gossipsub v1.1 defines opportunistic grafting as part of peer scoring (every 60 heartbeats,
only when the mesh's median score is below a threshold the application sets); go-libp2p
does none without `WithPeerScore`. Our meshes are kept by the spec's degree rules alone.
"""

from __future__ import annotations

from typing import Any


def install_no_opportunistic_graft(gossipsub: Any) -> None:
    """Replace the instance's `_perform_opportunistic_grafting` with one that grafts none."""
    if getattr(gossipsub, "_sentrynet_no_opportunistic_graft", False):
        return

    def graft_none(topic: str, peers_to_graft: Any) -> int:
        return 0

    gossipsub._perform_opportunistic_grafting = graft_none
    gossipsub._sentrynet_no_opportunistic_graft = True
