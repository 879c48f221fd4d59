"""The bug-library checks (harness/checks/library.py) on hand-made observations: each
passes on the state its scenario claims, fails naming the public issue when the bug shows,
and says what it is waiting for otherwise."""

from __future__ import annotations

import dataclasses
from typing import Any

from test_checks_data import IP, PID, ROUTER, connect, ev, healthy_statuses, obs, tcp

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


# ----------------------------------------------------- reservation-refresh, advertised-addrs
CLIENTS = ("node0", "node1", "node2", "node4", "node5", "node6")


def circ(relay: str, me: str) -> str:
    return f"/ip4/{IP[relay]}/tcp/4001/p2p/{PID[relay]}/p2p-circuit/p2p/{PID[me]}"


def held_events(me: str, refreshes: tuple[float, ...] = (20.0, 35.0)) -> list[dict[str, Any]]:
    """`me` reserves on node3 then node7 (each followed by addrs_advertised) and refreshes
    both at each of `refreshes`."""
    out = [
        ev("reservation_accepted", 5.0, relay=PID["node3"]),
        ev("addrs_advertised", 5.0, addrs=[circ("node3", me)]),
        ev("reservation_accepted", 5.5, relay=PID["node7"]),
        ev("addrs_advertised", 5.5, addrs=[circ("node3", me), circ("node7", me)]),
    ]
    for t in refreshes:
        out += [
            ev("reservation_refreshed", t, relay=PID["node3"], expires_at=1780000000),
            ev("reservation_refreshed", t + 0.2, relay=PID["node7"], expires_at=1780000000),
        ]
    return out


def refreshing(refreshes: tuple[float, ...] = (20.0, 35.0)) -> dict[str, list[dict[str, Any]]]:
    return {c: held_events(c, refreshes) for c in CLIENTS}


def test_reservations_refreshed_counts_each_reservation() -> None:
    v = library.reservations_refreshed(2)(obs(events=refreshing(), t=40.0))
    assert v.ok, v
    assert "every client refreshed each reservation in place (>= 2x" in v.detail
    assert "node0->node3 2x" in v.detail and "node6->node7 2x" in v.detail
    assert v.since == 35.2
    v = library.reservations_refreshed(3)(obs(events=refreshing(), t=40.0))
    assert not v.ok and "short: node0->node3 2x" in v.detail
    assert "3/4 of the reservation TTL" in (v.cause or "")
    # since a mark: only the refreshes from then on
    v = library.reservations_refreshed(1, "round")(
        obs(events=refreshing(), marks={"round": 30.0}, t=40.0)
    )
    assert v.ok and "since 30.0s" in v.detail and "node0->node3 1x" in v.detail, v
    v = library.reservations_refreshed(1, "round")(obs(events=refreshing()))
    assert not v.ok and v.data["final"] and "no time mark 'round'" in v.detail


def test_reservations_refreshed_a_refresh_that_drops_names_the_issue() -> None:
    evs = refreshing()
    evs["node1"].append(
        ev("reservation_expired", 36.0, relay=PID["node7"], reason="refresh failed: timeout")
    )
    v = library.reservations_refreshed(2)(obs(events=evs, t=40.0))
    assert not v.ok
    assert "a refresh dropped the reservation: node1->node7 at 36.0s" in v.detail
    assert "js-libp2p #3571" in (v.cause or "") and "PR #3582" in (v.cause or "")


def test_circuit_addrs_kept_across_refreshes() -> None:
    st = healthy_statuses()
    for c in CLIENTS:  # /status advertises the full circuit addresses
        st[c]["advertised_addrs"] = [tcp(c), circ("node3", c), circ("node7", c)]
    v = library.circuit_addrs_kept()(obs(st, refreshing(), t=40.0))
    assert v.ok, v
    assert "no circuit address withdrawn by any of 24 refreshes" in v.detail
    assert "node0 node3+node7 (4 refreshes)" in v.detail
    # nothing refreshed yet: nothing shown
    v = library.circuit_addrs_kept()(obs(st, refreshing(()), t=10.0))
    assert not v.ok and "no refresh yet" in v.detail


