"""DCUtR address selection and wire parsing (pure logic)."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from node.dcutr.addrs import (
    Endpoint,
    advertised_endpoints,
    dial_candidates,
    endpoint_of,
    external_observations,
    relay_of_circuit,
)
from node.dcutr.service import OBSERVE_ASK_EVERY_S, peers_to_ask
from node.dcutr.wire import CONNECT, SYNC, DcutrMessageError, decode, encode, read_message

RELAY = "12D3KooWRq4tRSFbyyCGmKVZrnMvtuR1VYcrhnZAqWMm2vMpmJqt"
PEER = "12D3KooWBmwkafWE2fqfzS96VoTZ3QZ2zCPDVxzC4xnuYMUdMahe"


def ep(s: str) -> Endpoint:
    e = endpoint_of(s)
    assert e is not None
    return e


def test_relay_of_circuit_reads_the_id_before_p2p_circuit() -> None:
    # py-libp2p 0.8.1 addresses relayed connections /p2p/<relay>/p2p-circuit/p2p/<peer>.
    # Its DCUtR filter takes the id after "/p2p-circuit/p2p/" -- the remote peer, not the
    # relay -- and so filters out the peer's own addresses. We read the relay.
    addr = f"/p2p/{RELAY}/p2p-circuit/p2p/{PEER}"
    assert addr.split("/p2p-circuit/p2p/")[1].split("/")[0] == PEER  # upstream's reading
    assert relay_of_circuit(addr) == RELAY
    assert relay_of_circuit(f"/ip4/10.0.0.3/tcp/4001/p2p/{RELAY}/p2p-circuit") == RELAY
    assert relay_of_circuit("/ip4/10.0.0.3/tcp/4001") is None


def test_endpoint_accepts_ip_tcp_and_quic_v1_only() -> None:
    assert endpoint_of(f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}") == Endpoint("1.2.3.4", 4001)
    assert endpoint_of("/ip6/::1/tcp/5") == Endpoint("::1", 5)
    quic = endpoint_of(f"/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{PEER}")
    assert quic == Endpoint("1.2.3.4", 4001, "quic")
    assert str(quic) == "/ip4/1.2.3.4/udp/4001/quic-v1"
    for bad in (
        f"/p2p/{RELAY}/p2p-circuit/p2p/{PEER}",
        "/ip4/1.2.3.4/tcp/4001/ws",
        "/ip4/1.2.3.4/udp/4001/quic",  # draft-29
        "/ip4/1.2.3.4/udp/4001",
        "/dns4/example.test/tcp/1",
        "/ip4/1.2.3.4/tcp/0",
        "not a multiaddr",
    ):
        assert endpoint_of(bad) is None, bad


def test_advertise_observed_ip_at_listen_port() -> None:
    listen = [ep("/ip4/10.1.0.2/tcp/4001")]
    observed = [ep("/ip4/100.64.0.11/tcp/53124")]  # port of the relay connection's socket
    got = advertised_endpoints(listen, observed)
    assert got == [ep("/ip4/100.64.0.11/tcp/4001")]  # private listen addr not advertised


def test_advertise_observed_ip_at_each_listen_port_and_the_observed_quic_mapping() -> None:
    listen = [ep("/ip4/10.1.0.2/tcp/4001"), ep("/ip4/10.1.0.2/udp/4001/quic-v1")]
    # a TCP observation (ephemeral socket) gives the public IP for both transports; a QUIC
    # one is the listening socket's own mapping (dials reuse it): kept as it is
    observed = [ep("/ip4/100.64.0.11/tcp/53124"), ep("/ip4/100.64.0.11/udp/61000/quic-v1")]
    assert advertised_endpoints(listen, observed) == [
        ep("/ip4/100.64.0.11/tcp/4001"),
        ep("/ip4/100.64.0.11/udp/4001/quic-v1"),
        ep("/ip4/100.64.0.11/udp/61000/quic-v1"),
    ]
    # a node that does not listen on QUIC advertises no QUIC observation
    assert advertised_endpoints(listen[:1], observed) == [ep("/ip4/100.64.0.11/tcp/4001")]


def test_dial_candidates_keep_the_transports_we_listen_on_and_punch() -> None:
    reported = ["/ip4/100.64.0.11/tcp/4001", "/ip4/100.64.0.11/udp/4001/quic-v1"]
    both = [ep("/ip4/10.2.0.2/tcp/4001"), ep("/ip4/10.2.0.2/udp/4001/quic-v1")]
    keep, _ = dial_candidates(reported, both)
    assert [c.transport for c in keep] == ["tcp", "quic"]
    keep, dropped = dial_candidates(reported, both, transports=("quic",))
    assert [c.transport for c in keep] == ["quic"]
    assert dropped == ["/ip4/100.64.0.11/tcp/4001 (tcp not punched (dcutr.transports))"]
    keep, dropped = dial_candidates(reported, both[:1])
    assert [c.transport for c in keep] == ["tcp"]
    assert dropped == ["/ip4/100.64.0.11/udp/4001/quic-v1 (we do not listen on quic)"]


def test_advertise_listen_addrs_without_observations() -> None:
    listen = [ep("/ip4/127.0.0.5/tcp/4001"), ep("/ip4/0.0.0.0/tcp/4002")]
    assert advertised_endpoints(listen, []) == [ep("/ip4/127.0.0.5/tcp/4001")]
    # an observation equal to our listen IP means no NAT: same answer
    assert advertised_endpoints(listen, [ep("/ip4/127.0.0.5/tcp/9")]) == [listen[0]]


def test_only_an_observation_at_another_ip_than_ours_shows_the_nat() -> None:
    # node4 of the sentry testnet with network b on a second host: its public observer's
    # connection had closed, its relay (homed on network b too) and its neighbours saw
    # 172.21.0.14, and it offered only that in CONNECT. That is not an observed address.
    listen = [ep("/ip4/172.21.0.14/tcp/4001")]
    private = [ep("/ip4/172.21.0.14/tcp/4001"), ep("/ip4/172.21.0.14/tcp/51234")]
    assert external_observations(private, listen) == []
    assert advertised_endpoints(listen, private) == listen  # what it offered
    public = ep("/ip4/10.0.0.253/tcp/20546")
    assert external_observations([*private, public], listen) == [public]
    assert advertised_endpoints(listen, [*private, public]) == [ep("/ip4/10.0.0.253/tcp/4001")]
    # a dual-homed node is observed at one of its own IPs on either side: no NAT
    dual = [ep("/ip4/172.20.0.13/tcp/4001"), ep("/ip4/10.0.0.3/tcp/4001")]
    assert external_observations(dual, dual) == []


def test_peers_asked_for_our_address_relays_first_each_once_not_again_soon() -> None:
    relay, a, b = (ID(bytes([0, 1, i])) for i in (1, 2, 3))
    assert peers_to_ask([a, relay, a, b], {relay}, {}, now=100.0) == [relay, a, b]
    asked = {relay: 100.0}
    assert peers_to_ask([a, relay, b], {relay}, asked, now=101.0) == [a, b]
    later = 100.0 + OBSERVE_ASK_EVERY_S
    assert peers_to_ask([a, relay, b], {relay}, asked, now=later) == [relay, a, b]


def test_dial_candidates_filter() -> None:
    own = [ep("/ip4/10.2.0.2/tcp/4001"), ep("/ip4/100.64.0.12/tcp/4001")]
    relay = [ep("/ip4/100.64.0.2/tcp/4001")]
    reported = [
        "/ip4/100.64.0.11/tcp/4001",
        f"/ip4/100.64.0.11/tcp/4001/p2p/{PEER}",  # duplicate
        "/ip4/0.0.0.0/tcp/4001",
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/169.254.1.1/tcp/4001",
        "/ip4/100.64.0.12/tcp/4001",  # ours
        "/ip4/100.64.0.2/tcp/4001",  # the relay
        f"/p2p/{RELAY}/p2p-circuit",
        "/ip6/2001:db8::1/tcp/4001",  # we have no IPv6 listen address
    ]
    keep, dropped = dial_candidates(reported, own, relay)
    assert keep == [ep("/ip4/100.64.0.11/tcp/4001")]
    assert len(dropped) == 7
    assert any("loopback" in d for d in dropped)
    assert any("relay address" in d for d in dropped)


def test_dial_candidates_keep_loopback_when_we_are_on_loopback() -> None:
    keep, _ = dial_candidates(["/ip4/127.0.0.7/tcp/4001"], [ep("/ip4/127.0.0.6/tcp/4001")])
    assert keep == [ep("/ip4/127.0.0.7/tcp/4001")]


def test_decode_rejects_with_reasons() -> None:
    with pytest.raises(DcutrMessageError) as e:
        decode(b"\xff\xff\xff", CONNECT)
    assert e.value.reason == "malformed"
    with pytest.raises(DcutrMessageError) as e:
        decode(b"", CONNECT)  # no type
    assert e.value.reason == "malformed"
    with pytest.raises(DcutrMessageError) as e:
        decode(encode(SYNC)[1:], CONNECT)
    assert e.value.reason == "unexpected_type"
    msg = decode(encode(CONNECT, [b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"])[1:], CONNECT)
    assert list(msg.ObsAddrs) == [b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"]


class _Bytes:
    """A stream that returns the given bytes, then EOF."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int | None = None) -> bytes:
        n = len(self.data) if n is None else n
        out, self.data = self.data[:n], self.data[n:]
        return out


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x80\x01" + b"x" * 10, "oversized"),  # length 16384 > 4 KiB
        (b"\x0a\x08", "truncated"),  # 10 bytes announced, 1 sent
        (b"", "truncated"),
        (b"\x03\xff\xff\xff", "malformed"),
        (b"\xff" * 11, "malformed"),  # varint longer than 64 bits
    ],
)
def test_read_message_reasons(data: bytes, reason: str) -> None:
    async def main() -> None:
        with pytest.raises(DcutrMessageError) as e:
            await read_message(_Bytes(data), CONNECT, 5.0)
        assert e.value.reason == reason

    trio.run(main)


def test_status_asks_for_observed_addrs_before_the_service_runs() -> None:
    """The API answers /status from the node's start, while services are still starting: a
    64-node bench saw one node answer HTTP 500 (RuntimeError: used before run())."""
    from node.dcutr.service import HolePunchService

    assert HolePunchService().observed_addrs() == []
