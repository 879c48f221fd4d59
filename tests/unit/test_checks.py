"""The scenario checks on recorded-shape status snapshots: each passes on the state it
names, and each failure names the failure mode it exposes (the seed's list)."""

from __future__ import annotations

from test_checks_data import PID, ROUTER, connect, ev, healthy_statuses, obs, reserve, tcp

from harness.checks import chain, relay
from harness.checks.expect import impossible

# --------------------------------------------------------------------------- reservations


def test_reservations_hold_when_every_client_reserved_via_identify() -> None:
    v = relay.reservations(obs())
    assert v.ok, v
    assert "node0->node3+node7" in v.detail
    assert v.data["held"]["node4"] == ["node3", "node7"]


def test_reservations_since_is_last_client_first_acceptance() -> None:
    events = {
        n: [ev("reservation_accepted", 2.0 + i, relay=PID["node3"], addrs=[], expires_at=0)]
        for i, n in enumerate(["node0", "node1", "node2", "node4", "node5", "node6"])
    }
    v = relay.reservations(obs(events=events))
    assert v.ok
    # status accepted_at 101.0 on the node clock is harness t 11.0; events are earlier
    assert v.since == 7.0


def test_reservations_no_candidate_means_no_ip_path() -> None:
    st = healthy_statuses()
    st["node4"]["reservations"] = []
    st["node4"]["relay_candidates"] = []
    v = relay.reservations(obs(st))
    assert not v.ok
    assert "node4: no reservations" in v.detail
    assert "no IP path" in (v.cause or "")


def test_reservations_identified_but_never_reserved_is_the_seed_bug() -> None:
    st = healthy_statuses()
    st["node0"]["reservations"] = []
    v = relay.reservations(obs(st))
    assert not v.ok
    assert "RESERVE" in (v.cause or "") and "listen_on" in (v.cause or "")


def test_reservations_denied_reason_is_reported() -> None:
    st = healthy_statuses()
    st["node0"]["reservations"] = []
    events = {"node0": [ev("reservation_denied", 3.0, relay=PID["node3"], reason="RESOURCE_LIMIT")]}
    v = relay.reservations(obs(st, events))
    assert "RESOURCE_LIMIT" in (v.cause or "")


def test_reservation_without_addresses_does_not_count() -> None:
    st = healthy_statuses()
    st["node1"]["reservations"] = []
    st["node1"]["relay_candidates"] = []
    reserve(st["node1"], "node3", addrs=[])
    v = relay.reservations(obs(st))
    assert not v.ok
    assert "carries no addresses" in v.detail
    assert "NoAddressesInReservation" in (v.cause or "")


def test_reservation_on_relay_configured_with_peer_id_does_not_count() -> None:
    st = healthy_statuses()
    for c in st["node2"]["relay_candidates"]:
        c["addr"] += f"/p2p/{c['peer']}"
        c["source"] = "config"
    v = relay.reservations(obs(st))
    assert not v.ok
    assert "configured with its peer id" in v.detail


def test_reservations_missing_status_names_the_node() -> None:
    st = healthy_statuses()
    del st["node5"]
    v = relay.reservations(obs(st))
    assert not v.ok
    assert "node5" in (v.cause or "") and "connection refused" in (v.cause or "")


# --------------------------------------------------------------------------- relayed circuit


def test_relayed_circuit_seen_in_status() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    v = relay.relayed_circuit(obs(st))
    assert v.ok, v
    assert "node0 (a) <-> node4 (b) via node7" in v.detail


def test_relayed_circuit_seen_only_in_history_still_counts() -> None:
    # the relayed connection was already upgraded and closed before the poll
    events = {
        "node1": [
            ev("connection_opened", 12.5, peer=PID["node5"], remote_addr="x", kind="relayed"),
            ev("connection_closed", 14.0, peer=PID["node5"], remote_addr="x", kind="relayed"),
        ],
        "node3": [ev("circuit_opened", 12.4, src=PID["node1"], dst=PID["node5"], side="relay")],
    }
    v = relay.relayed_circuit(obs(events=events))
    assert v.ok
    assert v.since == 12.4
    assert "via node3" in v.detail


