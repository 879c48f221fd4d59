"""Circuit relay v2 hop server (mode server|both).

Our own hop handler on py-libp2p's protobufs instead of `CircuitV2Protocol`, because
upstream (0.8.1) keys active circuits by peer id (`_active_relays[peer_id]`): a second
dialer to the same target overwrites the first entry, and when either circuit ends its
cleanup closes the streams stored under that peer id, tearing down the other dialer's
circuit (tests/node/test_overrides.py shows it on upstream code). Here every
circuit has its own id, its own byte budget and deadline, and the limits come from
[relay] (max_reservations, max_circuits_per_peer, circuit_duration_s, circuit_bytes,
reservation_ttl_s) instead of upstream's default of 4 reservations.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.peer.envelope import Envelope, make_unsigned
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import (
    HopMessage,
    Limit,
    Reservation,
    StopMessage,
    Voucher,
)
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID as STOP_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode

from node import contract
from node.overrides.stream_on import open_stream_on
from node.relay.wire import WireError, read_msg, write_msg
from node.runtime import NodeRuntime

log = logging.getLogger("sentrynet.relay.server")

VOUCHER_DOMAIN = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE = bytes([0x03, 0x02])
CHUNK = 64 * 1024
STOP_TIMEOUT_S = 10.0


@dataclass
class Granted:
    peer: ID
    expires_at: int  # unix seconds (wire format)
    accepted_at: float  # monotonic
    # the muxed connection the (latest) RESERVE came on: STOP streams go there
    muxed: Any = None


@dataclass
class Circuit:
    id: int
    src: ID
    dst: ID
    opened_at: float
    deadline: float  # trio clock
    budget: int  # bytes left (both directions together)
    bytes: int = 0
    streams: tuple[INetStream, INetStream] | None = None
    close_reason: str = "closed"
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def record(self) -> contract.Circuit:
        return contract.Circuit(
            id=self.id,
            src=str(self.src),
            dst=str(self.dst),
            bytes=self.bytes,
            opened_at=round(self.opened_at, 4),
        )

    def to_json(self) -> dict[str, Any]:
        return self.record().to_json()


def is_circuit(addr: multiaddr.Multiaddr) -> bool:
    return "/p2p-circuit" in str(addr)


class RelayServer:
    """The hop protocol: RESERVE and CONNECT with the configured limits."""

    name = "relay_server"

    def __init__(self) -> None:
        self.rt: NodeRuntime | None = None
        self.granted: dict[ID, Granted] = {}
        self.circuits: dict[int, Circuit] = {}
        self._ids = itertools.count(1)

    # -- Service --
    async def run(self, rt: NodeRuntime) -> None:
        self.rt = rt
        rt.host.set_stream_handler(HOP_ID, self._handle_hop)
        rt.connections.subscribe(self._on_conn)
        log.info(
            "relay server on: max_reservations=%d max_circuits_per_peer=%d "
            "circuit_duration_s=%d circuit_bytes=%d",
            rt.config.relay.max_reservations,
            rt.config.relay.max_circuits_per_peer,
            rt.config.relay.circuit_duration_s,
            rt.config.relay.circuit_bytes,
        )
        while True:
            self._expire()
            await trio.sleep(1.0)

    def status(self) -> dict[str, Any]:
        granted = tuple(
            contract.Grant(
                peer=str(g.peer), expires_at=g.expires_at, accepted_at=round(g.accepted_at, 4)
            )
            for g in list(self.granted.values())
        )
        circuits = tuple(c.record() for c in list(self.circuits.values()))
        return contract.RelayServer(granted=granted, circuits=circuits).to_json()

    def peers_served(self) -> set[ID]:
        """Peers holding a reservation on us or a circuit through us (RelayServing)."""
        out = set(self.granted)
        for c in list(self.circuits.values()):
            out |= {c.src, c.dst}
        return out

    def circuits_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in list(self.circuits.values())]

    # -- internals --
    def _on_conn(self, event: str, info: Any) -> None:
        """A client whose last direct connection closed loses its reservation (as in
        go-libp2p): the slot counts against max_reservations only while it can be used."""
        if event != "closed" or info.peer not in self.granted or self.rt is None:
            return
        if any(c.kind == "direct" for c in self.rt.connections.for_peer(info.peer)):
            return
        del self.granted[info.peer]
        self.rt.metrics.reservations_active.dec()
        log.info("reservation of %s dropped: disconnected", info.peer)

    def _expire(self) -> None:
        now = time.time()
        for peer, g in list(self.granted.items()):
            if g.expires_at <= now:
                del self.granted[peer]
                assert self.rt is not None
                self.rt.metrics.reservations_active.dec()
                log.info("reservation of %s expired", peer)

    def _relay_addrs(self) -> list[multiaddr.Multiaddr]:
        """Our reachable addresses (with /p2p/<relay>), never circuit ones."""
        assert self.rt is not None
        return [a for a in self.rt.host.get_addrs() if not is_circuit(a)]

    def _limit(self) -> Limit:
        assert self.rt is not None
        r = self.rt.config.relay
        return Limit(duration=r.circuit_duration_s, data=r.circuit_bytes)

    def _voucher(self, peer: ID, expires: int) -> bytes:
        assert self.rt is not None
        host = self.rt.host
        payload = Voucher(
            relay=host.get_id().to_bytes(), peer=peer.to_bytes(), expiration=expires
        ).SerializeToString()
        key = host.get_private_key()
        sig = key.sign(make_unsigned(VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload))
        env = Envelope(
            public_key=key.get_public_key(),
            payload_type=VOUCHER_PAYLOAD_TYPE,
            raw_payload=payload,
            signature=sig,
        )
        return env.marshal_envelope()

    async def _status(self, stream: INetStream, code: StatusCode, **extra: Any) -> None:
        msg = HopMessage(type=HopMessage.STATUS, status=int(code), **extra)  # type: ignore[arg-type]
        try:
            await write_msg(stream, msg)
        except Exception as exc:
            log.debug("could not send hop status %s: %s", code.name, exc)

    async def _reject(self, stream: INetStream, reason: str, code: StatusCode | None) -> None:
        assert self.rt is not None
        self.rt.reject("hop", reason)
        if code is not None:
            await self._status(stream, code)
        await _close(stream)

    async def _handle_hop(self, stream: INetStream) -> None:
        assert self.rt is not None
        src: ID = stream.muxed_conn.peer_id
        try:
            msg = await read_msg(stream, HopMessage)
        except WireError as exc:
            log.info("hop from %s rejected: %s", src, exc)
            code = StatusCode.MALFORMED_MESSAGE if exc.reason != "timeout" else None
            await self._reject(stream, exc.reason, code)
            return
        if not msg.HasField("type"):
            await self._reject(stream, "malformed", StatusCode.MALFORMED_MESSAGE)
            return
        if msg.type == HopMessage.RESERVE:
            await self._reserve(stream, src)
        elif msg.type == HopMessage.CONNECT:
            await self._connect(stream, src, msg)
        else:
            await self._reject(stream, "unexpected", StatusCode.UNEXPECTED_MESSAGE)

    async def _reserve(self, stream: INetStream, src: ID) -> None:
        assert self.rt is not None
        rt, r = self.rt, self.rt.config.relay
        if rt.connections.kind_of_stream(stream) == "relayed":
            # spec: a reservation over a relayed connection must be refused
            rt.metrics.reservations_total.labels(outcome="denied").inc()
            rt.events.emit("reservation_refused", peer=str(src), reason="PERMISSION_DENIED")
            await self._status(stream, StatusCode.PERMISSION_DENIED)
            await _close(stream)
            return
        self._expire()
        renewing = src in self.granted
        if not renewing and len(self.granted) >= r.max_reservations:
            rt.metrics.reservations_total.labels(outcome="denied").inc()
            log.info(
                "reservation of %s denied: %d/%d held", src, len(self.granted), r.max_reservations
            )
            rt.events.emit(
                "reservation_refused",
                peer=str(src),
                reason="RESOURCE_LIMIT_EXCEEDED",
            )
            await self._status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED)
            await _close(stream)
            return
        expires = int(time.time()) + r.reservation_ttl_s
        addrs = self._relay_addrs()
        resv = Reservation(
            expire=expires,
            addrs=[a.to_bytes() for a in addrs],
            voucher=self._voucher(src, expires),
        )
        await self._status(stream, StatusCode.OK, reservation=resv, limit=self._limit())
        await _close(stream)
        if not renewing:
            rt.metrics.reservations_active.inc()
        self.granted[src] = Granted(src, expires, time.monotonic(), stream.muxed_conn)
        rt.metrics.reservations_total.labels(outcome="accepted").inc()
        rt.events.emit(
            "reservation_granted",
            peer=str(src),
            addrs=[str(a) for a in addrs],
            expires_at=expires,
            renewed=renewing,
        )

    def _count(self, peer: ID) -> int:
        return sum(1 for c in self.circuits.values() if peer in (c.src, c.dst))

    async def _connect(self, stream: INetStream, src: ID, msg: HopMessage) -> None:
        assert self.rt is not None
        rt, r = self.rt, self.rt.config.relay
        if not msg.HasField("peer") or not msg.peer.id:
            await self._reject(stream, "malformed", StatusCode.MALFORMED_MESSAGE)
            return
        try:
            dst = ID(msg.peer.id)
            dst.to_base58()
        except Exception:
            await self._reject(stream, "malformed", StatusCode.MALFORMED_MESSAGE)
            return
        self._expire()
        deny: tuple[StatusCode, str] | None = None
        if rt.connections.kind_of_stream(stream) == "relayed":
            deny = (StatusCode.PERMISSION_DENIED, "relayed source")  # no circuits of circuits
        elif dst not in self.granted:
            deny = (StatusCode.NO_RESERVATION, "NO_RESERVATION")
        elif self._count(dst) >= r.max_circuits_per_peer or self._count(src) >= (
            r.max_circuits_per_peer
        ):
            deny = (StatusCode.RESOURCE_LIMIT_EXCEEDED, "RESOURCE_LIMIT_EXCEEDED")
        if deny is not None:
            rt.metrics.circuits_total.labels(outcome="denied").inc()
            log.info("circuit %s -> %s denied: %s", src, dst, deny[1])
            await self._status(stream, deny[0])
            await _close(stream)
            return

        cid = next(self._ids)
        circuit = Circuit(
            id=cid,
            src=src,
            dst=dst,
            opened_at=time.monotonic(),
            deadline=trio.current_time() + r.circuit_duration_s,
            budget=r.circuit_bytes,
        )
        # reserve the slot before awaiting so concurrent CONNECTs see the count
        self.circuits[cid] = circuit
        dst_stream: INetStream | None = None
        try:
            dst_stream = await self._open_stop(src, dst)
        except _StopFailed as exc:
            del self.circuits[cid]
            rt.metrics.circuits_total.labels(outcome="failed").inc()
            log.info("circuit %s -> %s failed: %s", src, dst, exc)
            await self._status(stream, StatusCode.CONNECTION_FAILED)
            await _close(stream)
            return
        await self._status(stream, StatusCode.OK, limit=self._limit())
        circuit.streams = (stream, dst_stream)
        rt.metrics.circuits_total.labels(outcome="opened").inc()
        rt.metrics.circuits_active.inc()
        rt.events.emit("circuit_opened", src=str(src), dst=str(dst), side="relay", id=cid)
        try:
            await self._pipe(circuit)
        finally:
            self.circuits.pop(cid, None)
            rt.metrics.circuits_active.dec()
            if circuit.close_reason in ("data_limit", "duration_limit"):
                rt.metrics.circuits_total.labels(outcome="limit").inc()
            rt.events.emit(
                "circuit_closed",
                src=str(src),
                dst=str(dst),
                side="relay",
                reason=circuit.close_reason,
                bytes=circuit.bytes,
                id=cid,
            )

    def _stop_conn(self, dst: ID) -> Any:
        """The connection to open dst's STOP stream on: the one its latest RESERVE came on,
        else its newest direct one. Not host.new_stream's pick (upstream takes the first
        connection in the swarm's list, the oldest): after the target's NAT changed its
        address, the old connection is dead while this side cannot know it yet, and every
        circuit to the target would time out on it until liveness closes it."""
        assert self.rt is not None
        direct = [c for c in self.rt.connections.for_peer(dst) if c.kind == "direct"]
        granted = self.granted.get(dst)
        for c in direct:
            if granted is not None and getattr(c.conn, "muxed_conn", None) is granted.muxed:
                return c.conn
        return max(direct, key=lambda c: c.seq).conn if direct else None

    async def _open_stop(self, src: ID, dst: ID) -> INetStream:
        assert self.rt is not None
        rt = self.rt
        try:
            with trio.fail_after(STOP_TIMEOUT_S):
                conn = self._stop_conn(dst)
                if conn is None:
                    s = await rt.host.new_stream(dst, [STOP_ID])
                else:
                    s = await open_stream_on(rt.host, conn, [STOP_ID], STOP_TIMEOUT_S)
        except Exception as exc:
            raise _StopFailed(f"cannot open stop stream: {exc!r}") from exc
        try:
            await write_msg(
                s,
                StopMessage(
                    type=StopMessage.CONNECT, peer=PbPeer(id=src.to_bytes()), limit=self._limit()
                ),
            )
            resp = await read_msg(s, StopMessage, timeout=STOP_TIMEOUT_S)
        except WireError as exc:
            rt.reject("stop", exc.reason)
            await _reset(s)
            raise _StopFailed(f"bad stop reply: {exc}") from exc
        except Exception as exc:
            await _reset(s)
            raise _StopFailed(f"stop exchange failed: {exc!r}") from exc
        if resp.type != StopMessage.STATUS:
            rt.reject("stop", "unexpected")
            await _reset(s)
            raise _StopFailed("stop reply is not a STATUS")
        if resp.status != StatusCode.OK:
            await _reset(s)
            raise _StopFailed(f"target answered {StatusCode(resp.status).name}")
        return s

    async def _pipe(self, c: Circuit) -> None:
        """Copy both ways until both sides close, the data budget or the deadline runs out."""
        assert c.streams is not None and self.rt is not None
        a, b = c.streams
        metrics = self.rt.metrics
        done = [False, False]

        async def copy(i: int, frm: INetStream, to: INetStream) -> None:
            while True:
                try:
                    data = await frm.read(CHUNK)
                except StreamEOF:
                    data = b""
                except (StreamReset, StreamError):
                    c.close_reason = "reset"
                    c.scope.cancel()
                    return
                if not data:
                    done[i] = True
                    with contextlib.suppress(Exception):
                        await to.close()  # yamux close == half-close (FIN)
                    if all(done):
                        c.scope.cancel()
                    return
                if len(data) > c.budget:
                    c.close_reason = "data_limit"
                    c.scope.cancel()
                    return
                c.budget -= len(data)
                c.bytes += len(data)
                metrics.relayed_bytes_total.inc(len(data))
                try:
                    await to.write(data)
                except Exception:
                    c.close_reason = "reset"
                    c.scope.cancel()
                    return

        c.scope.deadline = c.deadline
        with c.scope:
            async with trio.open_nursery() as n:
                n.start_soon(copy, 0, a, b)
                n.start_soon(copy, 1, b, a)
        if c.scope.cancelled_caught and c.close_reason == "closed" and not all(done):
            c.close_reason = "duration_limit"
        if c.close_reason == "closed":
            for s in (a, b):
                await _close(s)
        else:
            for s in (a, b):
                await _reset(s)


class _StopFailed(Exception):
    pass


async def _close(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()