def test_circuit_addrs_kept_a_withdrawal_at_a_refresh_is_the_bug() -> None:
    evs = refreshing()
    # the js-libp2p #3571 pattern: the refresh withdraws node7's address, then re-adds it
    evs["node4"] += [
        ev("addrs_advertised", 35.4, addrs=[circ("node3", "node4")]),
        ev("addrs_advertised", 36.0, addrs=[circ("node3", "node4"), circ("node7", "node4")]),
    ]
    v = library.circuit_addrs_kept()(obs(events=evs, t=40.0))
    assert not v.ok and v.data["final"]
    assert "node4 withdrew node7 at 35.4s with no reservation_expired, 0.2s after a refresh" in (
        v.detail
    )
    assert "js-libp2p #3571" in (v.cause or "")
    # a withdrawal because the connection to the relay closed is not a refresh's doing:
    # named in the detail, not counted against the refreshes
    evs = refreshing()
    evs["node4"] += [
        ev("reservation_expired", 35.3, relay=PID["node7"], reason="connection_closed"),
        ev("addrs_advertised", 35.4, addrs=[circ("node3", "node4")]),
        ev("addrs_advertised", 37.0, addrs=[circ("node3", "node4"), circ("node7", "node4")]),
    ]
    v = library.circuit_addrs_kept()(obs(events=evs, t=40.0))
    assert v.ok, v
    assert "node4 lost its connection to node7 at 35.4s" in v.detail
    # a node that does not emit addrs_advertised cannot be judged
    evs = refreshing()
    evs["node2"] = [e for e in evs["node2"] if e["type"] != "addrs_advertised"]
    v = library.circuit_addrs_kept()(obs(events=evs, t=40.0))
    assert not v.ok and "no addrs_advertised events from node2" in v.detail


def dial(at: float, ok: bool = True, **kw: Any) -> dict[str, Any]:
    return {
        "from": "node6",
        "target": "node0",
        "via": "node7",
        "mode": "dial",
        "addr": circ("node7", "node0"),
        "at": at,
        "ok": ok,
        "rtt_s": 0.0042 if ok else None,
        "error": None if ok else "CONNECT through the relay: the relay answered NO_RESERVATION",
        **kw,
    }


def test_circuit_dial_ok_after_each_refresh() -> None:
    check = library.circuit_dial_ok("dials")
    v = check(obs(events=refreshing(), marks={"dials": [dial(22.0), dial(37.0)]}, t=40.0))
    assert v.ok, v
    assert "2 fresh circuit dial(s)" in v.detail
    assert "#1 node6 -> node0 via node7 at 22.0s ok, rtt 4.2 ms, 1.8s after a refresh" in v.detail
    # two dials after the same refresh: the second proves nothing new
    v = check(obs(events=refreshing(), marks={"dials": [dial(22.0), dial(25.0)]}, t=40.0))
    assert (
        not v.ok
        and "#2" in v.detail
        and "no refresh or new reservation of node0 on node7 before it" in v.detail
    )
    v = check(obs(events=refreshing(), marks={"dials": [dial(22.0, ok=False)]}, t=40.0))
    assert not v.ok and v.data["final"] and "NO_RESERVATION" in v.detail
    assert "js-libp2p #3571" in (v.cause or "")
    v = check(obs(events=refreshing()))
    assert not v.ok and v.data["final"] and "no probe recorded as 'dials'" in v.detail


