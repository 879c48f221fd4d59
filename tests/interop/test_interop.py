"""rust-libp2p 0.56 (peers/rust) and our Python node on loopback: real processes, real
sockets on 127.0.0.x, each side judged through its own /status and /events.

Covered both ways: reservations (relay_servers without a peer id, matched through
identify), circuits, DCUtR, and identify's observed address. Loopback has no NAT, so
DCUtR here proves the CONNECT/SYNC exchange and the bookkeeping on both sides (the direct
dial always succeeds); hole punching through NAT is the netns and Docker tiers' job. A
rust node that is hole-punched to listens on 127.0.0.1 (rustnode.move_to_localhost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rustnode import start_rust

from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.interop

NO_PX = {"discovery": False}
RELAY_SERVER = {"enabled": True, "mode": "server"}


def client(*relays: str) -> dict[str, Any]:
    return {"enabled": True, "mode": "client", "relay_servers": list(relays)}


def conns(st: dict[str, Any], peer: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        c for c in st["connections"] if c["peer"] == peer and (kind is None or c["kind"] == kind)
    ]


def types(node: NodeProc) -> list[str]:
    return [e["type"] for e in node.events()]


def granted(relay: NodeProc, peer: str) -> Any:
    return lambda s: [g for g in s["relay_server"]["granted"] if g["peer"] == peer]


def test_rust_reserves_on_our_relay_found_through_identify(rust_node: Path, tmp_path: Path) -> None:
    """relay_servers without /p2p/<id>, as in a rust-libp2p team's config: the rust node
    dials, identify names the relay, listen_on(<addr>/p2p/<id>/p2p-circuit) reserves."""
    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", p2p=NO_PX, relay=RELAY_SERVER)
        rust = start_rust(procs, rust_node, "rust", relay=client(relay.p2p_addr))
        relay_id, rust_id = relay.peer_id, rust.peer_id

        resv = wait_for(rust, lambda s: [r for r in s["reservations"] if r["addrs"]],
                        "reservation held on our relay", 30)[0]  # fmt: skip
        assert resv["relay"] == relay_id
        circuit = f"{relay.p2p_addr}/p2p/{relay_id}/p2p-circuit/p2p/{rust_id}"
        assert circuit in resv["addrs"]
        st = rust.status()
        assert circuit in st["advertised_addrs"]
        assert st["relay_candidates"] == [
            {"peer": relay_id, "addr": relay.p2p_addr, "source": "config"}
        ]
        events = rust.events()
        seen = [e["type"] for e in events]
        assert seen.index("relay_discovered") < seen.index("reservation_accepted")
        accepted = next(e for e in events if e["type"] == "reservation_accepted")
        later = rust.events(since=accepted["seq"])
        assert [e["seq"] for e in later] == [
            e["seq"] for e in events if e["seq"] >= accepted["seq"]
        ]
        took = accepted["t"] - st["started_at"]
        print(f"rust node: reservation on our relay {took:.3f}s after start")

        wait_for(relay, granted(relay, rust_id), "the grant on our relay")
        wait_until(
            lambda: [e for e in relay.events()
                     if e["type"] == "reservation_granted" and e["peer"] == rust_id],
            "reservation_granted on our relay",
        )  # fmt: skip


def test_our_client_reserves_on_rust_relay(rust_node: Path, tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = start_rust(procs, rust_node, "rrelay", node={"role": "sentry"}, relay=RELAY_SERVER)
        ours = procs.start("ours", p2p=NO_PX, relay=client(relay.p2p_addr))
        relay_id, our_id = relay.peer_id, ours.peer_id

        resv = wait_for(ours, lambda s: s["reservations"], "reservation on the rust relay", 30)
        assert resv[0]["relay"] == relay_id
        assert ours.status()["relay_candidates"][0]["source"] == "config"
        circuit = f"{relay.p2p_addr}/p2p/{relay_id}/p2p-circuit/p2p/{our_id}"
        assert circuit in ours.status()["advertised_addrs"]

        grant = wait_for(relay, granted(relay, our_id), "grant on the rust relay")[0]
        assert grant["expires_at"] > grant["accepted_at"]
        ev = [e for e in relay.events() if e["type"] == "reservation_granted"]
        assert ev and ev[0]["peer"] == our_id and ev[0]["renewed"] is False
        assert relay.p2p_addr in ev[0]["addrs"], "a rust relay's reservation carries its addrs"


def relayed_pair(
    procs: NodeProcs,
    relay: NodeProc,
    start_target: Any,
    start_dialer: Any,
    dcutr: bool,
) -> tuple[NodeProc, NodeProc]:
    """Target reserves on `relay`; dialer's only address of it is the circuit."""
    relays = client(f"{relay.full_addr}")
    target = start_target("target", p2p=NO_PX, relay=relays, dcutr={"enabled": dcutr})
    wait_for(target, lambda s: [r for r in s["reservations"] if r["addrs"]], "reservation", 30)
    circuit = f"{relay.full_addr}/p2p-circuit/p2p/{target.peer_id}"
    dialer = start_dialer(
        "dialer",
        p2p={**NO_PX, "persistent_peers": [circuit]},
        relay=relays,
        dcutr={"enabled": dcutr},
    )
    return target, dialer