def test_relayed_circuit_no_common_relay_is_the_seed_topology() -> None:
    st = healthy_statuses()
    for n in ("node0", "node1", "node2"):
        st[n]["reservations"] = [r for r in st[n]["reservations"] if r["relay"] == PID["node3"]]
    for n in ("node4", "node5", "node6"):
        st[n]["reservations"] = [r for r in st[n]["reservations"] if r["relay"] == PID["node7"]]
    v = relay.relayed_circuit(obs(st))
    assert not v.ok
    assert "no common relay" in (v.cause or "")


def test_relayed_circuit_without_advertised_circuit_address() -> None:
    st = healthy_statuses()
    for s in st.values():
        s["advertised_addrs"] = [a for a in s["advertised_addrs"] if "p2p-circuit" not in a]
    v = relay.relayed_circuit(obs(st))
    assert not v.ok
    assert "advertises no /p2p-circuit" in (v.cause or "")


def test_relayed_circuit_common_relay_but_nobody_dialed() -> None:
    v = relay.relayed_circuit(obs())
    assert not v.ok
    assert "nobody dialed" in (v.cause or "")


# --------------------------------------------------------------------------- DCUtR


def _upgraded() -> tuple[dict, dict]:
    st = healthy_statuses()
    connect(st["node0"], "node4", "direct", remote=f"/ip4/{ROUTER['b']}/tcp/4001")
    connect(st["node4"], "node0", "direct", remote=f"/ip4/{ROUTER['a']}/tcp/4001")
    events = {
        "node0": [
            ev("connection_opened", 12.0, peer=PID["node4"], remote_addr="c", kind="relayed"),
            ev("dcutr_started", 12.1, peer=PID["node4"], role="initiator"),
            ev(
                "dcutr_succeeded",
                12.5,
                peer=PID["node4"],
                role="initiator",
                duration_s=0.4,
                addr=f"/ip4/{ROUTER['b']}/tcp/4001",
            ),
            ev("connection_closed", 12.7, peer=PID["node4"], remote_addr="c", kind="relayed"),
        ]
    }
    return st, events


def test_dcutr_upgrade_holds_across_both_nats() -> None:
    st, events = _upgraded()
    v = relay.dcutr_upgrade(obs(st, events))
    assert v.ok, v
    assert "in 0.40s" in v.detail and "router of b" in v.detail
    assert v.since == 12.7


def test_dcutr_upgrade_fails_while_relayed_connection_stays_open() -> None:
    st, events = _upgraded()
    events["node0"] = events["node0"][:-1]
    connect(st["node0"], "node4", "relayed", relay="node7")
    v = relay.dcutr_upgrade(obs(st, events))
    assert not v.ok
    assert "never closed" in (v.cause or "")


def test_dcutr_upgrade_failure_reports_reasons() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    events = {
        "node0": [
            ev(
                "dcutr_failed",
                20.0,
                peer=PID["node4"],
                role="initiator",
                reason="timeout",
                duration_s=5,
            )
        ]
    }
    v = relay.dcutr_upgrade(obs(st, events))
    assert not v.ok
    assert "timeout" in (v.cause or "") and "symmetric" in (v.cause or "")


def test_dcutr_never_started() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    v = relay.dcutr_upgrade(obs(st))
    assert not v.ok
    assert "never started" in (v.cause or "")


def test_dcutr_fails_holds_with_reason_and_relayed_traffic() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    events = {
        "node4": [
            ev(
                "dcutr_failed",
                20.0,
                peer=PID["node0"],
                role="responder",
                reason="no_dial_succeeded",
            )
        ]
    }
    v = relay.dcutr_fails(obs(st, events))
    assert v.ok, v
    assert "no_dial_succeeded" in v.detail and "relayed via node7" in v.detail


