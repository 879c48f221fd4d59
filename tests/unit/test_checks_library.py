"""The bug-library checks (harness/checks/library.py) on hand-made observations: each
passes on the state its scenario claims, fails naming the public issue when the bug shows,
and says what it is waiting for otherwise."""

from __future__ import annotations

import dataclasses
from typing import Any

from test_checks_data import PID, ROUTER, connect, ev, healthy_statuses, obs

from harness.checks import Observation, library

RESTART = {"restart_time": 20.0}


# ------------------------------------------------------------------ client-restart-loop
def restarted(accepted_at: float = 115.0) -> dict[str, dict[str, Any]]:
    """node0 holds its reservations; node clock 115.0 == harness t 25.0 (after 20.0)."""
    st = healthy_statuses()
    for r in st["node0"]["reservations"]:
        r["accepted_at"] = accepted_at
    return st


def grants(n: int, renewed: bool = True) -> list[dict[str, Any]]:
    return [
        ev("reservation_granted", 5.0 + i, peer=PID["node0"], renewed=renewed and i > 0)
        for i in range(n)
    ]


def test_reserved_again_after_the_restart() -> None:
    check = library.reserved_again("node0", "restart_time")
    v = check(obs(restarted(), {"node3": grants(3)}, marks=RESTART))
    assert v.ok, v
    assert "node0 restarted at 20.0s holds a reservation again" in v.detail
    assert "node3 at 25.0s" in v.detail and "5.0s after the restart" in v.detail
    assert "3 reservation(s) in this run (2 as a renewal of its own slot)" in v.detail
    assert "no RESOURCE_LIMIT_EXCEEDED (go-libp2p #2963)" in v.detail
    assert v.since == 25.0


def test_reserved_again_wants_a_reservation_from_after_the_restart() -> None:
    check = library.reserved_again("node0", "restart_time")
    v = check(obs(restarted(accepted_at=101.0), marks=RESTART))  # harness 11.0: before
    assert not v.ok
    assert "no reservation accepted since" in v.detail
    assert "sent no RESERVE" in (v.cause or "")
    # an accepted event after the restart counts when the status carries no time
    st = restarted()
    for r in st["node0"]["reservations"]:
        r["accepted_at"] = None
    events = {"node0": [ev("reservation_accepted", 23.0, relay=PID["node7"])]}
    v = check(obs(st, events, marks=RESTART))
    assert v.ok and "node7 at 23.0s" in v.detail, v


def test_reserved_again_resource_limit_is_the_bug_and_final() -> None:
    check = library.reserved_again("node0", "restart_time")
    refused = ev("reservation_refused", 22.0, peer=PID["node0"], reason="RESOURCE_LIMIT_EXCEEDED")
    v = check(obs(restarted(), {"node3": [refused]}, marks=RESTART))
    assert not v.ok and v.data["final"]
    assert "node3 refused node0 RESOURCE_LIMIT_EXCEEDED at 22.0s [node3 (refused)]" in v.detail
    assert "go-libp2p #2963" in (v.cause or "") and "per peer" in (v.cause or "")
    # seen from the client side too
    denied = ev("reservation_denied", 22.0, relay=PID["node7"], reason="RESOURCE_LIMIT_EXCEEDED")
    v = check(obs(restarted(), {"node0": [denied]}, marks=RESTART))
    assert not v.ok and "node7 refused node0" in v.detail and "[node0 (denied)]" in v.detail


def test_reserved_again_other_refusals_and_a_down_node() -> None:
    check = library.reserved_again("node0", "restart_time")
    st = restarted(accepted_at=101.0)
    denied = ev("reservation_denied", 22.0, relay=PID["node3"], reason="PERMISSION_DENIED")
    v = check(obs(st, {"node0": [denied]}, marks=RESTART))
    assert not v.ok and not v.data.get("final")
    assert "the relays refused it: node3 refused node0 PERMISSION_DENIED" in (v.cause or "")
    del st["node0"]
    v = check(obs(st, marks=RESTART))
    assert not v.ok and "not answering /status since its restart at 20.0s" in v.detail
    v = check(obs(restarted()))
    assert not v.ok and v.data["final"] and "no time mark 'restart_time'" in v.detail


