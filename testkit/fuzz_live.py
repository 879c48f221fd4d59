"""Send the fuzz cases (testkit/fuzz.py) to live node processes on loopback and check them.

The target: a relay node R (hop server) and the node under test N: validator of a one-node
chain (it commits on its own, serves sync and validates the chain topic), relay mode both
(hop server, and a client holding a reservation on R), DCUtR on. Every batch goes to N,
over real sockets, one fresh stream per case; the relayed DCUtR batch reaches N through a
circuit via R. Nothing restarts between cases or batches.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.connection_types import ConnectionType
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID
from libp2p.tools.anyio_service import background_trio_service

from node.chain.block import ValidatorSet
from node.chain.service import topic_for
from node.chain.sync import SYNC_PROTOCOL, FrameReader
from node.chain.sync import frame as sync_frame
from node.dcutr.wire import PROTOCOL_ID as DCUTR_ID
from node.relay.wire import encode, read_msg
from testkit import fuzz
from testkit.chain import chain_section, height, make_key
from testkit.procs import NodeProc, NodeProcs, wait_for
from testkit.sync_probe import probe_host

PROTOCOLS = ("hop", "stop", "dcutr", "dcutr_relayed", "sync", "gossipsub_rpc", "gossip", "identify")

STREAM_TIMEOUT_S = 15.0
RPC_LINGER_S = 0.05  # a pubsub stream is read to its end and left open by upstream


class Target:
    """R and N started, N's reservation on R held, N committing."""

    def __init__(self, procs: NodeProcs) -> None:
        self.procs = procs
        self.relay = procs.start(
            "relay",
            node={"role": "sentry"},
            relay={"enabled": True, "mode": "server"},
            p2p={"discovery": False},
        )
        cfg = procs.write_config("n")
        self.node_id = make_key(cfg.config["node"]["key_file"])
        ids = {"n": self.node_id}
        self.vset = ValidatorSet(list(ids.items()))
        self.topic = topic_for(self.vset)
        self.node = procs.start(
            "n",
            node={"role": "validator"},
            chain=chain_section(ids, 0.5),
            relay={
                "enabled": True,
                "mode": "both",
                "relay_servers": [f"{self.relay.p2p_addr}/p2p/{self.relay.peer_id}"],
            },
            p2p={"discovery": False},
        )
        wait_for(self.node, lambda s: s["reservations"], "N's reservation on R", 30)
        wait_for(self.node, lambda s: height(s) >= 2, "N commits", 60)


def handler_errors_now(node: NodeProc) -> int:
    """Inbound streams whose handler raised so far (/status handler_errors, all protocols)."""
    return sum(int(n) for n in node.status().get("handler_errors", {}).values())


def rejected_now(node: NodeProc, counter: str) -> tuple[int, int]:
    """(/status rejected[counter], sum of sentrynet_messages_rejected_total{protocol})."""
    st = node.status()
    total = 0.0
    pat = re.compile(r"^sentrynet_messages_rejected_total\{(.*)\} (\S+)$")
    for line in node.metrics().splitlines():
        m = pat.match(line)
        if m and f'protocol="{counter}"' in m.group(1):
            total += float(m.group(2))
    return int(st["rejected"].get(counter, 0)), int(total)


@asynccontextmanager
async def running(host: IHost, listen: bool = True) -> AsyncIterator[IHost]:
    addrs = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")] if listen else []
    async with host.run(listen_addrs=addrs):
        yield host


async def connect(host: IHost, node: NodeProc) -> ID:
    peer = ID.from_base58(node.peer_id)
    with trio.fail_after(15):
        await host.connect(PeerInfo(peer, [multiaddr.Multiaddr(node.p2p_addr)]))
    return peer


