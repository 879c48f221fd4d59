"""DCUtR on loopback between real node processes: the CONNECT/SYNC exchange upgrades a
relayed connection to a direct one and the relayed one closes; malformed, truncated,
oversized and out-of-order DCUtR messages are rejected, counted, and the node keeps
serving (it then completes a real upgrade).

Loopback has no NAT, so this proves the protocol exchange and the bookkeeping; the hole
punch through real NAT routers is tests/node/test_dcutr_netns.py.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from probe import connect, probe_host

from node.dcutr.service import RELAY_CLOSE_GRACE_S
from node.dcutr.wire import CONNECT, PROTOCOL_ID, SYNC, encode
from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.loopback


def rows(st: dict[str, Any], peer: str) -> list[dict[str, Any]]:
    return [r for r in st.get("dcutr") or [] if r["peer"] == peer]


def conns(st: dict[str, Any], peer: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        c for c in st["connections"] if c["peer"] == peer and (kind is None or c["kind"] == kind)
    ]


def upgraded(node: NodeProc, peer: str) -> Any:
    """Predicate: a succeeded attempt, a direct connection and no relayed one to `peer`."""

    def check(st: dict[str, Any]) -> Any:
        ok = [r for r in rows(st, peer) if r["outcome"] == "succeeded"]
        if ok and conns(st, peer, "direct") and not conns(st, peer, "relayed"):
            return ok[-1]
        return None

    return check


def start_relayed_pair(
    procs: NodeProcs, dcutr: dict[str, Any] | None = None
) -> tuple[NodeProc, NodeProc, NodeProc]:
    """relay R; listener L holding a reservation on R; dialer D reaching L through R.

    discovery is off so D learns no direct address of L: the only way in is the circuit.
    """
    p2p = {"discovery": False}
    relay = procs.start("relay", p2p=p2p, relay={"enabled": True, "mode": "server"})
    client = {"enabled": True, "mode": "client", "relay_servers": [relay.full_addr]}
    listener = procs.start("listener", p2p=p2p, relay=client, dcutr=dcutr or {})
    wait_for(listener, lambda s: s["reservations"], "a reservation on the relay", 30)
    circuit = f"{relay.full_addr}/p2p-circuit/p2p/{listener.peer_id}"
    dialer = procs.start(
        "dialer", p2p={**p2p, "persistent_peers": [circuit]}, relay=client, dcutr=dcutr or {}
    )
    return relay, listener, dialer


def test_relayed_connection_upgrades_and_relay_leg_closes(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        _, listener, dialer = start_relayed_pair(procs)
        lid, did = listener.peer_id, dialer.peer_id

        # spec roles: L received the relayed connection, so L initiates; D responds
        row_l = wait_for(listener, upgraded(listener, did), "DCUtR upgrade on the listener", 60)
        row_d = wait_for(dialer, upgraded(dialer, lid), "DCUtR upgrade on the dialer", 60)
        assert row_l["role"] == "initiator" and row_d["role"] == "responder"
        assert row_l["rtt_s"] is not None and row_l["rtt_s"] > 0
        assert row_l["duration_s"] is not None and row_l["addr"].startswith("/ip4/127.")

        # the direct connection joins the two listen ports (dials left from them)
        l_port = listener.p2p_addr.rsplit("/", 1)[1]
        d_port = dialer.p2p_addr.rsplit("/", 1)[1]
        direct_on_d = conns(dialer.status(), lid, "direct")[0]
        direct_on_l = conns(listener.status(), did, "direct")[0]
        assert direct_on_d["remote_addr"].endswith(f"/tcp/{l_port}")
        assert direct_on_l["remote_addr"].endswith(f"/tcp/{d_port}")

        ev_l = listener.events()
        types = [e["type"] for e in ev_l if e.get("peer") == did]
        assert "dcutr_started" in types and "dcutr_succeeded" in types
        closed = wait_until(
            lambda: [
                e for e in listener.events()
                if e["type"] == "connection_closed" and e["peer"] == did
                and e["kind"] == "relayed"
            ],
            "connection_closed kind=relayed on the listener after the upgrade",
            RELAY_CLOSE_GRACE_S + 30,
        )  # fmt: skip
        # ...but not at once: the peer may still be in its own attempt over it (issue 10:
        # a rust-libp2p peer lost its attempt when we closed after 1 s)
        ok_at = next(e["t"] for e in ev_l if e["type"] == "dcutr_succeeded" and e["peer"] == did)
        assert closed[0]["t"] - ok_at >= RELAY_CLOSE_GRACE_S - 0.5, (closed[0], ok_at)
        # only the side that received the relayed connection initiates (no storm from D)
        ev_d = dialer.events()
        assert not [e for e in ev_d if e["type"] == "dcutr_started" and e["role"] == "initiator"]
        assert listener.metric("sentrynet_dcutr_total", outcome="succeeded") >= 1
        assert listener.metric("sentrynet_holepunch_duration_seconds_count") >= 1


BAD_MESSAGES = [
    # (payload, close write side after it, expected reason)
    (b"\x80\x80\x01" + b"x" * 64, False, "oversized"),  # length 16384 > 4 KiB spec limit
    (b"\x0a\x08\x64", True, "truncated"),  # announces 10 bytes, sends 2, hangs up
    (b"\x05\xff\xff\xff\xff\xff", False, "malformed"),  # not a protobuf
    (b"\x02\x08\x05", False, "malformed"),  # HolePunch with an unknown type
    (encode(SYNC), False, "unexpected_type"),  # SYNC before CONNECT
]


def test_dcutr_over_a_direct_connection_is_rejected_not_recorded(tmp_path: Path) -> None:
    """A well-formed CONNECT, then SYNC, from a peer on a direct connection: there is nothing
    to upgrade, so the node rejects it (counted `not_relayed`) and records no attempt; it
    used to answer and then record a succeeded hole punch."""
    with NodeProcs(tmp_path) as procs:
        node = procs.start("node", p2p={"discovery": False})

        async def send() -> bytes:
            async with probe_host() as host:
                peer = await connect(host, node.full_addr)
                with trio.fail_after(20):
                    s = await host.new_stream(peer, [PROTOCOL_ID])
                    await s.write(encode(CONNECT, [b"\x04\x7f\x00\x00\x01\x06\x0f\xa1"]))
                    got = b""
                    try:
                        # the node may reset the stream on CONNECT before SYNC leaves (CI
                        # run of 00:25 on 2026-12-05: StreamReset on this write)
                        await s.write(encode(SYNC))
                        while chunk := await s.read(4096):
                            got += chunk
                    except Exception:
                        pass  # reset by the node
                    return got

        assert trio.run(send) == b"", "the node answered CONNECT over a direct connection"
        st = wait_for(node, lambda s: s["rejected"]["dcutr"] >= 1 and s, "rejected.dcutr")
        assert st["dcutr"] == []
        types = {e["type"] for e in node.events()}
        assert "dcutr_succeeded" not in types and "dcutr_started" not in types
        assert (
            node.metric("sentrynet_messages_rejected_total", protocol="dcutr", reason="not_relayed")
            == 1
        )


async def _send_bad(full_addr: str) -> list[bytes]:
    replies = []
    async with probe_host() as host:
        peer = await connect(host, full_addr)
        for payload, close_write, _ in BAD_MESSAGES:
            with trio.fail_after(20):
                s = await host.new_stream(peer, [PROTOCOL_ID])
                await s.write(payload)
                if close_write:
                    await s.close()
                got = b""
                try:
                    while chunk := await s.read(4096):
                        got += chunk
                except Exception:
                    pass  # reset by the node: what we expect
                replies.append(got)
    return replies


def test_bad_dcutr_messages_rejected_counted_node_keeps_serving(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", p2p={"discovery": False},
                            relay={"enabled": True, "mode": "server"})  # fmt: skip
        client = {"enabled": True, "mode": "client", "relay_servers": [relay.full_addr]}
        listener = procs.start("listener", p2p={"discovery": False}, relay=client)

        replies = trio.run(_send_bad, listener.full_addr)
        assert replies == [b""] * len(BAD_MESSAGES), "the node answered a bad message"

        def rejected_count(reason: str) -> float:
            return listener.metric("sentrynet_messages_rejected_total", protocol="dcutr",
                                   reason=reason)  # fmt: skip

        for _, _, reason in BAD_MESSAGES:
            want = sum(1 for b in BAD_MESSAGES if b[2] == reason)
            wait_until(
                lambda r=reason, w=want: rejected_count(r) == w,  # type: ignore[misc]
                f"messages_rejected_total{{protocol=dcutr,reason={reason}}} == {want}",
                20,
            )
        st = wait_for(
            listener, lambda s: s["rejected"]["dcutr"] == len(BAD_MESSAGES) and s, "rejected.dcutr"
        )
        assert rows(st, "") == [] and not st["dcutr"], "bad input must not count as attempts"
        rejected = [e for e in listener.events() if e["type"] == "message_rejected"]
        assert {e["reason"] for e in rejected} == {b[2] for b in BAD_MESSAGES}
        assert all(e["protocol"] == "dcutr" for e in rejected)

        # still serving: a real peer now gets its relayed connection upgraded
        circuit = f"{relay.full_addr}/p2p-circuit/p2p/{listener.peer_id}"
        dialer = procs.start(
            "dialer",
            p2p={"discovery": False, "persistent_peers": [circuit]},
            relay=client,
        )
        wait_for(listener, upgraded(listener, dialer.peer_id), "DCUtR upgrade after bad input", 60)


def test_closing_the_relayed_leg_keeps_the_connection_to_the_relay(tmp_path: Path) -> None:
    """The relayed connection is a stream on the connection to the relay: closing it after
    the upgrade must not close that connection (and lose the reservation with it). In the
    sentry testnet under load a client's connection to its relay closed 0.5 s after it
    closed a relayed leg (reservation_expired reason=connection_closed, reserved again
    7 s later); on loopback it holds, so the cause is elsewhere (not found yet) and this
    keeps the loopback half of it from regressing."""
    with NodeProcs(tmp_path) as procs:
        relay, listener, dialer = start_relayed_pair(procs)
        lid, did, rid = listener.peer_id, dialer.peer_id, relay.peer_id
        wait_for(dialer, lambda s: s["reservations"], "the dialer's reservation", 30)
        for node, peer in ((listener, did), (dialer, lid)):
            wait_until(
                lambda node=node, peer=peer: [
                    e for e in node.events()
                    if e["type"] == "connection_closed" and e["peer"] == peer
                    and e["kind"] == "relayed"
                ],
                f"{node.name}: the relayed leg closed after the upgrade",
                RELAY_CLOSE_GRACE_S + 60,
            )  # fmt: skip
        # the relay resets its halves of the circuit; in the testnet the drop followed
        # within 0.5 s. Watch both ends for 5 s after the relay reports the circuit closed.
        wait_for(relay, lambda st: not st["circuits"], "the relay's circuit closed", 30)
        watch_until = time.monotonic() + 5.0
        while time.monotonic() < watch_until:
            for node in (listener, dialer):
                lost = [
                    e for e in node.events()
                    if (e["type"] == "connection_closed" and e["peer"] == rid)
                    or e["type"] == "reservation_expired"
                ]  # fmt: skip
                if lost:  # whole, with every event field (pytest shortens an assert's repr),
                    # and who closed it: the relay's and this node's log tails (the cause
                    # is not found yet; a CI run's directory is gone by the time one looks)
                    tails = "\n".join(
                        f"--- {n.name} log tail\n{n.log_tail(25)}" for n in (relay, node)
                    )
                    pytest.fail(
                        f"{node.name} lost its relay connection: "
                        + "; ".join(json.dumps(e, sort_keys=True) for e in lost)
                        + "\n"
                        + tails,
                        pytrace=False,
                    )
        for node in (listener, dialer):
            assert node.status()["reservations"], node.name


def test_a_direct_dial_in_flight_does_not_hold_the_punch(tmp_path: Path) -> None:
    """The listener L is dialing D directly, to an address that accepts TCP and never
    answers (as a dial into a NAT hangs until its timeout), when D reaches L through the
    relay. L initiates at once: a direct dial that fails falls back to the relayed
    connection already there, so only a circuit of ours in flight is waited for
    (DCUtRService._settle). Before, L waited for the hanging dial (the handshake's timeout,
    bounded by SETTLE_S) before its CONNECT."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes TCP handshakes; nothing ever answers Noise
    with silent, NodeProcs(tmp_path) as procs:
        p2p = {"discovery": False}
        relay = procs.start("relay", p2p=p2p, relay={"enabled": True, "mode": "server"})
        client = {"enabled": True, "mode": "client", "relay_servers": [relay.full_addr]}
        first = procs.start("dialer", p2p=p2p)  # its key, to name it in L's config
        did = first.peer_id
        first.stop()
        hang = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{did}"
        listener = procs.start("listener", p2p={**p2p, "persistent_peers": [hang]}, relay=client)
        wait_for(listener, lambda s: s["reservations"], "a reservation on the relay", 30)
        wait_until(
            lambda: select.select([silent], [], [], 0)[0],
            "the listener's direct dial to reach the silent address",
            30,
        )
        circuit = f"{relay.full_addr}/p2p-circuit/p2p/{listener.peer_id}"
        procs.start("dialer", p2p={**p2p, "persistent_peers": [circuit]}, relay=client)

        def started_after_relayed() -> list[float]:
            ev = [e for e in listener.events() if e.get("peer") == did]
            opened = [e["t"] for e in ev if e["type"] == "connection_opened"
                      and e["kind"] == "relayed"]  # fmt: skip
            started = [e["t"] for e in ev if e["type"] == "dcutr_started"
                       and e["role"] == "initiator"]  # fmt: skip
            return [started[0] - opened[0]] if opened and started else []

        [gap] = wait_until(started_after_relayed, "the listener's first DCUtR attempt", 60)
        assert gap < 3.0, f"the punch waited {gap:.2f} s after the relayed connection opened"
        wait_for(listener, upgraded(listener, did), "DCUtR upgrade on the listener", 60)