def assert_circuit(relay: NodeProc, target: NodeProc, dialer: NodeProc) -> None:
    tid, did = target.peer_id, dialer.peer_id
    out = wait_for(dialer, lambda s: conns(s, tid, "relayed"), "relayed connection out", 30)[0]
    assert out["direction"] == "outbound" and out["relay"] == relay.peer_id
    assert "/p2p-circuit" in out["remote_addr"]
    inb = wait_for(target, lambda s: conns(s, did, "relayed"), "relayed connection in", 30)[0]
    assert inb["direction"] == "inbound" and inb["relay"] == relay.peer_id
    circ = wait_for(relay, lambda s: s["circuits"], "circuit on the relay")[0]
    assert {circ["src"], circ["dst"]} == {did, tid}
    # pings answered over the circuit, each side on its own end
    wait_for(dialer, lambda s: conns(s, tid, "relayed")[0]["pings_ok"] > 0, "ping via relay")
    wait_for(target, lambda s: conns(s, did, "relayed")[0]["pings_ok"] > 0, "ping via relay")


def test_circuit_rust_dialer_to_our_target_through_rust_relay(
    rust_node: Path, tmp_path: Path
) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = start_rust(procs, rust_node, "rrelay", relay=RELAY_SERVER)

        def rust(name: str, **s: Any) -> NodeProc:
            return start_rust(procs, rust_node, name, **s)

        target, dialer = relayed_pair(procs, relay, procs.start, rust, dcutr=False)
        assert_circuit(relay, target, dialer)
        sides = [e.get("side") for e in dialer.events() if e["type"] == "circuit_opened"]
        assert "dialer" in sides


def test_circuit_our_dialer_to_rust_target_through_our_relay(
    rust_node: Path, tmp_path: Path
) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", p2p=NO_PX, relay=RELAY_SERVER)

        def rust(name: str, **s: Any) -> NodeProc:
            return start_rust(procs, rust_node, name, **s)

        target, dialer = relayed_pair(procs, relay, rust, procs.start, dcutr=False)
        assert_circuit(relay, target, dialer)
        sides = [e.get("side") for e in target.events() if e["type"] == "circuit_opened"]
        assert "target" in sides


def upgraded(peer: str) -> Any:
    """A succeeded DCUtR row for `peer` and a direct connection to it."""

    def check(st: dict[str, Any]) -> Any:
        ok = [r for r in st["dcutr"] if r["peer"] == peer and r["outcome"] == "succeeded"]
        return ok[-1] if ok and conns(st, peer, "direct") else None

    return check


