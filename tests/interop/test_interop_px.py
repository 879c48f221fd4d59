"""Peer exchange (`/sentrynet/px/1.0.0`) between the rust node and our Python node on
loopback: the rust node answers px (so Python nodes behind a rust relay find each
other), asks px (so it finds peers a Python node knows), counts malformed replies in
rejected.px, and reaches a learnt peer through its /p2p-circuit address when the
direct address it was given does not answer.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from rustnode import start_rust

from node.discovery import PX_ID
from testkit.procs import NodeProc, NodeProcs, free_port, wait_for

pytestmark = pytest.mark.interop

NO_PX = {"discovery": False}
NO_DCUTR = {"enabled": False}
RELAY_SERVER = {"enabled": True, "mode": "server"}


def client(*relays: str) -> dict[str, Any]:
    return {"enabled": True, "mode": "client", "relay_servers": list(relays)}


def known(st: dict[str, Any], peer: str) -> dict[str, Any] | None:
    return next((k for k in st["peers_known"] if k["peer"] == peer), None)


def conns(st: dict[str, Any], peer: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        c for c in st["connections"] if c["peer"] == peer and (kind is None or c["kind"] == kind)
    ]


def probe_host() -> Any:
    kp = create_new_key_pair()
    noise = NoiseTransport(kp, noise_privkey=create_x25519().private_key)
    return new_host(key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference="YAMUX")


def learns_and_connects(me: NodeProc, other: NodeProc) -> dict[str, Any]:
    """Wait until `me` knows `other` and is connected to it; its peers_known row."""
    peer = other.peer_id
    k: dict[str, Any] = wait_for(me, lambda s: known(s, peer), f"{other.name} learnt", 30)
    wait_for(me, lambda s: conns(s, peer), f"{me.name} connected to {other.name}", 30)
    return k


def test_python_clients_of_a_rust_relay_find_each_other(rust_node: Path, tmp_path: Path) -> None:
    """(a) Two Python nodes whose only peer is a rust relay learn each other from the rust
    node's px answer and connect."""
    with NodeProcs(tmp_path) as procs:
        relay = start_rust(procs, rust_node, "rrelay", node={"role": "sentry"}, relay=RELAY_SERVER)
        relay_id = relay.peer_id
        a = procs.start("pya", relay=client(relay.full_addr), dcutr=NO_DCUTR)
        b = procs.start("pyb", relay=client(relay.full_addr), dcutr=NO_DCUTR)
        for me, other in ((a, b), (b, a)):
            k = learns_and_connects(me, other)
            assert k["source"] == f"px:{relay_id}", k
            assert any(other.p2p_addr in x for x in k["addrs"]), k
            assert any("/p2p-circuit" in x for x in k["addrs"]), "circuit addrs passed on"
        st = relay.status()
        assert {k["peer"] for k in st["peers_known"]} >= {a.peer_id, b.peer_id}
        assert st["rejected"].get("px", 0) == 0


def test_rust_node_finds_a_peer_through_python_px(rust_node: Path, tmp_path: Path) -> None:
    """(b) The rust node's only peer (persistent) knows a third node: the rust node learns
    it through px and dials it (the third node asks nobody, so the dial is the rust
    node's own)."""
    with NodeProcs(tmp_path) as procs:
        third = procs.start("third", p2p=NO_PX)
        middle = procs.start("middle", p2p={"persistent_peers": [third.full_addr]})
        third_id, middle_id = third.peer_id, middle.peer_id
        wait_for(middle, lambda s: conns(s, third_id), "middle connected to third", 30)
        rust = start_rust(procs, rust_node, "rust", p2p={"persistent_peers": [middle.full_addr]})
        k = wait_for(rust, lambda s: known(s, third_id), "third learnt through px", 30)
        assert k["source"] == f"px:{middle_id}", k
        assert third.p2p_addr in k["addrs"], k
        c = wait_for(rust, lambda s: conns(s, third_id), "rust connected to third", 30)[0]
        assert c["direction"] == "outbound" and c["kind"] == "direct", c
        st = rust.status()
        assert known(st, middle_id)["source"] == "persistent"  # type: ignore[index]
        assert known(st, third_id)["failures"] == 0  # type: ignore[index]


