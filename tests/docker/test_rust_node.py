"""A rust-libp2p node in the Docker testnet: the sentry testnet with full node node6, behind
cone router b, switched to `impl: rust` (peers/rust in the rust node image).

What is shown: the harness starts and audits it like any node; its reservations pass the
harness's own check (harness/checks/relay.py), so a rust-libp2p client behind NAT reserves
on our Python sentry relays, found from the configured address without a peer id; its
/status is read through the harness client like a Python node's.
"""

from __future__ import annotations

import pytest

from harness.checks import relay as relay_checks
from harness.run.testnet import RunningTestnet

pytestmark = pytest.mark.docker

RUST_NODE = "node6"  # as the sentry_rust fixture (tests/docker/conftest.py) switches it
SENTRIES = ("node3", "node7")
RESERVATION_DEADLINE_S = 120.0  # the sentry scenario's own deadline for this check


def test_rust_node_runs_the_rust_image_with_the_node_setup(
    sentry_rust: RunningTestnet, rust_image: str
) -> None:
    tn = sentry_rust.testnet
    assert tn.rust_nodes == (RUST_NODE,)
    rust = sentry_rust.container(RUST_NODE)
    assert rust_image in rust.image.tags
    assert rust.labels["sentrynet.node"] == RUST_NODE
    assert rust.labels["sentrynet.peer-id"] == tn.node(RUST_NODE).peer_id
    python = sentry_rust.container("node2")
    assert rust_image not in python.image.tags
    assert sentry_rust.container("router-b").image.id == python.image.id


def test_rust_node_behind_nat_reserves_on_our_sentry_relays(sentry_rust: RunningTestnet) -> None:
    verdict = sentry_rust.wait_for(
        relay_checks.reservations, RESERVATION_DEADLINE_S, "every client holds a reservation"
    )
    held = verdict.data["held"]
    assert held[RUST_NODE], verdict.detail
    assert set(held[RUST_NODE]) <= set(SENTRIES)
    print(f"reservations: {verdict.detail}")


def test_rust_node_status_through_the_harness_client(sentry_rust: RunningTestnet) -> None:
    sentry_rust.wait_for(relay_checks.reservations, RESERVATION_DEADLINE_S)
    node = sentry_rust.testnet.node(RUST_NODE)
    status = sentry_rust.client(RUST_NODE).read_status()
    assert str(status.extra.get("implementation", "")).startswith("rust-libp2p")
    assert status.peer_id == node.peer_id
    assert [str(a) for a in status.listen_addrs] == list(node.listen_addrs)
    assert status.chain is not None and status.chain.error is None  # it runs the chain

    relay_ids = {sentry_rust.testnet.node(s).peer_id for s in SENTRIES}
    candidates = {c.peer: c for c in status.relay_candidates}
    assert status.reservations
    for res in status.reservations:  # on a sentry found from its configured address
        assert res.relay in relay_ids
        assert candidates[res.relay].source == "config"
        assert "/p2p/" not in str(candidates[res.relay].addr)
        assert res.addrs and all("/p2p-circuit" in str(a) for a in res.addrs)

    summary = sentry_rust.snapshot().by_name(RUST_NODE).summary()
    assert summary["ok"] and summary["height"] is not None and summary["reservations"] >= 1
