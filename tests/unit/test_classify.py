"""node/runtime.classify reports what was recorded when a connection was made and refuses
to guess: a relayed connection the node's circuit code did not record, or a connection of
unknown type, is an error, never "direct"."""

from __future__ import annotations

from dataclasses import dataclass, field

import multiaddr
import pytest
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.runtime import UnrecordedConnection, classify


def peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


@dataclass
class Muxed:
    ctype: ConnectionType

    def get_connection_type(self) -> ConnectionType:
        return self.ctype


@dataclass
class Conn:
    """What py-libp2p's SwarmConn carries from the raw connection that made it."""

    ctype: ConnectionType
    addrs: list[str]
    muxed_conn: Muxed = field(default_factory=lambda: Muxed(ConnectionType.UNKNOWN))

    def get_connection_type(self) -> ConnectionType:
        return self.ctype

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr(a) for a in self.addrs]


def test_tcp_connection_is_direct_at_its_tcp_address() -> None:
    conn = Conn(ConnectionType.DIRECT, ["/ip4/10.0.0.2/tcp/4001"])
    assert classify(conn, {}) == ("direct", "/ip4/10.0.0.2/tcp/4001", None)  # type: ignore[arg-type]


def test_recorded_circuit_is_relayed_through_its_relay() -> None:
    relay, target = peer(), peer()
    addr = f"/ip4/10.0.0.3/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}"
    conn = Conn(ConnectionType.RELAYED, [addr])
    assert classify(conn, {addr: relay}) == ("relayed", addr, relay)  # type: ignore[arg-type]


def test_unrecorded_relayed_connection_is_an_error() -> None:
    relay, target = peer(), peer()
    addr = f"/ip4/10.0.0.3/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}"
    with pytest.raises(UnrecordedConnection, match="not opened by node/relay"):
        classify(Conn(ConnectionType.RELAYED, [addr]), {})  # type: ignore[arg-type]


def test_unknown_type_is_an_error_not_direct() -> None:
    conn = Conn(ConnectionType.UNKNOWN, [])
    with pytest.raises(UnrecordedConnection):
        classify(conn, {})  # type: ignore[arg-type]


def test_type_the_swarm_did_not_copy_comes_from_the_muxer() -> None:
    conn = Conn(ConnectionType.UNKNOWN, ["/ip4/10.0.0.2/tcp/1"], Muxed(ConnectionType.DIRECT))
    assert classify(conn, {})[0] == "direct"  # type: ignore[arg-type]
