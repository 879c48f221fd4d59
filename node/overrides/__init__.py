"""Small named overrides of py-libp2p 0.8.1 behaviour; each module names what it corrects.

- identify.py       re-identify on every connection; a hook when identify finishes
- circuit_addrs.py  advertise circuit addresses (get_addrs mangles them upstream)
- dial_unknown.py   dial an address whose peer id is not known yet
- negative_cache.py a peer whose dial failed once is not blocked for 60 s
- auto_connector.py the swarm does not dial every peer-store peer on its own
- multi_addr_dial.py dial every TCP address of a peer (upstream dials one per class)
- dial_peer.py      Swarm.dial_peer goes through the node's single-flight dialer
Relay hop/stop are reimplemented in node/relay/ (see node/relay/server.py for why).
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr
from libp2p.abc import IHost

from node.overrides.auto_connector import disable_auto_connector
from node.overrides.circuit_addrs import install_circuit_addrs
from node.overrides.identify import IdentifyHook, install_identify_hook
from node.overrides.negative_cache import shorten_negative_cache


def apply_host_overrides(
    host: IHost, circuit_addrs: Callable[[], list[multiaddr.Multiaddr]]
) -> IdentifyHook:
    """Apply every host-level override (once, before the host runs)."""
    install_circuit_addrs(host, circuit_addrs)
    shorten_negative_cache(host)
    disable_auto_connector(host)
    return install_identify_hook(host)
