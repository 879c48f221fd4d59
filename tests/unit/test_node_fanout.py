"""How many peers a node asks per round, as its peer count grows: peer exchange asks
PX_FANOUT a round, least recently asked first. (The sync poll's sample is exercised by
the chain tests on loopback, tests/node/test_chain.py, with real nodes.)"""

from __future__ import annotations

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.discovery import PX_FANOUT, DiscoveryService


def _peers(n: int) -> set[ID]:
    return {ID.from_pubkey(create_new_key_pair().public_key) for _ in range(n)}


def _service(connected: set[ID]) -> DiscoveryService:
    svc = DiscoveryService()
    svc._connected_peers = lambda: set(connected)  # type: ignore[method-assign]
    return svc


def test_px_asks_every_peer_each_round_while_they_are_few() -> None:
    peers = _peers(PX_FANOUT)
    svc = _service(peers)
    assert set(svc._px_round(1.0)) == peers
    assert set(svc._px_round(2.0)) == peers


def test_px_asks_a_fanout_per_round_and_reaches_every_peer_in_turn() -> None:
    peers = _peers(3 * PX_FANOUT + 1)
    svc = _service(peers)
    asked: list[set[ID]] = [set(svc._px_round(float(r))) for r in range(4)]
    assert all(len(a) == PX_FANOUT for a in asked)
    assert set().union(*asked) == peers  # 4 rounds cover 3 fanouts + 1
    assert not asked[0] & asked[1] and not asked[1] & asked[2]


def test_px_asks_a_new_connection_first_and_forgets_a_closed_one() -> None:
    peers = _peers(2 * PX_FANOUT)
    svc = _service(peers)
    svc._px_round(1.0)
    svc._px_round(2.0)  # every peer asked once
    (new,) = _peers(1)
    gone = next(iter(peers))
    peers.add(new)
    peers.discard(gone)
    assert new in svc._px_round(3.0)
    assert gone not in svc._px_asked