def test_advertised_while_reserved_now_and_at_every_change() -> None:
    st = healthy_statuses()
    for c in CLIENTS:
        st[c]["advertised_addrs"] = [tcp(c), circ("node3", c), circ("node7", c)]
    v = library.advertised_while_reserved(obs(st, refreshing(), t=40.0))
    assert v.ok, v
    assert "advertised exactly while reserved" in v.detail and "all 12 changes" in v.detail
    # rust-libp2p #6165: the address outlives the reservation
    evs = refreshing()
    evs["node5"].append(ev("reservation_expired", 38.0, relay=PID["node3"], reason="closed"))
    st5 = dict(st)
    st5["node5"] = dict(st["node5"])
    st5["node5"]["reservations"] = [
        r for r in st["node5"]["reservations"] if r["relay"] == PID["node7"]
    ]
    v = library.advertised_while_reserved(obs(st5, evs, t=40.0))
    assert not v.ok
    assert "node5 advertises node3 now without a reservation" in v.detail
    assert "rust-libp2p #6165" in (v.cause or "")
    # rust-libp2p #4618: a reservation never advertised
    evs = refreshing()
    evs["node6"] = [e for e in evs["node6"] if e["type"] != "addrs_advertised" or e["ts"] < 5.2]
    st6 = dict(st)
    st6["node6"] = {**st["node6"], "advertised_addrs": [tcp("node6"), circ("node3", "node6")]}
    v = library.advertised_while_reserved(obs(st6, evs, t=40.0))
    assert not v.ok and "node6 holds node7 now but does not advertise it" in v.detail
    assert "rust-libp2p #4618" in (v.cause or "")


def killed_state(withdrawn_at: float | None) -> Observation:
    st = healthy_statuses()
    evs = refreshing(())
    for c in CLIENTS:
        st[c]["reservations"] = [r for r in st[c]["reservations"] if r["relay"] == PID["node7"]]
        st[c]["advertised_addrs"] = [tcp(c), circ("node7", c)]
        if withdrawn_at is None:
            st[c]["advertised_addrs"].append(circ("node3", c))
            continue
        evs[c] += [
            ev("reservation_expired", withdrawn_at, relay=PID["node3"], reason="connection_closed"),
            ev("addrs_advertised", withdrawn_at, addrs=[circ("node7", c)]),
        ]
    del st["node3"]
    marks = {"killed_at": {"node3": 30.0}, "reserved_on": {"node3": list(CLIENTS)}}
    return obs(st, evs, marks=marks, t=50.0)


def test_circuit_addrs_withdrawn_within_the_bound() -> None:
    check = library.circuit_addrs_withdrawn("node3", 30)
    v = check(killed_state(31.5))
    assert v.ok, v
    assert "every client that held a reservation on it withdrew" in v.detail
    assert "slowest 1.5s" in v.detail
    assert "node0 withdrew node3 in 1.5s (reservation_expired: connection_closed)" in v.detail
    assert "still advertises node7" in v.detail
    assert v.since == 31.5
    # late: withdrawn after the bound
    v = check(killed_state(70.0))
    assert not v.ok and v.data["final"] and "only 40.0s after the kill" in v.detail
    assert "rust-libp2p #6165" in (v.cause or "")
    # still advertised: waiting, then final past the bound
    v = check(killed_state(None))
    assert not v.ok and not v.data.get("final") and "still advertises node3 (20s)" in v.detail
    o = killed_state(None)
    v = check(dataclasses.replace(o, t=65.0))
    assert not v.ok and v.data["final"] and "35s after the kill" in v.detail
    v = check(obs())
    assert not v.ok and v.data["final"] and "no kill of node3 recorded" in v.detail


def test_circuit_addrs_withdrawn_must_keep_the_other_relay() -> None:
    o = killed_state(31.5)
    st = {n: s for n, s in o.status.items()}
    st["node1"] = dataclasses.replace(st["node1"], advertised_addrs=(tcp("node1"),))
    v = library.circuit_addrs_withdrawn("node3", 30)(dataclasses.replace(o, status=st))
    assert not v.ok and "node1 lost node7 too" in v.detail


