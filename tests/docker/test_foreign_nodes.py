"""Nodes we did not write, in the Docker testnet: the sentry testnet with full node node6
(behind cone router b) on the rust reference node (`impl: rust`, peers/rust in the rust
node image), and validator node5 with `api: none`: the harness never reads its API.

What is shown: the harness starts and audits both like any node (node5: ready when its TCP
table, read from the host, has a listener on its p2p port; audited from that table); the
rust client behind NAT reserves on our Python sentry relays, found from the configured
address without a peer id; the whole sentry scenario passes on this testnet, node5 judged
from the relays' records, the routers' conntrack and its TCP table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import scenarios
from harness.checks import Observation, Verdict
from harness.checks import relay as relay_checks
from harness.checks.outside import direct_through_nats
from harness.progress import Progress
from harness.run import runner
from harness.run.testnet import RunningTestnet

pytestmark = pytest.mark.docker

RUST_NODE = "node6"  # as the sentry_foreign fixture (tests/docker/conftest.py) switches it
API_LESS = "node5"  # the validator with `api: none`
SENTRIES = ("node3", "node7")
RESERVATION_DEADLINE_S = 120.0  # the sentry scenario's own deadline for this check


def test_rust_node_runs_the_rust_image_with_the_node_setup(
    sentry_foreign: RunningTestnet, rust_image: str
) -> None:
    tn = sentry_foreign.testnet
    assert tn.rust_nodes == (RUST_NODE,)
    assert [n.name for n in tn.nodes if not n.has_api] == [API_LESS]
    rust = sentry_foreign.container(RUST_NODE)
    assert rust_image in rust.image.tags
    assert rust.labels["sentrynet.node"] == RUST_NODE
    assert rust.labels["sentrynet.peer-id"] == tn.node(RUST_NODE).peer_id
    python = sentry_foreign.container("node2")
    assert rust_image not in python.image.tags
    assert sentry_foreign.container("router-b").image.id == python.image.id


def test_rust_node_behind_nat_reserves_on_our_sentry_relays(sentry_foreign: RunningTestnet) -> None:
    verdict = sentry_foreign.wait_for(
        relay_checks.reservations, RESERVATION_DEADLINE_S, "every client holds a reservation"
    )
    held = verdict.data["held"]
    assert held[RUST_NODE], verdict.detail
    assert set(held[RUST_NODE]) <= set(SENTRIES)
    print(f"reservations: {verdict.detail}")


def test_rust_node_status_through_the_harness_client(sentry_foreign: RunningTestnet) -> None:
    sentry_foreign.wait_for(relay_checks.reservations, RESERVATION_DEADLINE_S)
    node = sentry_foreign.testnet.node(RUST_NODE)
    status = sentry_foreign.client(RUST_NODE).read_status()
    assert str(status.extra.get("implementation", "")).startswith("rust-libp2p")
    assert status.peer_id == node.peer_id
    assert [str(a) for a in status.listen_addrs] == list(node.listen_addrs)
    assert status.chain is not None and status.chain.error is None  # it runs the chain

    relay_ids = {sentry_foreign.testnet.node(s).peer_id for s in SENTRIES}
    candidates = {c.peer: c for c in status.relay_candidates}
    assert status.reservations
    for res in status.reservations:  # on a sentry found from its configured address
        assert res.relay in relay_ids
        assert candidates[res.relay].source == "config"
        assert "/p2p/" not in str(candidates[res.relay].addr)
        assert res.addrs and all("/p2p-circuit" in str(a) for a in res.addrs)

    summary = sentry_foreign.snapshot().by_name(RUST_NODE).summary()
    assert summary["ok"] and summary["height"] is not None and summary["reservations"] >= 1


def test_api_less_node_is_never_asked_and_is_seen_from_outside(
    sentry_foreign: RunningTestnet,
) -> None:
    observer = sentry_foreign.observer
    assert API_LESS not in observer.clients
    obs = sentry_foreign.observe()
    assert API_LESS not in obs.status and API_LESS not in obs.unreachable
    node = sentry_foreign.testnet.node(API_LESS)
    listening = [
        s for s in obs.sockets[API_LESS] if s.state == "LISTEN" and s.local_port == node.p2p_port
    ]
    assert listening, f"{API_LESS}'s TCP table: {obs.sockets[API_LESS]}"
    assert set(obs.flows) == {"a", "b"}, obs.outside_errors
    assert sentry_foreign.snapshot().by_name(API_LESS).down is False


def _punched_to_api_less(obs: Observation) -> Verdict:
    """Some validator behind router a reaches node5 directly through both NATs, by the
    routers' conntrack alone (nothing from node5, nothing from the peer's API)."""
    found = {
        a: lines
        for a in ("node0", "node1")
        if (lines := [x for x in direct_through_nats(obs, a, API_LESS) if "conntrack" in x])
    }
    if not found:
        flows = {net: len(f) for net, f in obs.flows.items()}
        return Verdict(False, f"no joined flow to {API_LESS} yet (flows per router: {flows})")
    return Verdict(True, "; ".join(f"{a}: {lines[0]}" for a, lines in found.items()))


def test_sentry_scenario_passes_with_a_rust_node_and_an_api_less_validator(
    sentry_foreign: RunningTestnet, tmp_path: Path
) -> None:
    doc, run_dir = runner.execute(
        scenarios.get("sentry"), sentry_foreign, progress=Progress(), results_root=tmp_path
    )
    failed = [f"{c['name']}: {c['detail']}" for c in doc["checks"] if not c["passed"]]
    assert not failed, f"{run_dir}: " + " | ".join(failed)
    rows = {c["name"]: c["detail"] for c in doc["checks"]}
    assert f"{API_LESS}->" in rows["reservations"] and "relay records" in rows["reservations"]
    assert f"{API_LESS}: not readable" in rows["consensus"]
    # the hole punch to node5 shows in the routers' conntrack, without any node's word
    verdict = sentry_foreign.wait_for(_punched_to_api_less, 90, "conntrack shows a punch")
    print(f"outside evidence: {verdict.detail}")