def test_dcutr_fails_does_not_hold_when_punch_succeeded() -> None:
    st, events = _upgraded()
    v = relay.dcutr_fails(obs(st, events))
    assert not v.ok
    assert "random-fully" in (v.cause or "")


# --------------------------------------------------------------------------- failover


def test_failover_requires_dead_relay_gone_and_another_held() -> None:
    marks = {"reserved_on": {"node3": ["node0", "node4"]}, "killed_at": {"node3": 40.0}}
    st = healthy_statuses()
    del st["node3"]
    v = relay.reserved_elsewhere("node3")(obs(st, marks=marks))
    assert not v.ok
    assert "still lists a reservation on dead node3" in v.detail
    for n in ("node0", "node4"):
        st[n]["reservations"] = [r for r in st[n]["reservations"] if r["relay"] != PID["node3"]]
    events = {"node0": [ev("reservation_accepted", 45.0, relay=PID["node7"])]}
    v = relay.reserved_elsewhere("node3")(obs(st, events, marks))
    assert v.ok, v
    assert "node0->node7 (new)" in v.detail and "node4->node7 (already held)" in v.detail


def test_reservations_back_needs_a_new_acceptance_after_restart() -> None:
    marks = {"reserved_on": {"node3": ["node0"]}, "restarted_at": {"node3": 60.0}}
    v = relay.reservations_back("node3")(obs(marks=marks))
    assert not v.ok and "no reservation_accepted since its restart" in v.detail
    events = {"node0": [ev("reservation_accepted", 61.0, relay=PID["node3"])]}
    v = relay.reservations_back("node3")(obs(events=events, marks=marks))
    assert v.ok and v.since == 61.0


def test_partitioned() -> None:
    st = healthy_statuses()
    connect(st["node3"], "node7", "direct")
    v = relay.partitioned(obs(st))
    assert not v.ok and "node3->node7 direct" in v.detail
    assert relay.partitioned(obs()).ok


# --------------------------------------------------------------------------- chain


def _committed(heights: range, proposers: list[str]) -> list[dict]:
    return [
        ev(
            "block_committed",
            float(h),
            height=h,
            hash=f"h{h}",
            proposer=PID[proposers[h % len(proposers)]],
        )
        for h in heights
    ]


def test_consensus_with_proposers_in_both_networks() -> None:
    vals = ["node0", "node1", "node4", "node5"]
    events = {v: _committed(range(1, 11), vals) for v in vals}
    v = chain.consensus(5)(obs(events=events))
    assert v.ok, v
    assert "a: node0,node1" in v.detail and "b: node4,node5" in v.detail


def test_consensus_proposals_from_one_side_only() -> None:
    vals = ["node0", "node1", "node4", "node5"]
    events = {v: _committed(range(1, 11), ["node0", "node1"]) for v in vals}
    v = chain.consensus(5)(obs(events=events))
    assert not v.ok and "only from a" in v.detail


def test_consensus_stuck_points_at_quorum() -> None:
    st = healthy_statuses()
    for s in st.values():
        s["chain"]["height"] = 0
    v = chain.consensus(5)(obs(st))
    assert not v.ok and "quorum" in (v.cause or "")


def _synced(peers: list[dict]) -> dict:
    st = healthy_statuses()
    st["node4"]["chain"]["sync_peers"] = peers
    st["node4"]["chain"]["height"] = 40
    return st


MARKS = {"sync_target": {"node4": 35}, "restarted_at": {"node4": 50.0}}


def test_cross_network_sync_over_relay_from_a_peer_only_on_a() -> None:
    st = _synced(
        [
            {
                "peer": PID["node1"],
                "kind": "relayed",
                "blocks": 30,
                "bytes": 9,
                "from_height": 1,
                "to_height": 30,
            },
            {
                "peer": PID["node5"],
                "kind": "direct",
                "blocks": 10,
                "bytes": 9,
                "from_height": 31,
                "to_height": 40,
            },
        ]
    )
    connect(st["node4"], "node1", "relayed", relay="node7")
    events = {"node4": [ev("sync_completed", 58.0, from_height=1, to_height=40, peers=[])]}
    v = chain.cross_network_sync("node4")(obs(st, events, MARKS))
    assert v.ok, v
    assert "node1 [a only] 30 blocks 1..30 relayed via relay node7" in v.detail
    assert v.since == 58.0


