"""Advertise relay circuit addresses through get_addrs (and so identify / identify-push).

Upstream (py-libp2p 0.8.1, BasicHost.get_addrs) strips "any existing /p2p/ component"
with `addr.decapsulate(/p2p/<first p2p value>)` before appending our own id. For a
circuit address `<relay>/p2p/<relay-id>/p2p-circuit` the first /p2p value is the RELAY's
id, so the address is cut back to the relay's bare transport address and re-labelled
with our id: `<relay ip>/tcp/<port>/p2p/<us>` — a wrong, undialable address. Nothing in
upstream adds reservation addresses to identify at all.

We append circuit addresses after upstream's processing, each as
`<relay addr>/p2p/<relay-id>/p2p-circuit/p2p/<us>`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import multiaddr
from libp2p.abc import IHost


def install_circuit_addrs(host: IHost, provider: Callable[[], list[multiaddr.Multiaddr]]) -> None:
    h: Any = host
    orig = h.get_addrs

    def get_addrs() -> list[multiaddr.Multiaddr]:
        own = multiaddr.Multiaddr(f"/p2p/{host.get_id()}")
        out = [a for a in orig() if "/p2p-circuit" not in str(a)]
        seen = {str(a) for a in out}
        for c in provider():
            full = c if str(c).endswith(str(own)) else c.encapsulate(own)
            if str(full) not in seen:
                seen.add(str(full))
                out.append(full)
        return out

    h.get_addrs = get_addrs
