"""node.runtime.duplicates: the rule both ends of a connection apply to keep one
connection per kind to a peer, without ever closing different halves; and with it
node.dcutr.service.newest_inbound_relayed, so that one end only initiates DCUtR."""

from __future__ import annotations

from typing import Any

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.dcutr.service import newest_inbound_relayed
from node.runtime import ConnInfo, duplicates


def ids() -> tuple[ID, ID]:
    a, b = (ID.from_pubkey(create_new_key_pair().public_key) for _ in range(2))
    return (a, b) if a.to_bytes() < b.to_bytes() else (b, a)


def conn(peer: ID, kind: Any, direction: str, seq: int) -> ConnInfo:
    return ConnInfo(peer, object(), kind, direction, "", float(seq), seq=seq)  # type: ignore[arg-type]


def flip(c: ConnInfo, peer: ID) -> ConnInfo:
    """The same connection as the other end sees it."""
    other = "inbound" if c.direction == "outbound" else "outbound"
    return ConnInfo(peer, c.conn, c.kind, other, "", c.opened_at, seq=c.seq)


def survivors(local: ID, remote: ID, mine: list[ConnInfo]) -> set[int]:
    """Connections (by identity) left after both ends closed what their rule says."""
    theirs = [flip(c, local) for c in mine]
    gone = {id(c.conn) for c in duplicates(local, mine)}
    gone |= {id(c.conn) for c in duplicates(remote, theirs)}
    return {id(c.conn) for c in mine} - gone


def test_cross_dial_keeps_the_smaller_ids_connection_on_both_ends() -> None:
    small, large = ids()
    for local, remote in ((small, large), (large, small)):
        out = conn(remote, "direct", "outbound", 1)
        inn = conn(remote, "direct", "inbound", 2)
        left = survivors(local, remote, [out, inn])
        dialed_by_small = out if local == small else inn
        assert left == {id(dialed_by_small.conn)}


def test_own_duplicates_keep_the_oldest_and_the_other_end_leaves_them() -> None:
    small, large = ids()
    for local, remote in ((small, large), (large, small)):
        a, b, c = (conn(remote, "relayed", "outbound", i) for i in (3, 1, 2))
        assert [x.seq for x in duplicates(local, [a, b, c])] == [2, 3]
        assert duplicates(remote, [flip(x, local) for x in (a, b, c)]) == []
        assert survivors(local, remote, [a, b, c]) == {id(b.conn)}


def test_direct_and_relayed_are_not_duplicates_of_each_other() -> None:
    small, large = ids()
    d = conn(large, "direct", "outbound", 1)
    r = conn(large, "relayed", "inbound", 2)
    assert duplicates(small, [d, r]) == []
    assert survivors(small, large, [d, r]) == {id(d.conn), id(r.conn)}


def test_after_a_relayed_cross_dial_one_end_initiates_dcutr() -> None:
    """Both ends dialed a circuit to each other. Whatever the order, after the duplicate
    rule only the end that received the surviving connection (the larger id: the smaller
    one's dial stays) has a relayed connection to initiate over; the other responds."""
    small, large = ids()
    for first in ("outbound", "inbound"):
        second = "inbound" if first == "outbound" else "outbound"
        mine = [conn(large, "relayed", first, 1), conn(large, "relayed", second, 2)]
        theirs = [flip(c, small) for c in mine]
        gone = {id(c.conn) for c in duplicates(small, mine) + duplicates(large, theirs)}
        left_small = [c for c in mine if id(c.conn) not in gone]
        left_large = [c for c in theirs if id(c.conn) not in gone]
        assert len(left_small) == len(left_large) == 1
        assert newest_inbound_relayed(left_small) is None, left_small
        assert newest_inbound_relayed(left_large) is left_large[0]


def test_the_newest_inbound_relayed_connection_is_driven() -> None:
    _, peer = ids()
    old, new = conn(peer, "relayed", "inbound", 1), conn(peer, "relayed", "inbound", 3)
    ours, direct = conn(peer, "relayed", "outbound", 4), conn(peer, "direct", "inbound", 5)
    assert newest_inbound_relayed([old, ours, new, direct]) is new
    assert newest_inbound_relayed([ours, direct]) is None
