"""Relay limits and bad input on real node processes over loopback.

Limits: reservations over max_reservations get RESOURCE_LIMIT_EXCEEDED, a peer's circuits
over max_circuits_per_peer too; a circuit past circuit_bytes or circuit_duration_s is
closed. Bad input: malformed, truncated, oversized and unexpected hop and stop frames
are answered with MALFORMED_MESSAGE / UNEXPECTED_MESSAGE where a status can be sent,
counted in /metrics and /status, and the node keeps serving valid requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from probe import (
    HOP_ID,
    STOP_ID,
    HopMessage,
    StopMessage,
    circuit,
    connect,
    decode_hop,
    decode_stop,
    exchange,
    ping,
    probe_host,
    reserve,
)

from node.relay.wire import encode
from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.loopback

OK, RESOURCE_LIMIT_EXCEEDED, PERMISSION_DENIED, MALFORMED, UNEXPECTED = 100, 201, 202, 400, 401


def relay_server(procs: NodeProcs, **relay: Any) -> NodeProc:
    return procs.start("relay", relay={"enabled": True, "mode": "server", **relay})


def relay_client(procs: NodeProcs, name: str, relay: NodeProc) -> NodeProc:
    return procs.start(
        name,
        relay={"enabled": True, "mode": "client", "relay_servers": [relay.p2p_addr]},
        p2p={"discovery": False},
        dcutr={"enabled": False},  # probes do not speak DCUtR; keep circuit bytes exact
    )


def test_reservations_over_the_cap_are_refused(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs, max_reservations=1)
        first = relay_client(procs, "first", relay)
        wait_for(first, lambda s: s["reservations"], "first reservation", 15)
        second = relay_client(procs, "second", relay)
        denied = wait_until(
            lambda: [e for e in second.events() if e["type"] == "reservation_denied"],
            "reservation_denied on the second client",
            15,
        )
        assert denied[0]["reason"] == "RESOURCE_LIMIT_EXCEEDED"
        assert second.status()["reservations"] == []
        assert relay.metric("sentrynet_reservations_total", outcome="denied") >= 1

        async def probe() -> int:
            async with probe_host() as h:
                rid = await connect(h, f"{relay.p2p_addr}/p2p/{relay.peer_id}")
                resp = await reserve(h, rid)
                assert resp is not None
                return int(resp.status)

        assert trio.run(probe) == RESOURCE_LIMIT_EXCEEDED
        # the holder still holds its reservation
        assert first.status()["reservations"]
        # when the holder goes away its slot frees and the refused client gets it
        first.stop()
        wait_for(second, lambda s: s["reservations"], "reservation once the slot freed", 30)
        assert relay.metric("sentrynet_reservations_active") == 1


def test_circuits_per_peer_and_data_and_duration_limits(tmp_path: Path) -> None:
    """Two relays with different limits; the target holds a reservation on both."""
    with NodeProcs(tmp_path) as procs:
        by_data = procs.start(
            "relay_data",
            relay={
                "enabled": True,
                "mode": "server",
                "max_circuits_per_peer": 1,
                "circuit_bytes": 16384,
            },
        )
        by_time = procs.start(
            "relay_time", relay={"enabled": True, "mode": "server", "circuit_duration_s": 4}
        )
        target = procs.start(
            "target",
            relay={
                "enabled": True,
                "mode": "client",
                "relay_servers": [by_data.p2p_addr, by_time.p2p_addr],
            },
            p2p={"discovery": False},
            dcutr={"enabled": False},
        )
        wait_for(target, lambda s: len(s["reservations"]) == 2, "reservations on both", 15)
        tid = ID.from_base58(target.peer_id)
        data_addr = f"{by_data.p2p_addr}/p2p/{by_data.peer_id}"
        time_addr = f"{by_time.p2p_addr}/p2p/{by_time.peer_id}"

        async def per_peer() -> None:
            async with probe_host() as h1, probe_host() as h2:
                r1 = await connect(h1, data_addr)
                r2 = await connect(h2, data_addr)
                c1, code1 = await circuit(h1, r1, tid)
                assert c1 is not None, code1
                _, code2 = await circuit(h2, r2, tid)
                assert code2 == RESOURCE_LIMIT_EXCEEDED
                await c1.close()

        trio.run(per_peer)
        assert by_data.metric("sentrynet_circuits_total", outcome="denied") == 1
        wait_for(by_data, lambda s: not s["circuits"], "first circuit gone")

        async def data_limit() -> int:
            async with probe_host() as h:
                rid = await connect(h, data_addr)
                c, code = await circuit(h, rid, tid)
                assert c is not None, code
                rounds = 0
                with pytest.raises(Exception):  # noqa: B017 (any stream error ends it)
                    while rounds < 5000:
                        await ping(c, rounds=10)
                        rounds += 10
                return rounds

        rounds = trio.run(data_limit)
        assert rounds < 5000
        closed = wait_until(
            lambda: [
                e
                for e in by_data.events()
                if e["type"] == "circuit_closed" and e["reason"] == "data_limit"
            ],
            "circuit closed at its data limit",
        )
        assert 8000 < closed[0]["bytes"] <= 16384
        assert by_data.metric("sentrynet_circuits_total", outcome="limit") == 1

        async def duration_limit() -> None:
            async with probe_host() as h:
                rid = await connect(h, time_addr)
                c, code = await circuit(h, rid, tid)
                assert c is not None, code
                await ping(c, rounds=1)
                await trio.to_thread.run_sync(
                    lambda: wait_until(
                        lambda: [
                            e
                            for e in by_time.events()
                            if e["type"] == "circuit_closed" and e["reason"] == "duration_limit"
                        ],
                        "circuit closed at its duration limit",
                        15,
                    )
                )
                with pytest.raises(Exception):  # noqa: B017
                    await ping(c, rounds=1)

        trio.run(duration_limit)
        assert by_time.metric("sentrynet_circuits_total", outcome="limit") == 1
        evs = by_time.events()
        opened = next(e["t"] for e in evs if e["type"] == "circuit_opened")
        ended = next(e["t"] for e in evs if e["type"] == "circuit_closed")
        assert 3.9 <= ended - opened < 15, ended - opened  # closed at 4 s, not before
        # the target kept serving through all of it
        assert len(target.status()["reservations"]) == 2


OK_STATUS: Any = 100  # protobuf enum value (typed as a NewType in the stubs)

HOP_BAD: list[tuple[str, bytes, int | None]] = [
    # (reason, frame, status the relay answers with)
    ("malformed", b"\x03\xff\xff\xff", MALFORMED),  # body is not a protobuf
    ("malformed", b"\x00", MALFORMED),  # empty message: no type
    ("malformed", b"\xff" * 10 + b"\x01", MALFORMED),  # length prefix is not a uvarint
    ("truncated", b"\x40" + b"\x08\x00" * 4, MALFORMED),  # claims 64 bytes, sends 8
    ("oversized", b"\x80\x80\x40" + b"\x00" * 1000, MALFORMED),  # claims 1 MiB
    ("unexpected", encode(HopMessage(type=HopMessage.STATUS, status=OK_STATUS)), UNEXPECTED),
    ("malformed", encode(HopMessage(type=HopMessage.CONNECT)), MALFORMED),  # no peer
]


def test_malformed_hop_and_stop_rejected_node_keeps_serving(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = relay_server(procs)
        client = relay_client(procs, "client", relay)
        wait_for(client, lambda s: s["reservations"], "client reservation", 15)

        async def poke() -> tuple[list[int | None], HopMessage | None, list[int | None]]:
            async with probe_host() as h:
                rid = await connect(h, f"{relay.p2p_addr}/p2p/{relay.peer_id}")
                hop_codes = []
                for _, frame, _ in HOP_BAD:
                    resp = decode_hop(await exchange(h, rid, HOP_ID, frame))
                    hop_codes.append(int(resp.status) if resp else None)
                valid = await reserve(h, rid)
                cid = await connect(h, f"{client.p2p_addr}/p2p/{client.peer_id}")
                stop_codes = []
                for frame in (
                    b"\x05\xff\xff\xff\xff\xff",
                    encode(StopMessage(type=StopMessage.STATUS, status=OK_STATUS)),
                    b"\x30\x08\x00",  # claims 48 bytes, sends 2
                ):
                    resp_s = decode_stop(await exchange(h, cid, STOP_ID, frame))
                    stop_codes.append(int(resp_s.status) if resp_s else None)
                return hop_codes, valid, stop_codes

        hop_codes, valid, stop_codes = trio.run(poke)
        assert hop_codes == [code for _, _, code in HOP_BAD]
        assert valid is not None and valid.status == OK and valid.reservation.addrs
        assert stop_codes == [MALFORMED, UNEXPECTED, MALFORMED]
        st = relay.status()
        assert st["rejected"]["hop"] == len(HOP_BAD)
        for reason in {r for r, _, _ in HOP_BAD}:
            want = sum(1 for r, _, _ in HOP_BAD if r == reason)
            got = relay.metric("sentrynet_messages_rejected_total", protocol="hop", reason=reason)
            assert got == want, (reason, got, want)
        assert client.status()["rejected"]["stop"] == 3
        for reason in ("malformed", "unexpected", "truncated"):
            assert (
                client.metric("sentrynet_messages_rejected_total", protocol="stop", reason=reason)
                == 1
            ), reason
        rejected_events = [e for e in relay.events() if e["type"] == "message_rejected"]
        assert len(rejected_events) == len(HOP_BAD)
        # both nodes still serve: the client still holds its reservation and a new
        # client reserves on the relay
        assert client.status()["reservations"]
        other = relay_client(procs, "other", relay)
        wait_for(other, lambda s: s["reservations"], "reservation after bad input", 15)


def test_hop_over_a_relayed_connection_is_refused(tmp_path: Path) -> None:
    """Spec: no reservations and no circuits over a relayed connection."""
    with NodeProcs(tmp_path) as procs:
        r1 = relay_server(procs)
        r2 = procs.start(
            "r2",
            relay={"enabled": True, "mode": "both", "relay_servers": [r1.p2p_addr]},
            p2p={"discovery": False},
        )
        wait_for(r2, lambda s: s["reservations"], "r2 reserved on r1", 15)
        r2_id = ID.from_base58(r2.peer_id)

        async def poke() -> tuple[int, int]:
            async with probe_host() as h:
                rid = await connect(h, f"{r1.p2p_addr}/p2p/{r1.peer_id}")
                c, code = await circuit(h, rid, r2_id)  # our only connection to r2
                assert c is not None, code
                resp = decode_hop(
                    await exchange(h, r2_id, HOP_ID, encode(HopMessage(type=HopMessage.RESERVE)))
                )
                conn_resp = decode_hop(
                    await exchange(
                        h,
                        r2_id,
                        HOP_ID,
                        encode(
                            HopMessage(
                                type=HopMessage.CONNECT,
                                peer=PbPeer(id=ID.from_base58(r1.peer_id).to_bytes()),
                            )
                        ),
                    )
                )
                assert resp is not None and conn_resp is not None
                return int(resp.status), int(conn_resp.status)

        assert trio.run(poke) == (PERMISSION_DENIED, PERMISSION_DENIED)
        assert r2.metric("sentrynet_reservations_total", outcome="denied") == 1