def test_cross_network_sync_only_local_peers_is_the_seed_failure() -> None:
    st = _synced(
        [
            {
                "peer": PID["node5"],
                "kind": "direct",
                "blocks": 40,
                "bytes": 9,
                "from_height": 1,
                "to_height": 40,
            }
        ]
    )
    v = chain.cross_network_sync("node4")(obs(st, marks=MARKS))
    assert not v.ok
    assert "nothing crossed the NAT" in (v.cause or "")


def test_cross_network_sync_direct_needs_upgrade_evidence() -> None:
    peers = [
        {
            "peer": PID["node0"],
            "kind": "direct",
            "blocks": 40,
            "bytes": 9,
            "from_height": 1,
            "to_height": 40,
        }
    ]
    st = _synced(peers)
    connect(st["node4"], "node0", "direct", remote=f"/ip4/{ROUTER['a']}/tcp/4001")
    v = chain.cross_network_sync("node4")(obs(st, marks=MARKS))
    assert v.ok and "through router of a" in v.detail


def test_cross_network_sync_sentry_serving_fails() -> None:
    peers = [
        {
            "peer": PID["node7"],
            "kind": "direct",
            "blocks": 40,
            "bytes": 9,
            "from_height": 1,
            "to_height": 40,
        },
        {
            "peer": PID["node1"],
            "kind": "relayed",
            "blocks": 1,
            "bytes": 9,
            "from_height": 1,
            "to_height": 1,
        },
    ]
    v = chain.cross_network_sync("node4")(obs(_synced(peers), marks=MARKS))
    assert not v.ok and "serve_sync=false" in (v.cause or "")


def test_cross_network_sync_not_caught_up() -> None:
    st = _synced([])
    st["node4"]["chain"]["height"] = 3
    v = chain.cross_network_sync("node4")(obs(st, marks=MARKS))
    assert not v.ok and "no peer that serves sync" in (v.cause or "")


def test_no_forks() -> None:
    events = {
        "node0": _committed(range(1, 6), ["node0"]),
        "node4": _committed(range(1, 6), ["node0"]),
    }
    assert chain.no_forks(obs(events=events)).ok
    events["node4"][2] = ev("block_committed", 3.0, height=3, hash="evil", proposer=PID["node4"])
    v = chain.no_forks(obs(events=events))
    assert not v.ok and "first at 3" in v.detail


def test_converged_needs_every_node_past_the_heal() -> None:
    marks = {"healed_heights": {"node0": 8, "node4": 7}}
    v = chain.converged(3)(obs(marks=marks))  # all at 10 with tip h10 < 8 + 3
    assert not v.ok
    st = healthy_statuses()
    for s in st.values():
        s["chain"]["height"] = 12
        s["chain"]["tip_hash"] = "h12"
    assert chain.converged(3)(obs(st, marks=marks)).ok