async def send(
    host: IHost, peer: ID, protocol: str, payload: bytes, linger: float | None = None
) -> bool:
    """Fresh stream, the bytes, half-close, read until the node closes or resets it.
    False when the stream could not be opened or written, or the node never ended it.
    With `linger`, stop reading after that long and reset the stream (upstream pubsub
    leaves a stream it read to the end open: that is not a failure)."""
    with trio.move_on_after(linger or STREAM_TIMEOUT_S) as scope:
        try:
            s = await host.new_stream(peer, [protocol])  # type: ignore[list-item]
        except Exception:
            return False
        try:
            if payload:
                await s.write(payload)
            await s.close()
        except Exception:
            with contextlib.suppress(Exception):
                await s.reset()
            return True  # the node reset it while we wrote: an answer
        while True:
            try:
                chunk = await s.read(65536)
            except Exception:
                break
            if not chunk:
                break
    if scope.cancelled_caught:
        with contextlib.suppress(Exception):
            await s.reset()
        return linger is not None
    return True


async def circuit_to(host: IHost, relay: NodeProc, target: str) -> ID:
    """Connect to `target` (peer id) through `relay`'s hop CONNECT, as a relayed connection."""
    relay_id = await connect(host, relay)
    dst = ID.from_base58(target)
    with trio.fail_after(15):
        s = await host.new_stream(relay_id, [HOP_ID])
        await s.write(encode(HopMessage(type=HopMessage.CONNECT, peer=PbPeer(id=dst.to_bytes()))))
        resp = await read_msg(s, HopMessage)
    if resp.status != 100:
        raise RuntimeError(f"relay answered {resp.status} to CONNECT")
    addr = multiaddr.Multiaddr(f"{relay.p2p_addr}/p2p/{relay_id}/p2p-circuit/p2p/{dst}")
    raw = RawConnection(s, True, connection_type=ConnectionType.RELAYED, addresses=[addr])
    with trio.fail_after(15):
        await host.upgrade_outbound_connection(raw, dst)
    return dst


# ------------------------------------------------------------------- after-checks


async def reservation_ok(node: NodeProc) -> bool:
    """A fresh client connects and RESERVEs: STATUS OK with a reservation."""
    try:
        async with running(probe_host()) as host:
            peer = await connect(host, node)
            with trio.fail_after(15):
                s = await host.new_stream(peer, [HOP_ID])
                await s.write(encode(HopMessage(type=HopMessage.RESERVE)))
                resp = await read_msg(s, HopMessage)
            return resp.status == 100 and resp.HasField("reservation")
    except Exception:
        return False


async def sync_ok(node: NodeProc) -> bool:
    """A normal status request on a fresh stream is answered with the node's height."""
    try:
        async with running(probe_host()) as host:
            peer = await connect(host, node)
            with trio.fail_after(15):
                s = await host.new_stream(peer, [SYNC_PROTOCOL])  # type: ignore[list-item]
                await s.write(sync_frame({"type": "status"}))
                body = await FrameReader(s).read_frame(1 << 20)
            doc = json.loads(body or b"{}")
            return doc.get("type") == "status" and int(doc.get("height", -1)) >= 1
    except Exception:
        return False


async def identify_ok(node: NodeProc) -> bool:
    """The node still answers identify with its protocols."""
    try:
        async with running(probe_host()) as host:
            peer = await connect(host, node)
            with trio.fail_after(15):
                s = await host.new_stream(peer, [IDENTIFY_ID])
                data = b""
                while True:
                    try:
                        chunk = await s.read(65536)
                    except Exception:
                        break
                    if not chunk:
                        break
                    data += chunk
            got = fuzz.read_uvarint(data, 0, 10)
            if got is None:
                return False
            msg = Identify()
            msg.ParseFromString(data[got[1] : got[1] + got[0]])
            return HOP_ID in msg.protocols and SYNC_PROTOCOL in msg.protocols
    except Exception:
        return False


