"""Bad input against a real chain node: malformed sync requests and bad consensus gossip are
answered/rejected, counted (/status "rejected", sentrynet_messages_rejected_total) and the
node keeps serving and committing.

The probe is a real py-libp2p host in the test process (TCP, Noise, Yamux, gossipsub),
talking to the node over loopback like any peer would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from node.chain import codec
from node.chain.block import PREVOTE, Block, Proposal, ValidatorSet, Vote
from node.chain.service import encode_gossip, topic_for
from node.host import load_or_create_key
from testkit.chain import chain, chain_section, height, make_key
from testkit.procs import NodeProc, NodeProcs, wait_for
from testkit.sync_probe import check_answers, probe_host, send_bad_sync_requests

pytestmark = pytest.mark.loopback


def rejected(node: NodeProc, protocol: str, reason: str) -> float:
    return node.metric("sentrynet_messages_rejected_total", protocol=protocol, reason=reason)


def test_malformed_sync_requests_get_errors_and_server_keeps_serving(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("solo")
        ids = {"solo": make_key(node.config["node"]["key_file"])}
        node = procs.start("solo", node={"role": "validator"}, chain=chain_section(ids, 0.2))
        wait_for(node, lambda s: height(s) >= 3, "solo validator commits", 60)
        vset = ValidatorSet(list(ids.items()))
        check_answers(send_bad_sync_requests(node, ids["solo"]), vset)
        st = node.status()
        assert st["rejected"]["sync"] >= 5, st["rejected"]
        assert rejected(node, "sync", "malformed") >= 4
        assert rejected(node, "sync", "bad_frame") >= 1
        h = height(st)
        wait_for(node, lambda s: height(s) >= h + 3, "commits after the bad requests", 30)


def test_bad_consensus_gossip_is_rejected_and_counted(tmp_path: Path) -> None:
    """Two validators, only one running: the chain cannot commit (quorum 2 of 2), so the
    node stays at height 1 going through rounds while the probe gossips bad messages."""
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("a")
        absent_key = tmp_path / "absent.key"
        ids = {"a": make_key(node.config["node"]["key_file"]), "b": make_key(absent_key)}
        node = procs.start("a", node={"role": "validator"}, chain=chain_section(ids, 0.2))
        vset = ValidatorSet(list(ids.items()))
        key_a = load_or_create_key(node.config["node"]["key_file"]).private_key
        key_b = load_or_create_key(str(absent_key)).private_key
        outsider = create_new_key_pair()
        out_id = str(ID.from_pubkey(outsider.public_key))
        topic = topic_for(vset)
        h1, h2 = b"\x01" * 32, b"\x02" * 32

        async def probe() -> None:
            host = probe_host()
            gs = GossipSub(
                protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
                degree=2,
                degree_low=1,
                degree_high=4,
                heartbeat_interval=1,
            )
            ps = Pubsub(host, gs)
            listen = multiaddr.Multiaddr(f"/ip4/{node.ip}/tcp/0")
            async with (
                host.run(listen_addrs=[listen]),
                background_trio_service(ps),
                background_trio_service(gs),
            ):
                await ps.wait_until_ready()
                await ps.subscribe(topic)
                peer = ID.from_base58(ids["a"])
                await host.connect(PeerInfo(peer, [multiaddr.Multiaddr(node.p2p_addr)]))
                with trio.fail_after(20):
                    while peer not in ps.peer_topics.get(topic, set()):
                        await trio.sleep(0.05)
                st = json.loads(node.get("/status"))
                rnd = chain(st)["round"] + 20
                msgs = [
                    b"\x00garbage",
                    codec.encode({"kind": "vote", "vote": {"type": "prevote"}}),
                    # a validator's vote with a signature that does not match
                    encode_gossip(Vote(PREVOTE, 1, rnd, h1, ids["b"], b"\x00" * 64)),
                    # a well-signed vote from a peer that is not a validator
                    encode_gossip(
                        Vote.make(vset, outsider.private_key, out_id, PREVOTE, 1, rnd, h1)
                    ),
                    # a proposal signed by a validator that is not this round's proposer
                    encode_gossip(
                        Proposal.make(
                            vset,
                            key_a if vset.proposer(1, rnd) == ids["b"] else key_b,
                            ids["a"] if vset.proposer(1, rnd) == ids["b"] else ids["b"],
                            rnd,
                            Block(1, vset.chain_id, ids["b"], 0),
                            -1,
                        )
                    ),
                    # equivocation: b signs two different prevotes for one step
                    encode_gossip(Vote.make(vset, key_b, ids["b"], PREVOTE, 1, rnd, h1)),
                    encode_gossip(Vote.make(vset, key_b, ids["b"], PREVOTE, 1, rnd, h2)),
                ]
                for m in msgs:
                    await ps.publish(topic, m)
                    await trio.sleep(0.05)  # keep order: the equivocation needs the first vote
                with trio.fail_after(20):
                    while json.loads(node.get("/status"))["rejected"]["consensus"] < 6:
                        await trio.sleep(0.1)

        trio.run(probe)
        st = node.status()
        counts = {
            r: rejected(node, "consensus", r)
            for r in (
                "malformed",
                "bad_signature",
                "not_validator",
                "wrong_proposer",
                "equivocation",
            )
        }
        assert all(v >= 1 for v in counts.values()), (counts, st["rejected"])
        assert counts["malformed"] >= 2
        assert chain(st)["height"] == 0 and st["rejected"]["consensus"] >= 6
        # none of it moved the chain, and the node is alive and answering
        assert node.alive() and node.status()["chain"]["error"] is None


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("data_dir_is_a_file", "chain disabled: "),
        ("corrupt_store", "chain disabled: DatabaseError"),
        ("bad_validator_id", "is not a peer id"),
        ("store_of_another_validator_set", "store belongs to another validator set"),
    ],
)
def test_a_chain_that_cannot_run_says_why(tmp_path: Path, case: str, said: str) -> None:
    """Faults the node used to hide: the chain service crashed quietly, /status showed
    ready: false forever with chain.error null. Now chain.error and the log say why."""
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("n")
        ids = {"n": make_key(node.config["node"]["key_file"])}
        data = tmp_path / "n-data"
        sections: dict[str, dict[str, Any]] = {
            "node": {"role": "validator", "data_dir": str(data)},
            "chain": chain_section(ids, 0.2),
        }
        if case == "data_dir_is_a_file":
            data.write_text("not a directory")
        elif case == "corrupt_store":
            data.mkdir()
            (data / "chain.sqlite").write_bytes(b"this is not a sqlite database" * 100)
        elif case == "bad_validator_id":
            sections["chain"] = chain_section({"n": "not-a-peer-id"}, 0.2)
        elif case == "store_of_another_validator_set":
            first = procs.start("n", **sections)
            wait_for(first, lambda s: height(s) >= 1, "a first block in the store", 30)
            first.stop()
            other = make_key(tmp_path / "other.key")
            sections["chain"] = chain_section({**ids, "o": other}, 0.2)
        node = procs.start("n", wait_ready=False, **sections)
        st = wait_for(node, lambda s: (chain(s) or {}).get("error") and s, "chain.error", 30)
        assert said in chain(st)["error"], chain(st)["error"]
        assert st["ready"] is False
        assert node.proc is not None and node.proc.poll() is None  # the node keeps running
        assert "chain disabled" in node.log_path.read_text()
