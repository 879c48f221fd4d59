"""node/overrides/observed_addrs.py: every observation identify recorded, not the first
three in text order (upstream py-libp2p 0.8.1 cuts at three per local address, ties by
text, so peers on a node's own network crowded out the relay's report of its router's
public address when their subnet sorted first). A real host's ObservedAddrManager records
the observations; only the connections they arrive on are stand-ins (the manager reads
their remote address and whether they closed)."""

from __future__ import annotations

from dataclasses import dataclass

import multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair

from node.overrides.observed_addrs import observed_addrs

LISTEN = [multiaddr.Multiaddr("/ip4/172.16.0.10/tcp/4001")]
PUBLIC = "/ip4/172.16.2.254/tcp/20432"


@dataclass
class Muxed:
    remote: tuple[str, int]

    def get_remote_address(self) -> tuple[str, int]:
        return self.remote


@dataclass
class Conn:
    muxed_conn: Muxed
    is_closed: bool = False


def test_the_relays_report_of_the_public_address_survives_three_lan_observers() -> None:
    host = new_host(key_pair=create_new_key_pair())
    manager = host._observed_addr_manager  # type: ignore[attr-defined]
    keep = []  # the manager holds connections weakly
    # three peers on network a see node0 at its private IP (two of them on ephemeral ports)
    for i, port in enumerate((4001, 20074, 20556)):
        conn = Conn(Muxed((f"172.16.0.{11 + i}", 4002 + i)))
        keep.append(conn)
        manager.record_observation(
            conn, multiaddr.Multiaddr(f"/ip4/172.16.0.10/tcp/{port}"), LISTEN
        )
    # the public relay sees it at router-a's public address
    relay = Conn(Muxed(("172.16.2.7", 4001)))
    keep.append(relay)
    manager.record_observation(relay, multiaddr.Multiaddr(PUBLIC), LISTEN)

    upstream = [str(a) for a in manager.addrs(min_observers=1)]
    assert len(upstream) == 3 and PUBLIC not in upstream, upstream  # the bug
    ours = [str(a) for a in observed_addrs(host)]
    assert PUBLIC in ours and set(upstream) <= set(ours) and len(ours) == 4, ours
    # an address seen by more observers still comes first, as upstream orders them
    second = Conn(Muxed(("172.16.2.3", 4001)))
    keep.append(second)
    manager.record_observation(second, multiaddr.Multiaddr(PUBLIC), LISTEN)
    assert str(observed_addrs(host)[0]) == PUBLIC
    assert [str(a) for a in observed_addrs(host, min_observers=2)] == [PUBLIC]