@asynccontextmanager
async def gossip_probe(node: NodeProc, topic: str) -> AsyncIterator[tuple[Pubsub, Any]]:
    """A gossipsub peer subscribed to `topic` and meshed with the node."""
    host = probe_host()
    gs = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        degree=2,
        degree_low=1,
        degree_high=4,
        heartbeat_interval=1,
    )
    # upstream's router drops what a peer (itself included) publishes beyond 10 messages
    # a second per topic (spam protection) before it leaves: the probe must not throttle
    gs.max_messages_per_topic_per_second = 1e9
    ps = Pubsub(host, gs)
    async with running(host), background_trio_service(ps), background_trio_service(gs):
        await ps.wait_until_ready()
        sub = await ps.subscribe(topic)
        peer = await connect(host, node)
        with trio.fail_after(20):
            while peer not in ps.peer_topics.get(topic, set()):
                await trio.sleep(0.05)

        async def drain() -> None:  # the node's own gossip: read and dropped
            while True:
                await sub.get()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            yield ps, sub
            nursery.cancel_scope.cancel()


async def gossip_ok(node: NodeProc, topic: str) -> bool:
    """A fresh gossipsub peer receives the node's consensus messages on the chain topic."""
    try:
        async with gossip_probe(node, topic) as (ps, _sub):
            heard = trio.Event()

            def hear(_forwarder: Any, _msg: Any) -> bool:
                heard.set()
                return True

            ps.set_topic_validator(topic, hear, False)
            with trio.fail_after(30):
                await heard.wait()
            return True
    except Exception:
        return False


# ------------------------------------------------------------------------ batches


def _alive(node: NodeProc) -> bool:
    if not node.alive():
        return False
    try:
        node.status()
        return True
    except OSError:
        return False


async def _checkpoint(
    res: fuzz.BatchResult,
    node: NodeProc,
    base: tuple[int, int],
    expected: int,
    chunk: list[fuzz.Case],
    wait_s: float,
) -> tuple[int, int]:
    """Wait (up to wait_s) for the counter to reach expected; record a mismatch."""
    if res.counter is None:
        return base
    if res.upstream_drops:  # what reached the validator is counted; not all of it does
        wait_s = min(wait_s, 2.0)
    deadline = time.monotonic() + wait_s
    now = await trio.to_thread.run_sync(rejected_now, node, res.counter)
    while now[0] - base[0] < expected and time.monotonic() < deadline:
        await trio.sleep(0.1)
        now = await trio.to_thread.run_sync(rejected_now, node, res.counter)
    got = now[0] - base[0]
    if (got != expected and not (res.upstream_drops and got <= expected)) or now[1] - base[
        1
    ] != got:
        res.mismatches.append(
            {
                "expected": expected,
                "counted": now[0] - base[0],
                "metric_counted": now[1] - base[1],
                "cases": [
                    {"kind": c.kind, "expect": c.expect, "payload": c.payload[:256].hex()}
                    for c in chunk[:8]
                ],
            }
        )
    return now