def test_converged_leaves_out_nodes_that_run_no_chain() -> None:
    """A node whose /status says `chain: null` has no height: not a laggard. A rust node
    that runs the chain is checked like any other; a node with no status stays missing."""
    import dataclasses

    marks = {"healed_heights": {"node0": 8, "node4": 7}}
    st = healthy_statuses()
    for s in st.values():
        s["chain"]["height"] = 12
        s["chain"]["tip_hash"] = "h12"
    st["node6"]["chain"] = None
    o = obs(st, marks=marks)
    assert "node6" not in o.chain_nodes()
    assert chain.converged(3)(o).ok
    # impl: rust with a chain: a laggard fails the check like a python node would
    st = healthy_statuses()
    for s in st.values():
        s["chain"]["height"] = 12
        s["chain"]["tip_hash"] = "h12"
    st["node6"]["chain"]["height"] = 5
    o = obs(st, marks=marks)
    o.nodes["node6"] = dataclasses.replace(o.nodes["node6"], impl="rust")
    assert "node6" in o.chain_nodes()
    assert not chain.converged(3)(o).ok
    # no status at all: still a chain node, reported missing
    del st["node6"]
    o = obs(st, marks=marks)
    assert "node6" in o.chain_nodes()
    v = chain.converged(3)(o)
    assert not v.ok and "node6" in v.detail


# --------------------------------------------------------------------------- expected negatives


def test_impossible_passes_with_reach_reason_when_not_observed() -> None:
    check = impossible(relay.relayed_circuit, "relayed_circuit")
    v = check(obs(marks={"reach": {"relayed_circuit": "node0-node4: no relay both can use"}}))
    assert v.ok
    assert "no relay both can use" in v.detail


def test_impossible_fails_final_when_it_happened() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    v = impossible(relay.relayed_circuit, "relayed_circuit")(
        obs(st, marks={"reach": {"relayed_circuit": "no path"}})
    )
    assert not v.ok and v.data.get("final")


def test_impossible_fails_when_reach_finds_a_path() -> None:
    v = impossible(relay.relayed_circuit, "relayed_circuit")(obs(marks={"reach": {}}))
    assert not v.ok and "finds a path" in v.detail


def test_impossible_waits_until_decisive() -> None:
    check = impossible(
        chain.cross_network_sync("node4"), "cross_network_sync", chain.caught_up("node4")
    )
    marks = {"reach": {"cross_network_sync": "no path"}, "sync_target": {"node4": 50}}
    v = check(obs(marks=marks))
    assert not v.ok and "not yet decisive" in v.detail
    marks["sync_target"]["node4"] = 5
    assert check(obs(marks=marks)).ok


def test_tcp_helper_shape() -> None:
    assert tcp("node3") == "/ip4/10.0.0.3/tcp/4001"


def test_no_forks_needs_a_height_above_genesis() -> None:
    st = healthy_statuses()
    for s in st.values():
        s["chain"]["height"] = 0
        s["chain"]["tip_hash"] = "genesis"
    v = chain.no_forks(obs(st))
    assert not v.ok and "nothing to compare" in v.detail


def test_consensus_stuck_shows_rounds() -> None:
    st = healthy_statuses()
    for s in st.values():
        s["chain"].update(height=0, round=13, step="prevote")
    v = chain.consensus(5)(obs(st))
    assert not v.ok and "node0 round 13 prevote" in v.detail


def test_consensus_stuck_names_the_validator_nobody_hears() -> None:
    """node0 voted, but no other validator at its height and round has its vote, and it
    knows no subscriber of the chain topic (the 2026-12-07 CI failures' shape)."""
    st = healthy_statuses()
    for name, s in st.items():
        if "chain" not in s:
            continue
        others = ["node1", "node4", "node5"]
        heard = {"proposal": [], "prevote": others if name != "node0" else ["node0", *others]}
        s["chain"].update(height=0, round=6, step="prevote", heard=heard, topic_peers=["x"])
    st["node0"]["chain"]["topic_peers"] = []
    v = chain.consensus(5)(obs(st))
    assert not v.ok
    assert (v.cause or "").startswith(
        "no other validator has the votes of node0 (it knows no subscriber of the chain topic)"
    ), v.cause
    assert "heard proposal none, prevotes node0+node1+node4+node5" in v.detail
    st["node1"]["chain"]["heard"]["prevote"].append("node0")  # one has it: not unheard
    assert "node0" not in (chain.consensus(5)(obs(st)).cause or "")