def test_reservations_never_refused() -> None:
    v = library.reservations_never_refused(obs(events={"node3": grants(2)}))
    assert v.ok, v
    assert "no reservation refused with RESOURCE_LIMIT_EXCEEDED" in v.detail
    assert "node0 2 (1 renewals)" in v.detail
    other = ev("reservation_refused", 9.0, peer=PID["node5"], reason="PERMISSION_DENIED")
    v = library.reservations_never_refused(obs(events={"node7": [other]}))
    assert v.ok and "other refusals: node7 refused node5 PERMISSION_DENIED" in v.detail
    limit = ev("reservation_denied", 9.0, relay=PID["node7"], reason="RESOURCE_LIMIT_EXCEEDED")
    v = library.reservations_never_refused(obs(events={"node5": [limit]}))
    assert not v.ok and v.data["final"] and "go-libp2p #2963" in (v.cause or "")


# ------------------------------------------------------------------------ relay-limits
def circuit(type_: str, ts: float, a: str, b: str, reason: str | None = None) -> dict[str, Any]:
    extra = {"reason": reason} if reason else {}
    return ev(type_, ts, src=PID[a], dst=PID[b], side="relay", **extra)


def test_circuits_limited_counts_the_cuts_and_the_reopened_pairs() -> None:
    events = {
        "node7": [
            circuit("circuit_opened", 10.0, "node1", "node4"),
            circuit("circuit_closed", 30.0, "node1", "node4", "data_limit"),
            circuit("circuit_opened", 31.0, "node4", "node1"),
            circuit("circuit_closed", 51.0, "node4", "node1", "duration_limit"),
            circuit("circuit_closed", 52.0, "node0", "node5", "reset"),
        ],
        "node3": [circuit("circuit_closed", 40.0, "node0", "node4", "data_limit")],
    }
    v = library.circuits_limited(1)(obs(events=events))
    assert v.ok, v
    assert "relays closed 3 circuit(s) at their limits (data_limit 2, duration_limit 1" in v.detail
    assert "by relay: node3 1, node7 2" in v.detail and "other closes: reset 1" in v.detail
    assert "reopened after a cut: node1<->node4 1x" in v.detail
    assert "not (yet) reopened: node0<->node4" in v.detail
    assert "128 KiB and 2 min" in v.detail
    assert v.data == {"limited": {"data_limit": 2, "duration_limit": 1}, "reopened": 1}
    assert v.since == 30.0
    v = library.circuits_limited(4)(obs(events=events))
    assert not v.ok and "circuit_bytes" in (v.cause or "")


def test_circuits_limited_fails_without_cuts_or_without_a_new_circuit() -> None:
    v = library.circuits_limited(1)(obs())
    assert not v.ok and "relays closed 0 circuit(s)" in v.detail
    assert "DCUtR still on" in (v.cause or "")
    events = {"node7": [circuit("circuit_closed", 30.0, "node1", "node4", "duration_limit")]}
    v = library.circuits_limited(1)(obs(events=events))
    assert not v.ok and "no pair opened a circuit again" in v.detail
    assert "redial" in (v.cause or "")


# ------------------------------------------------------------------------- shared-port
def shared(o: Observation) -> Observation:
    """The layout of scenarios/shared-port.yaml: the validators share 4001 behind each
    router, the full nodes have their own port."""
    for n in ("node2", "node6"):
        o.nodes[n] = dataclasses.replace(o.nodes[n], p2p_port=4002)
    return o


def direct_b(st: dict[str, Any], me: str, peer: str) -> None:
    """`me` (behind a) reaches `peer` (behind b) directly through router-b, and back."""
    connect(st[me], peer, "direct", remote=f"/ip4/{ROUTER['b']}/tcp/4001")
    connect(st[peer], me, "direct", remote=f"/ip4/{ROUTER['a']}/tcp/4001")


def relayed(st: dict[str, Any], a: str, b: str) -> None:
    connect(st[a], b, "relayed", relay="node7")
    connect(st[b], a, "relayed", relay="node7")


def gave_up(a: str, b: str, ts: float = 40.0, final: bool | None = True) -> dict[str, Any]:
    return ev("dcutr_failed", ts, peer=PID[b], reason="timeout", role="initiator", final=final)