async def run_batch(
    target: Target,
    protocol: str,
    cases: list[fuzz.Case],
    check_every: int,
    say: Callable[[str], None] = lambda _: None,
) -> fuzz.BatchResult:
    node = target.node
    counter = {
        "hop": "hop",
        "stop": "stop",
        "dcutr": "dcutr",
        "dcutr_relayed": "dcutr",
        "sync": "sync",
        "gossip": "consensus",
        "gossipsub_rpc": None,
        "identify": None,
    }[protocol]
    res = fuzz.BatchResult(protocol=protocol, counter=counter, upstream_drops=protocol == "gossip")
    for c in cases:
        res.kinds[c.kind] = res.kinds.get(c.kind, 0) + 1
    t0 = time.monotonic()
    start = await trio.to_thread.run_sync(rejected_now, node, counter or "hop")
    errors_before = await trio.to_thread.run_sync(handler_errors_now, node)
    base = start
    chunk: list[fuzz.Case] = []
    chunk_expect = 0

    async def step(i: int) -> bool:
        nonlocal base, chunk, chunk_expect
        if (i + 1) % check_every and i + 1 != len(cases):
            return True
        if not node.alive():
            res.crashes += 1
            return False
        wait = 60.0 if protocol == "gossip" else 10.0
        base = await _checkpoint(res, node, base, chunk_expect, chunk, wait)
        chunk, chunk_expect = [], 0
        if i % 1000 == 999:
            say(f"  {protocol}: {i + 1}/{len(cases)}")
        return True

    async def each(sender: Callable[[bytes], Any]) -> None:
        nonlocal chunk_expect
        for i, case in enumerate(cases):
            ok = await sender(case.payload)
            res.sent += 1
            res.expected_rejections += case.expect
            chunk.append(case)
            chunk_expect += case.expect
            if not ok:
                res.stream_errors += 1
                if not node.alive():
                    res.crashes += 1
                    return
            if not await step(i):
                return

    proto_id = {
        "hop": HOP_ID,
        "stop": STOP_ID,
        "dcutr": DCUTR_ID,
        "dcutr_relayed": DCUTR_ID,
        "sync": SYNC_PROTOCOL,
        "gossipsub_rpc": PROTOCOL_ID_V12,
        "identify": ID_PUSH,
    }.get(protocol)
    if protocol == "gossip":
        async with gossip_probe(node, target.topic) as (ps, _sub):

            async def publish(data: bytes) -> bool:
                await ps.publish(target.topic, data)
                return True

            await each(publish)
    elif protocol == "dcutr_relayed":
        async with running(probe_host(), listen=False) as host:
            peer = await circuit_to(host, target.relay, target.node_id)
            await each(lambda p: send(host, peer, str(proto_id), p))
    else:
        async with running(probe_host()) as host:
            peer = await connect(host, node)

            async def send_or_reconnect(payload: bytes) -> bool:
                ok = await send(host, peer, str(proto_id), payload, linger)
                if not ok and node.alive() and not host.get_network().get_connections(peer):
                    # the connection went (upstream closes it on some inputs): a new one
                    with contextlib.suppress(Exception):
                        await connect(host, node)
                        ok = await send(host, peer, str(proto_id), payload, linger)  # once more
                return ok

            linger = RPC_LINGER_S if protocol == "gossipsub_rpc" else None
            await each(send_or_reconnect)
    res.duration_s = time.monotonic() - t0
    if counter is not None:
        end = await trio.to_thread.run_sync(rejected_now, node, counter)
        res.counted = end[0] - start[0]
        res.metric_counted = end[1] - start[1]
    res.node_alive = node.alive()
    res.status_ok = _alive(node)
    if res.status_ok:
        errors_after = await trio.to_thread.run_sync(handler_errors_now, node)
        res.handler_errors = errors_after - errors_before
    if res.node_alive:
        res.reservation_after = await reservation_ok(node)
        if protocol == "sync":
            res.sync_after = await sync_ok(node)
        if protocol in ("gossip", "gossipsub_rpc"):
            res.works_after = await gossip_ok(node, target.topic)
        if protocol == "identify":
            res.works_after = await identify_ok(node)
    else:
        res.crashes = max(res.crashes, 1)
    return res


STRATEGIES = {
    "hop": fuzz.hop_cases,
    "stop": fuzz.stop_cases,
    "dcutr": fuzz.dcutr_direct_cases,
    "dcutr_relayed": fuzz.dcutr_relayed_cases,
    "sync": fuzz.sync_cases,
    "gossipsub_rpc": fuzz.rpc_cases,
    "gossip": fuzz.gossip_cases,
    "identify": fuzz.identify_cases,
}


def run_all(
    tmp: Path,
    counts: dict[str, int],
    check_every: int,
    say: Callable[[str], None] = lambda _: None,
) -> list[fuzz.BatchResult]:
    """Generate and send every protocol's batch to one target; the results in order."""
    out: list[fuzz.BatchResult] = []
    with NodeProcs(tmp) as procs:
        target = Target(procs)
        for protocol, n in counts.items():
            t0 = time.monotonic()
            cases = fuzz.generate(STRATEGIES[protocol](), n)
            say(f"{protocol}: {len(cases)} cases generated in {time.monotonic() - t0:.1f}s")
            res = trio.run(run_batch, target, protocol, cases, check_every, say)
            say(f"{protocol}: {json.dumps(res.to_json())[:400]}")
            out.append(res)
            if not res.node_alive:
                say(f"node died; log tail:\n{target.node.log_tail(60)}")
                break
    return out


__all__ = ["PROTOCOLS", "STRATEGIES", "Target", "run_all", "run_batch"]
