"""The px text conversions, remembered (node/addr_cache.py): the same results as
py-multiaddr's and libp2p's own, malformed input still raises, the maps stay bounded."""

from __future__ import annotations

import pytest
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from node.addr_cache import AddrCache

PEER = "12D3KooWBmwkafWE2fqfzS96VoTZ3QZ2zCPDVxzC4xnuYMUdMahe"
ADDRS = [
    "/ip4/10.0.0.3/tcp/4001",
    f"/ip4/10.0.0.3/tcp/4001/p2p/{PEER}/p2p-circuit",
    "/ip4/172.20.0.10/udp/4001/quic-v1",
]


def test_same_text_and_values_as_uncached() -> None:
    cache = AddrCache()
    for text in ADDRS * 2:
        parsed = cache.parse(text)
        assert parsed == Multiaddr(text)
        assert cache.text(parsed) == str(Multiaddr(text))
        assert cache.text(Multiaddr(text)) == str(Multiaddr(text))
    pid = cache.peer_id(PEER)
    assert pid == ID.from_base58(PEER) and cache.id_text(pid) == PEER


def test_malformed_input_raises_every_time() -> None:
    cache = AddrCache()
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - whatever py-multiaddr raises
            cache.parse("/ip4/not-an-ip/tcp/1")
        with pytest.raises(Exception):  # noqa: B017
            cache.peer_id("not base58 0OIl")


def test_maps_stay_bounded() -> None:
    cache = AddrCache(max_entries=3)
    for port in range(1, 20):
        text = f"/ip4/10.0.0.1/tcp/{port}"
        assert cache.text(cache.parse(text)) == text
    assert len(cache._parsed) <= 3 and len(cache._text) <= 3