def test_dcutr_cause_prefers_failures_over_pairs_not_started() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    connect(st["node1"], "node5", "relayed", relay="node3")
    events = {"node1": [ev("dcutr_failed", 20.0, peer=PID["node5"], reason="stream_failed")]}
    v = relay.dcutr_upgrade(obs(st, events))
    assert not v.ok and "stream_failed (node1<->node5)" in (v.cause or "")


def test_dcutr_fails_waits_for_the_final_attempt_when_the_node_says() -> None:
    st = healthy_statuses()
    connect(st["node0"], "node4", "relayed", relay="node7")
    first = ev("dcutr_failed", 20.0, peer=PID["node4"], reason="timeout", final=False)
    assert not relay.dcutr_fails(obs(st, {"node0": [first]})).ok
    last = ev("dcutr_failed", 40.0, peer=PID["node4"], reason="timeout", final=True)
    v = relay.dcutr_fails(obs(st, {"node0": [first, last]}))
    assert v.ok and "gave up" in v.detail and v.since == 40.0


def test_reservations_back_says_when_the_relay_refuses() -> None:
    marks = {"reserved_on": {"node3": ["node0"]}, "restarted_at": {"node3": 60.0}}
    st = healthy_statuses()
    st["node0"]["reservations"] = []
    events = {
        "node0": [ev("reservation_denied", 70.0, relay=PID["node3"], reason="TooSlowError: ")]
    }
    v = relay.reservations_back("node3")(obs(st, events, marks))
    assert (
        not v.ok
        and "did ask again (1 RESERVE" in (v.cause or "")
        and "TooSlowError" in (v.cause or "")
    )


def test_reservations_cause_uses_the_model_reachability() -> None:
    st = healthy_statuses()
    st["node0"]["reservations"] = []
    st["node0"]["relay_candidates"] = []
    v = relay.reservations(obs(st, marks={"reach_relays": {"node0": ["node3", "node7"]}}))
    assert "although the topology gives it an IP path to node3, node7" in (v.cause or "")


def test_cross_network_sync_gives_up_once_sync_finished_locally() -> None:
    st = _synced(
        [
            {
                "peer": PID["node5"],
                "kind": "direct",
                "blocks": 40,
                "bytes": 9,
                "from_height": 1,
                "to_height": 40,
            }
        ]
    )
    v = chain.cross_network_sync("node4")(obs(st, marks=MARKS))
    assert not v.ok and not v.data.get("final")
    events = {"node4": [ev("sync_completed", 55.0, from_height=1, to_height=40, peers=[])]}
    v = chain.cross_network_sync("node4")(obs(st, events, MARKS))
    assert not v.ok and v.data.get("final") and "sync finished" in v.detail


def test_relayed_circuit_cause_names_lost_reservations() -> None:
    st = healthy_statuses()
    for n in ("node0", "node4"):
        st[n]["reservations"] = []
    events = {
        "node0": [ev("reservation_expired", 50.0, relay=PID["node3"], reason="connection_closed")]
    }
    st2 = {k: v for k, v in st.items() if k not in ("node1", "node5")}
    v = relay.relayed_circuit(obs(st2, events))
    assert not v.ok and "node0: node3 connection_closed" in (v.cause or "")


def test_consensus_since_is_when_the_last_validator_reached_the_height() -> None:
    vals = ["node0", "node1", "node4", "node5"]
    events = {v: _committed(range(1, 11), vals) for v in vals}
    events["node5"] = [{**e, "ts": e["ts"] + 2} for e in events["node5"]]
    v = chain.consensus(5)(obs(events=events))
    assert v.ok and v.since == 7.0  # node5 committed height 5 at 5.0 + 2


def test_reservations_back_names_clients_reaching_the_relay_only_through_a_circuit() -> None:
    marks = {"reserved_on": {"node3": ["node4"]}, "restarted_at": {"node3": 60.0}}
    st = healthy_statuses()
    st["node4"]["reservations"] = []
    st["node4"]["connections"] = [
        c for c in st["node4"]["connections"] if c["peer"] != PID["node3"]
    ]
    connect(st["node4"], "node3", "relayed", relay="node7")
    v = relay.reservations_back("node3")(obs(st, marks=marks))
    assert not v.ok
    assert "node4 reach node3 only through a relayed connection" in (v.cause or "")


