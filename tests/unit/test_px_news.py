"""When peer exchange comes back to its short interval (node/discovery.py): on something
new, not on every change. At 64 nodes connection events and answers changed every few
seconds without teaching anything, and rounds never backed off."""

from __future__ import annotations

import multiaddr
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore

from node.discovery import PxSchedule, holds_addrs, px_news

LOW = 6


def test_a_first_connection_to_a_peer_brings_rounds_back() -> None:
    assert px_news("opened", conns_to_peer=1, peers_connected=7, low=LOW)


def test_a_second_connection_to_a_peer_does_not() -> None:
    # a duplicate, or the direct connection a hole punch made beside the circuit
    assert not px_news("opened", conns_to_peer=2, peers_connected=7, low=LOW)


def test_a_close_above_the_low_watermark_does_not() -> None:
    assert not px_news("closed", conns_to_peer=0, peers_connected=LOW, low=LOW)


def test_a_close_below_the_low_watermark_does() -> None:
    assert px_news("closed", conns_to_peer=0, peers_connected=LOW - 1, low=LOW)


def test_a_close_of_one_of_two_connections_does_not() -> None:
    # the circuit closing once the direct connection is up: the peer is still there
    assert not px_news("closed", conns_to_peer=1, peers_connected=0, low=LOW)


def test_schedule_doubles_while_nothing_new_and_comes_back_on_news() -> None:
    s = PxSchedule()
    s.after_round(0.0, changed=False)
    s.after_round(s.next_at(), changed=False)
    assert s.interval == 20.0
    s.after_round(s.next_at(), changed=True)
    assert s.interval == 5.0


def test_addresses_already_held_are_not_new() -> None:
    ps = PeerStore()
    peer = ID.from_base58("12D3KooWLFjrKSaGsWbiFioADLrUkvwmwb6Z9XwTwrsi9nud6aXo")
    a = multiaddr.Multiaddr("/ip4/10.0.0.3/tcp/4001")
    b = multiaddr.Multiaddr("/ip4/10.0.0.4/tcp/4001")
    assert not holds_addrs(ps, peer, [a])  # a peer the store has never seen
    ps.add_addrs(peer, [a], 3600)
    assert holds_addrs(ps, peer, [a])
    assert holds_addrs(ps, peer, [multiaddr.Multiaddr("/ip4/10.0.0.3/tcp/4001")])
    assert not holds_addrs(ps, peer, [a, b])
