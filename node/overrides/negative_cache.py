"""Shorten the swarm's negative dial cache.

Upstream (py-libp2p 0.8.1, Swarm._negative_peer_cache, TTL 60 s) refuses every dial to a
peer for a minute once all its addresses failed once ("recently failed all addresses
(negative cache)"). A relay that restarts in a second is therefore unreachable for 60 s
and its clients cannot re-reserve. Our services (relay client, discovery) back off per
peer themselves, so the swarm-wide cache only needs to absorb bursts: 0.5 s.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost

NEGATIVE_CACHE_TTL_S = 0.5


def shorten_negative_cache(host: IHost) -> None:
    swarm: Any = host.get_network()
    cache = getattr(swarm, "_negative_peer_cache", None)
    if cache is not None and hasattr(cache, "_ttl"):
        cache._ttl = NEGATIVE_CACHE_TTL_S
