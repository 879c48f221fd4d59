"""The fuzz tier in `make test`: a bounded, derandomized count of adversarial inputs per
protocol (testkit/fuzz.py) sent to one live node on loopback (testkit/fuzz_live.py).

Per protocol: no crash, every rejectable input rejected and counted (/status "rejected" and
sentrynet_messages_rejected_total agree with the oracle's count), and afterwards the node
answers /status and grants a normal reservation (sync: answers a normal request; gossipsub
and identify, which py-libp2p reads before our code and nothing counts: still deliver
gossip / answer identify). The nightly count: `python -m bench.fuzz --per-protocol 10000`.

Also the regressions the tier found, each shown on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.pb.circuit_pb2 import StopMessage
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID

from node.relay.wire import encode
from testkit import fuzz
from testkit.fuzz_live import STRATEGIES, Target, connect, run_batch, running, send
from testkit.procs import NodeProcs
from testkit.sync_probe import probe_host

pytestmark = pytest.mark.loopback

# bounded so the whole file stays near a minute on a 2-core machine; the relayed DCUtR
# batch costs a circuit round trip and a CONNECT answer per input
COUNTS = {
    "hop": 100,
    "stop": 100,
    "dcutr": 100,
    "dcutr_relayed": 30,
    "sync": 100,
    "gossipsub_rpc": 100,
    "gossip": 60,
    "identify": 100,
}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with NodeProcs(tmp_path_factory.mktemp("fuzz")) as procs:
        yield Target(procs)


@pytest.mark.parametrize("protocol", list(COUNTS))
def test_fuzz_batch(target: Target, protocol: str) -> None:
    cases = fuzz.generate(STRATEGIES[protocol](), COUNTS[protocol])
    assert len(cases) == COUNTS[protocol]
    res = trio.run(run_batch, target, protocol, cases, 10)
    doc = res.to_json()
    assert res.crashes == 0 and res.node_alive and res.status_ok, doc
    assert res.handler_errors == 0, doc  # every bad input rejected by its handler, none raised
    assert not res.mismatches, doc
    if res.counter is not None and not res.upstream_drops:
        assert res.counted == res.expected_rejections == res.metric_counted, doc
    assert res.reservation_after, doc
    assert res.ok(), doc


def test_generation_is_reproducible() -> None:
    """Derandomized: CI sends the same inputs every run."""
    a = fuzz.generate(fuzz.hop_cases(), 20)
    b = fuzz.generate(fuzz.hop_cases(), 20)
    assert [c.payload for c in a] == [c.payload for c in b]


def test_oracles_on_known_inputs() -> None:
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage

    assert fuzz.hop_expect(encode(HopMessage(type=HopMessage.RESERVE))) == 0
    assert fuzz.hop_expect(b"") == 1
    assert fuzz.hop_expect(fuzz.uvarint(5000) + b"x") == 1
    assert fuzz.sync_expect(b"") == 0
    assert fuzz.sync_expect(fuzz.frame(b'{"type":"status"}') + fuzz.frame(b"[]")) == 1
    assert fuzz.sync_expect(fuzz.frame(b"x") + b"\x05ab") == 2  # bad request, cut frame
    assert fuzz.stop_expect(encode(StopMessage(type=StopMessage.CONNECT))) == 1


def test_stop_connect_with_a_peer_id_no_multiaddr_carries_is_rejected(tmp_path: Path) -> None:
    """Found by the fuzz tier: a STOP CONNECT whose peer id is not a multihash (here 43
    bytes claiming a 36-byte digest) raised building the circuit address, out of the stop
    handler and the swarm: the node's process went down. Now: rejected, counted."""
    bad = bytes.fromhex("0024080112") + b"\x01" * 38
    with NodeProcs(tmp_path) as procs:
        node = procs.start("n", relay={"enabled": True, "mode": "client"}, p2p={"discovery": False})

        async def go() -> bool:
            async with running(probe_host()) as host:
                peer = await connect(host, node)
                msg = StopMessage(type=StopMessage.CONNECT, peer=PbPeer(id=bad))
                return await send(host, peer, STOP_ID, encode(msg))

        assert trio.run(go)
        assert node.alive() and node.status()["rejected"]["stop"] == 1
        assert (
            fuzz.stop_expect(encode(StopMessage(type=StopMessage.CONNECT, peer=PbPeer(id=bad))))
            == 1
        )


def test_gossipsub_rpc_that_does_not_parse_leaves_the_node_up(tmp_path: Path) -> None:
    """Found by the fuzz tier: upstream's Pubsub.stream_handler lets protobuf's DecodeError
    escape; the node's process went down (node/overrides/pubsub_rpc.py)."""
    with NodeProcs(tmp_path) as procs:
        node = procs.start("n", p2p={"discovery": False})

        async def go() -> bool:
            async with running(probe_host()) as host:
                peer = await connect(host, node)
                # no linger: returns once the node has ended the stream (the override
                # resets it), so the node has handled the RPC by then
                return await send(host, peer, PROTOCOL_ID_V12, fuzz.frame(b"\x0a\xff\xff"))

        async def still_serving() -> bool:
            async with running(probe_host()) as host:
                await connect(host, node)  # a fresh peer: fails if the process went down
                return True

        assert trio.run(go)
        assert trio.run(still_serving)
        assert node.alive() and node.status()["ready"]