def test_reservations_on_a_relay_before_it_is_killed() -> None:
    """relay-failover waits for this before killing node3: `reservations` alone held once
    with every client on node7 only, and then nothing failed over."""
    st = healthy_statuses()
    v = relay.reservations_on("node3")(obs(st))
    assert v.ok, v
    assert "every client that can reach node3 holds a reservation on it" in v.detail
    for name in ("node0", "node4"):
        st[name]["reservations"] = [
            r for r in st[name]["reservations"] if r["relay"] != PID["node3"]
        ]
    v = relay.reservations_on("node3")(obs(st))
    assert not v.ok and "not yet: node0, node4" in v.detail, v
    # the model says node4 cannot reach node3: it is not waited for
    v = relay.reservations_on("node3")(
        obs(st, marks={"reach_relays": {"node0": ["node3"], "node4": ["node7"]}})
    )
    assert not v.ok and v.detail.endswith("not yet: node0"), v


def _restarted(second: list[dict]) -> dict[str, list[dict]]:
    """node4 committed 1..6 in its first process (epoch 0), then `second` in epoch 1."""
    first = [{**e, "seq": i} for i, e in enumerate(_committed(range(1, 7), ["node0"]))]
    return {"node4": first + [{**e, "seq": i, "epoch": 1} for i, e in enumerate(second)]}


def test_blocks_kept_when_the_restarted_node_goes_on_above_its_store() -> None:
    went_on = [ev("sync_completed", 20.0, from_height=7, to_height=9)]
    v = chain.blocks_kept(obs(events=_restarted(went_on)))
    assert v.ok, v.detail
    assert "node4 epoch 1: had 6, went on at 7" in v.detail


def test_blocks_kept_fails_when_a_restart_fetched_a_committed_height_again() -> None:
    again = [ev("sync_completed", 20.0, from_height=5, to_height=9)]
    v = chain.blocks_kept(obs(events=_restarted(again)))
    assert not v.ok and "had 6, went on at 5" in v.detail
    recommitted = _committed(range(6, 8), ["node0"])
    assert not chain.blocks_kept(obs(events=_restarted(recommitted))).ok


def test_blocks_kept_needs_a_restart_to_judge() -> None:
    v = chain.blocks_kept(obs(events={"node4": _committed(range(1, 7), ["node0"])}))
    assert not v.ok and "nothing to compare" in v.detail


def _punched(duration: float, rtt: float | None) -> dict[str, list[dict[str, object]]]:
    ok = ev("dcutr_succeeded", 12.5, peer=PID["node4"], role="initiator", duration_s=duration)
    if rtt is not None:
        ok["rtt_s"] = rtt
    same_side = ev("dcutr_succeeded", 13.0, peer=PID["node1"], duration_s=9.0, rtt_s=0.001)
    return {"node0": [ok, same_side]}  # node0 and node1 share network a: not judged


def test_dcutr_within_rtts_bounds_each_cross_network_upgrade() -> None:
    check = relay.dcutr_within_rtts(1.0, 3)
    v = check(obs(events=_punched(1.5, 0.2)))  # bound 1.0 + 3 * 0.2 = 1.6 s
    assert v.ok, v
    assert "node0<->node4 1.50s (rtt 200 ms, bound 1.60s)" in v.detail
    v = check(obs(events=_punched(2.4, 0.2)))
    assert not v.ok and v.data["final"] and "1 of 1 upgrades past 1s + 3 RTTs" in v.detail
    v = check(obs(events=_punched(0.3, None)))  # no RTT reported: nothing to judge yet
    assert not v.ok and "no DCUtR upgrade with a duration and an RTT" in v.detail


