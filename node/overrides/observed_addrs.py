"""Read every address identify observed for us, not the first three in text order.

Upstream (py-libp2p 0.8.1) keeps them in `BasicHost._observed_addr_manager` (an
`ObservedAddrManager`, None when disabled) and offers no public accessor; its own DCUtR
reads the private attribute the same way. DCUtR (node/dcutr/service.py) needs them to tell
the peer where to punch.

Upstream's `ObservedAddrManager.addrs(min_observers)` returns, per local address, at most
`MAX_EXTERNAL_ADDRS_PER_LOCAL` (3) observed addresses, sorted by observer count and then
by their text. DCUtR asks with min_observers=1 (one relay is often the only peer outside
the NAT), so every observation counts once, and the cut falls by text: a node behind NAT
is also observed by the peers on its own network (at its private IP, one entry per
ephemeral port they saw), and when those sort before the router's public IP, the one
observation that shows the NAT is cut. Seen in make test with the scenario tier two
testnets at a time: quic-cone's testnet got the subnets a 172.16.0.0/24, public
172.16.2.0/24, three peers on network a reported node0 at 172.16.0.10, the relay's report
of 172.16.2.254 was cut, and every punch of the run went to private addresses ("no public
address"). With the file's own subnets (public 10.0.0.0/24) the public one sorts first,
which is why it had not shown. The manager keeps every observation; this reads them all,
most observers first, then by text, as upstream orders them, and DCUtR picks those that
show the NAT (node/dcutr/addrs.external_observations).
"""

from __future__ import annotations

from typing import Any

import multiaddr
from libp2p.abc import IHost


def observed_addrs(host: IHost, min_observers: int = 1) -> list[multiaddr.Multiaddr]:
    """Our external addresses as peers reported them (empty when identify has none):
    every observed thin waist (IP and port) with `min_observers` or more, and each
    combined with the rest of our listen addresses on that thin waist (`/quic-v1`), as
    upstream's `addrs()` builds them, without its cut at three per local address."""
    manager: Any = getattr(host, "_observed_addr_manager", None)
    if manager is None:
        return []
    out: list[multiaddr.Multiaddr] = []
    seen: set[str] = set()
    for local, observed in list(manager._external_addrs.items()):
        rests = sorted(r for r in manager._local_addr_rests.get(local, ()) if r)
        ranked = sorted(observed.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        for external, observers in ranked:
            if len(observers) < min_observers:
                continue
            for text in (external, *(external + rest for rest in rests)):
                if text not in seen:
                    seen.add(text)
                    out.append(multiaddr.Multiaddr(text))
    return out
