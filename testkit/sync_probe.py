"""A raw /sentrynet/sync/1.0.0 client that sends what no honest node sends, for the
bad-input tests of both implementations' sync servers (tests/node/test_chain_badinput.py,
tests/interop/test_interop_chain.py): one probe, so the Python and the rust server are
held to exactly the same requests and the same expectations."""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.utils.varint import encode_uvarint

from node.chain import codec
from node.chain.block import Block, CommitCert, ValidatorSet
from node.chain.sync import SYNC_PROTOCOL, FrameReader, frame
from testkit.procs import NodeProc

# requests a server must answer with an error, on one stream that stays usable
BAD_REQUESTS = (
    encode_uvarint(8) + b"not json",
    frame({"type": "blocks", "from": 0, "to": 2}),
    frame({"type": "blocks", "from": 1, "to": 100000}),
    frame({"type": "gimme"}),
)


def probe_host() -> Any:
    """A bare py-libp2p host (Noise, Yamux) that speaks only what the test writes."""
    kp = create_new_key_pair()
    noise = NoiseTransport(kp, noise_privkey=create_x25519().private_key)
    return new_host(key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference="YAMUX")


async def ask(stream: Any, reader: FrameReader, raw: bytes) -> dict[str, Any]:
    await stream.write(raw)
    with trio.fail_after(10):
        body = await reader.read_frame(1 << 24)
    assert body is not None, "server closed the stream without an answer"
    return codec.decode_object(body)


def send_bad_sync_requests(node: NodeProc, peer_id: str) -> dict[str, Any]:
    """BAD_REQUESTS on one stream, then a good one on it; a framing error on a second
    stream; a good request on a third. The answers, by name."""
    results: dict[str, Any] = {}

    async def probe() -> None:
        host = probe_host()
        listen = multiaddr.Multiaddr(f"/ip4/{node.ip}/tcp/0")
        async with host.run(listen_addrs=[listen]):
            peer = ID.from_base58(peer_id)
            await host.connect(PeerInfo(peer, [multiaddr.Multiaddr(node.p2p_addr)]))
            s1 = await host.new_stream(peer, [SYNC_PROTOCOL])
            r1 = FrameReader(s1)
            results["errors"] = [await ask(s1, r1, raw) for raw in BAD_REQUESTS]
            # the same stream still answers a good request
            results["status"] = await ask(s1, r1, frame({"type": "status"}))
            # a framing error: an error answer, then that stream is closed
            s2 = await host.new_stream(peer, [SYNC_PROTOCOL])
            results["frame_error"] = await ask(s2, FrameReader(s2), encode_uvarint(10**9))
            # a fresh stream is served normally
            s3 = await host.new_stream(peer, [SYNC_PROTOCOL])
            results["blocks"] = await ask(
                s3, FrameReader(s3), frame({"type": "blocks", "from": 1, "to": 3})
            )

    trio.run(probe)
    return results


def check_answers(results: dict[str, Any], vset: ValidatorSet) -> None:
    """Every bad request got an error naming the field; the good ones were answered, and
    the blocks served verify against their certificates (not just well-formed)."""
    errors = results["errors"]
    assert all(e["type"] == "error" for e in errors), errors
    assert "'from'" in errors[1]["reason"] and "longer" in errors[2]["reason"], errors
    assert results["status"]["type"] == "status" and results["status"]["height"] >= 3
    assert results["frame_error"]["type"] == "error", results["frame_error"]
    blocks = results["blocks"]["blocks"]
    assert [b["block"]["height"] for b in blocks] == [1, 2, 3]
    prev = vset.chain_id
    for item in blocks:
        block = Block.from_obj(item["block"])
        assert block.prev_hash == prev
        CommitCert.from_obj(item["commit"]).verify(vset, block)
        prev = block.hash