def _stalled_upgrade(
    stream: float = 0.617, sync_read_at: float = 7048.9139 + 0.7617, with_responder: bool = True
) -> tuple[dict[str, dict[str, object]], dict[str, list[dict[str, object]]]]:
    """CI run 20261205T012258Z (latency-wan): node6 initiated the upgrade to node0 at node
    clock 7048.2047; the stream took 0.617 s to open and the SYNC, sent at +0.774 s, was
    read by node0 0.70 s later over a path whose CONNECT round trip had taken 0.150 s. The
    upgrade took 1.87 s, attempt 1. Both rows are on the shared clock, as the nodes report."""
    st = healthy_statuses()
    init_at, rtt = 7048.2047, 0.1496
    st["node6"]["dcutr"] = [
        {
            "peer": PID["node0"],
            "role": "initiator",
            "attempt": 1,
            "outcome": "succeeded",
            "duration_s": 1.87,
            "rtt_s": rtt,
            "at": init_at,
            "phases": {"stream": stream, "connect": stream + rtt, "sync": 0.774, "direct": 1.87},
        }
    ]
    resp_at = 7048.9139
    if with_responder:
        st["node0"]["dcutr"] = [
            {
                "peer": PID["node6"],
                "role": "responder",
                "attempt": 1,
                "outcome": "succeeded",
                "duration_s": 1.17,
                "at": resp_at,
                "phases": {"connect": 0.0021, "sync": round(sync_read_at - resp_at, 4)},
            }
        ]
    ok = ev(
        "dcutr_succeeded", 6960.0, peer=PID["node0"], role="initiator", duration_s=1.87, rtt_s=rtt
    )
    return st, {"node6": [ok]}


def test_dcutr_within_rtts_adds_the_relayed_paths_stall_read_from_both_ends() -> None:
    """The failing CI run's upgrade passes once the stall of the relayed path it had is
    counted: 1 s + 3 x 0.150 s + 0.47 s (stream open past one RTT) + 0.62 s (SYNC past half
    an RTT) = 2.54 s; the detail names the stall."""
    st, events = _stalled_upgrade()
    v = relay.dcutr_within_rtts(1.0, 3)(obs(st, events))
    assert v.ok, v
    assert (
        "node6<->node0 1.87s (rtt 150 ms, relayed path stalled 1.09s: stream open 0.62s, "
        "SYNC 0.70s one way; bound 2.54s)" in v.detail
    ), v.detail
    assert "(1 with the relayed path's stall added)" in v.detail


def test_dcutr_within_rtts_does_not_excuse_a_slow_punch_on_a_steady_path() -> None:
    """The same 1.87 s with a prompt stream open and SYNC: the time went after SYNC, in the
    punch (a timer or a retry), and is past 1 s + 3 RTTs."""
    steady = 7048.2047 + 0.774 + 0.075
    st, events = _stalled_upgrade(stream=0.14, sync_read_at=steady)
    v = relay.dcutr_within_rtts(1.0, 3)(obs(st, events))
    assert not v.ok and "1 of 1 upgrades past 1s + 3 RTTs" in v.detail, v
    assert "node6<->node0 1.87s (rtt 150 ms, bound 1.45s)" in v.detail, v.detail
    assert "timer or a retry" in (v.cause or "")


def test_dcutr_within_rtts_without_the_other_ends_row_counts_only_the_stream_open() -> None:
    """No responder row (a node without the API, or its rows rotated out): the SYNC cannot be
    timed, so only the initiator's own stream open is added: 1.45 + 0.47 = 1.92 s."""
    st, events = _stalled_upgrade(with_responder=False)
    v = relay.dcutr_within_rtts(1.0, 3)(obs(st, events))
    assert v.ok, v
    assert "stalled 0.47s: stream open 0.62s; bound 1.92s" in v.detail, v.detail
    st, events = _stalled_upgrade(stream=0.16, with_responder=False)
    assert not relay.dcutr_within_rtts(1.0, 3)(obs(st, events)).ok