def test_dcutr_rust_initiates_our_node_responds(rust_node: Path, tmp_path: Path) -> None:
    """The rust node received the relayed connection, so it initiates (spec roles). It
    listens on 127.0.0.1: see rustnode.move_to_localhost for why."""
    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", p2p=NO_PX, relay=RELAY_SERVER)

        def rust(name: str, **s: Any) -> NodeProc:
            return start_rust(procs, rust_node, name, localhost=True, **s)

        target, dialer = relayed_pair(procs, relay, rust, procs.start, dcutr=True)
        tid, did = target.peer_id, dialer.peer_id
        row_t = wait_for(target, upgraded(did), "DCUtR upgrade on the rust node", 60)
        row_d = wait_for(dialer, upgraded(tid), "DCUtR upgrade on our node", 60)
        assert (row_t["role"], row_d["role"]) == ("initiator", "responder")
        assert row_t["addr"] and row_t["addr"].startswith("/ip4/127.")
        direct = conns(target.status(), did, "direct")[0]
        assert direct["remote_addr"].endswith(f"/tcp/{dialer.p2p_port}")
        assert "dcutr_succeeded" in types(target)


def test_dcutr_our_node_initiates_rust_responds(rust_node: Path, tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        relay = start_rust(procs, rust_node, "rrelay", relay=RELAY_SERVER)

        def rust(name: str, **s: Any) -> NodeProc:
            return start_rust(procs, rust_node, name, **s)

        target, dialer = relayed_pair(procs, relay, procs.start, rust, dcutr=True)
        tid, did = target.peer_id, dialer.peer_id
        row_t = wait_for(target, upgraded(did), "DCUtR upgrade on our node", 60)
        row_d = wait_for(dialer, upgraded(tid), "DCUtR upgrade on the rust node", 60)
        assert (row_t["role"], row_d["role"]) == ("initiator", "responder")
        direct = conns(dialer.status(), tid, "direct")[0]
        assert direct["remote_addr"].endswith(f"/tcp/{target.p2p_port}")


def test_identify_observed_address_on_a_direct_connection(rust_node: Path, tmp_path: Path) -> None:
    """Our node tells the rust node the address it sees. rust-libp2p dials from its listen
    port bound to 0.0.0.0, so the port is the listen port and the source IP is the
    kernel's choice: 127.0.0.1 on loopback (on a Docker network, the node's own IP)."""
    with NodeProcs(tmp_path) as procs:
        ours = procs.start("ours", p2p=NO_PX)
        rust = start_rust(procs, rust_node, "rust", p2p={"persistent_peers": [ours.full_addr]})
        oid = ours.peer_id
        c = wait_for(rust, lambda s: [c for c in conns(s, oid, "direct") if c["observed_addr"]],
                     "identify from our node", 30)[0]  # fmt: skip
        assert c["observed_addr"] == f"/ip4/127.0.0.1/tcp/{rust.p2p_port}"


def test_identify_observed_address_on_a_dcutr_made_connection(
    rust_node: Path, tmp_path: Path
) -> None:
    """After the upgrade, identify on the new direct connection must tell the rust node
    its TCP address, not its circuit address (which it loses the hole-punched one by)."""
    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", p2p=NO_PX, relay=RELAY_SERVER)

        def rust(name: str, **s: Any) -> NodeProc:
            return start_rust(procs, rust_node, name, localhost=True, **s)

        target, dialer = relayed_pair(procs, relay, rust, procs.start, dcutr=True)
        did = dialer.peer_id
        wait_for(target, upgraded(did), "DCUtR upgrade on the rust node", 60)
        c = wait_for(
            target,
            lambda s: [c for c in conns(s, did, "direct") if c["observed_addr"]],
            "identify on the DCUtR-made connection",
            30,
        )[0]
        assert "/p2p-circuit" not in c["observed_addr"], c["observed_addr"]
        assert c["observed_addr"].endswith(f"/tcp/{target.p2p_port}")
