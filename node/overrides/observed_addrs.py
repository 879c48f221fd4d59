"""Read the addresses identify observed for us.

Upstream (py-libp2p 0.8.1) keeps them in `BasicHost._observed_addr_manager` (an
`ObservedAddrManager`, None when disabled) and offers no public accessor; its own DCUtR
reads the private attribute the same way. DCUtR (node/dcutr/service.py) needs them to tell the
peer where to punch.
"""

from __future__ import annotations

from typing import Any

import multiaddr
from libp2p.abc import IHost


def observed_addrs(host: IHost, min_observers: int = 1) -> list[multiaddr.Multiaddr]:
    """Our external addresses as peers reported them (empty when identify has none)."""
    manager: Any = getattr(host, "_observed_addr_manager", None)
    if manager is None:
        return []
    return list(manager.addrs(min_observers=min_observers))