def ident(addrs: list[str], before: list[str], after: list[str], ok: bool = True) -> dict[str, Any]:
    return {
        "from": "node6",
        "target": "node0",
        "via": "node7",
        "mode": "identify",
        "at": 33.0,
        "ok": ok,
        "error": None if ok else "upgrade over the circuit: no answer within 10s",
        "listen_addrs": addrs,
        "held_before": before,
        "held_after": after,
    }


def test_identify_agrees_with_the_reservations() -> None:
    check = library.identify_agrees("ids")
    both = [PID["node3"], PID["node7"]]
    addrs = [tcp("node0"), circ("node3", "node0"), circ("node7", "node0")]
    v = check(obs(marks={"ids": [ident(addrs, both, both)]}))
    assert v.ok, v
    assert "identify tells peers circuit addresses through node3+node7, exactly" in v.detail
    # after node3 died: identify still names it
    v = check(obs(marks={"ids": [ident(addrs, [PID["node7"]], [PID["node7"]])]}))
    assert not v.ok and "rust-libp2p #6165" in (v.cause or "")
    assert "identify names relays node3+node7, reservations held node7 (before)" in v.detail
    # a held reservation missing from identify
    v = check(obs(marks={"ids": [ident(addrs[:2], both, both)]}))
    assert not v.ok and "rust-libp2p #4618" in (v.cause or "")
    v = check(obs(marks={"ids": [ident([], both, both, ok=False)]}))
    assert not v.ok and v.data["final"] and "no answer within 10s" in v.detail
    v = check(obs())
    assert not v.ok and "no identify probe recorded as 'ids'" in v.detail


# ------------------------------------------------------------------ nat-rebind
REBIND = {"rebind_at": 20.0}


def _accepted(ts: float, relay: str) -> dict[str, Any]:
    return ev("reservation_accepted", ts, relay=PID[relay])


def _opened(ts: float, relay: str) -> dict[str, Any]:
    return ev("connection_opened", ts, peer=PID[relay], kind="direct")


def test_reservations_recovered_through_the_rebound_router_only() -> None:
    """Network a's clients (node0..node2) hold node3 (on a itself) and node7 (through
    router-a): node7 must be on a connection from after the mark, node3 need not."""
    check = library.reservations_recovered("a", "rebind_at")
    before = {c: [_accepted(5.0, "node3"), _accepted(5.0, "node7")] for c in ("node0", "node1")}
    v = check(obs(events=before, marks=REBIND))
    assert not v.ok and "node0->node7 still listed as held, on no connection opened" in v.detail
    assert "node3" not in v.detail.split("missing")[1].split(";")[0]
    after = {
        "node0": [*before["node0"], _accepted(27.5, "node7")],  # reserved again
        "node1": [*before["node1"], _opened(21.0, "node7")],  # kept on a new connection
        "node2": [_opened(22.0, "node7"), _accepted(22.1, "node7")],
    }
    v = check(obs(events=after, marks=REBIND))
    assert v.ok, v
    assert "node0->node7 reserved again at +7.5s" in v.detail
    assert "node1->node7 kept on a new connection from +1.0s" in v.detail
    assert v.since == 27.5


def test_reservations_recovered_but_not_held_and_a_wrong_network() -> None:
    check = library.reservations_recovered("a", "rebind_at")
    st = healthy_statuses()
    st["node0"]["reservations"] = [
        r for r in st["node0"]["reservations"] if r["relay"] != PID["node7"]
    ]
    events = {c: [_accepted(27.5, "node7")] for c in ("node0", "node1", "node2")}
    v = check(obs(st, events, marks=REBIND))
    assert not v.ok and "node0->node7 reserved again at +7.5s but not held now" in v.detail
    v = library.reservations_recovered("public", "rebind_at")(obs(marks=REBIND))
    assert not v.ok and v.data["final"] and "no relay client lives behind" in v.detail
    v = check(obs())
    assert not v.ok and "no time mark 'rebind_at'" in v.detail