def test_rust_node_rejects_malformed_px_and_keeps_running(rust_node: Path, tmp_path: Path) -> None:
    """(c) Replies that are not JSON, oversized (> 256 KiB) or have no peers list are
    counted in rejected.px; a px request with bytes in it (the asker writes nothing) is
    answered as any other; the rust node keeps running and asking."""
    with NodeProcs(tmp_path) as procs:
        rust = start_rust(procs, rust_node, "rust")
        rust_id = rust.peer_id
        bad = [b"not json", b'{"peers": [' + b" " * (300 * 1024) + b"]}", b'{"peers": 7}']
        asked: list[int] = []
        answer: dict[str, Any] = {}

        async def serve(stream: Any) -> None:
            n = len(asked)
            asked.append(n)
            body = bad[n] if n < len(bad) else json.dumps({"peers": []}).encode()
            try:
                await stream.write(body)
            finally:
                await stream.close()

        def rejected_then_asked_again() -> None:
            wait_for(rust, lambda st: st["rejected"].get("px", 0) >= 3, "3 px rejections", 30)
            wait_for(rust, lambda st: len(asked) > len(bad), "asked after the rejections", 15)

        async def probe() -> None:
            host = probe_host()
            host.set_stream_handler(PX_ID, serve)
            listen = multiaddr.Multiaddr(f"/ip4/{rust.ip}/tcp/0")
            async with host.run(listen_addrs=[listen]):
                peer = ID.from_base58(rust_id)
                await host.connect(PeerInfo(peer, [multiaddr.Multiaddr(rust.p2p_addr)]))
                s = await host.new_stream(peer, [PX_ID])
                await s.write(b"\xff garbage a px asker never sends")
                buf = b""
                with trio.fail_after(10):
                    while True:
                        try:
                            chunk = await s.read(65536)
                        except StreamEOF:
                            break
                        if not chunk:
                            break
                        buf += chunk
                answer["doc"] = json.loads(buf)
                await trio.to_thread.run_sync(rejected_then_asked_again)

        trio.run(probe)
        assert isinstance(answer["doc"]["peers"], list), answer
        st = rust.status()
        assert st["rejected"]["px"] == 3, st["rejected"]
        reasons = [
            e["reason"]
            for e in rust.events()
            if e["type"] == "message_rejected" and e["protocol"] == "px"
        ]
        assert reasons == ["malformed"] * 3, reasons
        assert rust.alive()


@pytest.mark.parametrize("direct", ["refused", "silent"])
def test_rust_node_reaches_learnt_peer_through_its_circuit(
    rust_node: Path, tmp_path: Path, direct: str
) -> None:
    """(d) A learnt peer whose direct address does not answer is reached through its
    /p2p-circuit address. Loopback stand-in for a peer in another private network: the
    px answer (from a probe host) gives the target's real circuit address and, as its
    direct address, a loopback port that refuses connections ("refused": the direct dial
    fails) or accepts them and never says a word ("silent", as a dropped SYN behind NAT:
    the circuit is dialled after 3 s of no answer). The relay and the target answer no
    px, so nothing else tells the rust node a working direct address."""
    with NodeProcs(tmp_path) as procs, socket.socket() as silent:
        relay = procs.start("relay", p2p=NO_PX, relay=RELAY_SERVER)
        target = procs.start("target", p2p=NO_PX, relay=client(relay.full_addr), dcutr=NO_DCUTR)
        target_id = target.peer_id
        wait_for(
            target,
            lambda s: [r for r in s["reservations"] if r["addrs"]],
            "target's reservation",
            30,
        )
        circuit = f"{relay.full_addr}/p2p-circuit/p2p/{target_id}"
        if direct == "silent":
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # the kernel completes the handshake; nobody ever answers
            dead = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}"
        else:
            dead = f"/ip4/127.0.0.1/tcp/{free_port()}"
        rust = start_rust(
            procs,
            rust_node,
            "rust",
            p2p={"persistent_peers": [relay.full_addr]},
            dcutr=NO_DCUTR,
        )
        doc = {"peers": [{"peer": target_id, "addrs": [dead, circuit]}]}
        probe_id: list[str] = []

        async def serve(stream: Any) -> None:
            try:
                await stream.write(json.dumps(doc).encode())
            finally:
                await stream.close()

        def reached(node: NodeProc) -> Any:
            return wait_for(
                node,
                lambda s: conns(s, target_id, "relayed"),
                "relayed connection to the target",
                40,
            )

        async def probe() -> None:
            host = probe_host()
            probe_id.append(str(host.get_id()))
            host.set_stream_handler(PX_ID, serve)
            listen = multiaddr.Multiaddr(f"/ip4/{rust.ip}/tcp/0")
            async with host.run(listen_addrs=[listen]):
                peer = ID.from_base58(rust.peer_id)
                await host.connect(PeerInfo(peer, [multiaddr.Multiaddr(rust.p2p_addr)]))
                await trio.to_thread.run_sync(reached, rust)

        trio.run(probe)
        st = rust.status()
        k = known(st, target_id)
        assert k is not None and k["source"] == f"px:{probe_id[0]}", k
        assert dead in k["addrs"] and circuit in k["addrs"], k
        assert not conns(st, target_id, "direct"), "the dead direct address never answered"
        opened = [
            e for e in rust.events() if e["type"] == "connection_opened" and e["peer"] == target_id
        ]
        assert opened and opened[0]["kind"] == "relayed", opened
        wait_for(target, lambda s: conns(s, rust.peer_id, "relayed"), "target sees the circuit")