def shared_port_state() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    st = healthy_statuses()
    direct_b(st, "node1", "node4")
    events: dict[str, list[dict[str, Any]]] = {}
    for a, b in (("node0", "node4"), ("node0", "node5"), ("node1", "node5")):
        relayed(st, a, b)
        events.setdefault(a, []).append(gave_up(a, b))
    return st, events


def test_shared_endpoints_from_the_ports() -> None:
    assert library.shared_endpoints(shared(obs())) == {
        "router-a:4001": ["node0", "node1"],
        "router-b:4001": ["node4", "node5"],
    }


def test_exactly_one_direct_pair_between_shared_endpoints() -> None:
    st, events = shared_port_state()
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events)))
    assert v.ok, v
    assert v.detail.startswith("exactly 1 of 4 cross-NAT pairs is direct: node1<->node4 direct")
    assert "node0<->node4 DCUtR failed 1x (timeout), relayed" in v.detail
    assert "router-a:4001 (node0, node1) and router-b:4001 (node4, node5)" in v.detail
    assert "rust-libp2p #3889" in v.detail
    assert v.data == {"direct": 1, "failed": 3}


def test_shared_endpoints_waiting_or_wrong() -> None:
    st, events = shared_port_state()
    # a pair still trying: not decided yet
    events["node1"] = [gave_up("node1", "node5", final=False)]
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events)))
    assert not v.ok and "the others not decided" in v.detail
    assert "node1<->node5 relayed, DCUtR not decided" in v.detail
    # nothing direct yet
    st, events = shared_port_state()
    st["node1"]["connections"] = [c for c in st["node1"]["connections"] if c["kind"] != "direct"]
    st["node4"]["connections"] = [c for c in st["node4"]["connections"] if c["kind"] != "direct"]
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events)))
    assert not v.ok and "no direct pair between the shared endpoints yet" in v.detail
    # two direct: the endpoint was not shared after all
    st, events = shared_port_state()
    direct_b(st, "node0", "node5")
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events)))
    assert not v.ok and "2 direct pairs" in v.detail
    assert "does not preserve ports" in (v.cause or "")


def test_shared_endpoints_need_two_groups() -> None:
    o = obs()
    for n in ("node1", "node2", "node5", "node6"):
        o.nodes[n] = dataclasses.replace(o.nodes[n], p2p_port=4002 + int(n[-1]))
    v = library.one_direct_per_shared_endpoint(o)
    assert not v.ok and v.data["final"] and "explicit `p2p_port:`" in (v.cause or "")


def test_shared_endpoints_pairs_left_alone_do_not_block() -> None:
    st, events = shared_port_state()
    del events["node1"]  # node1<->node5 relayed (since 15.0s), no DCUtR attempt at all
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events, t=30.0)))
    assert not v.ok and "node1<->node5 relayed, DCUtR not decided" in v.detail
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events, t=60.0)))
    assert v.ok and "node1<->node5 relayed, DCUtR never tried" in v.detail, v
    # a pair that gave up and then closed its relayed connection still counts as failed
    st["node1"]["connections"] = [c for c in st["node1"]["connections"] if c["kind"] == "direct"]
    st["node5"]["connections"] = []
    events["node1"] = [gave_up("node1", "node5")]
    v = library.one_direct_per_shared_endpoint(shared(obs(st, events)))
    assert v.ok and "node1<->node5 DCUtR failed 1x (timeout), not connected now" in v.detail, v


def test_circuits_limited_since_a_mark_counts_only_later_cuts() -> None:
    events = {
        "node7": [
            circuit("circuit_closed", 30.0, "node1", "node4", "duration_limit"),
            circuit("circuit_opened", 31.0, "node1", "node4"),
            circuit("circuit_closed", 51.0, "node1", "node4", "duration_limit"),
            circuit("circuit_opened", 52.0, "node1", "node4"),
        ]
    }
    check = library.circuits_limited(1, "sync_start")
    v = check(obs(events=events, marks={"sync_start": 40.0}))
    assert v.ok and "at their limits since 40.0s (data_limit 0, duration_limit 1" in v.detail, v
    assert v.since == 51.0
    v = check(obs(events=events, marks={"sync_start": 60.0}))
    assert not v.ok and "relays closed 0 circuit(s) at their limits since 60.0s" in v.detail
    v = check(obs(events=events))
    assert not v.ok and v.data["final"] and "no time mark 'sync_start'" in v.detail
