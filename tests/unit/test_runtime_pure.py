"""Pure parts of the runtime: waiting, parsing what containers print, the control-path check,
the status table and the connection graph. Docker-side behaviour is in tests/docker/."""

from __future__ import annotations

import xml.dom.minidom
from pathlib import Path
from typing import Any

import pytest

from harness.client import NodeStatus, TestnetStatus
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology
from harness.run import audit, graph
from harness.wait import WaitTimeout, wait_until
from node.contract import Status

MINI = Path(__file__).resolve().parents[2] / "scenarios" / "mini.yaml"


@pytest.fixture(scope="module")
def mini() -> Testnet:
    return build_testnet(load_topology(MINI), "unit-mini")


# --------------------------------------------------------------------------- wait


def test_wait_until_returns_what_the_probe_saw_when_done() -> None:
    calls = iter(range(10))
    seen = wait_until(
        lambda: ((n := next(calls)) >= 3, n),
        what="n >= 3",
        deadline_s=5,
        likely_cause="-",
        interval_s=0.001,
    )
    assert seen == 3


def test_wait_timeout_names_what_deadline_last_seen_and_cause() -> None:
    with pytest.raises(WaitTimeout) as err:
        wait_until(
            lambda: (False, "2/3 ready: node4 (connection refused)"),
            what="every node to answer /status",
            deadline_s=0.2,
            likely_cause="node4 crashed",
            interval_s=0.05,
        )
    text = str(err.value)
    assert "every node to answer /status" in text
    assert "deadline 0.2s" in text
    assert "last seen:    2/3 ready: node4 (connection refused)" in text
    assert "likely cause: node4 crashed" in text
    assert err.value.polls >= 2


def test_wait_until_lets_probe_errors_through() -> None:
    def probe() -> tuple[bool, str]:
        raise RuntimeError("container exited")

    with pytest.raises(RuntimeError, match="container exited"):
        wait_until(probe, what="x", deadline_s=1, likely_cause="-")


# --------------------------------------------------------------------------- parsing


def test_parse_routes() -> None:
    text = (
        "default via 172.28.1.254 dev eth0 \n"
        "172.28.1.0/24 dev eth0 proto kernel scope link src 172.28.1.10 \n"
    )
    routes = audit.parse_routes(text)
    assert routes[0]["dest"] == "default" and routes[0]["via"] == "172.28.1.254"
    assert routes[1]["dev"] == "eth0" and "via" not in routes[1]


# --------------------------------------------------------------------------- control path


def _status(tn: Testnet, name: str, **over: Any) -> NodeStatus:
    node = tn.node(name)
    st: dict[str, Any] = {
        "peer_id": node.peer_id,
        "name": name,
        "listen_addrs": list(node.listen_addrs),
        "connections": [],
        "reservations": [],
        "circuits": [],
        "dcutr": [],
        "chain": {"height": 5, "sync_state": "synced"},
    }
    st.update(over)
    return NodeStatus(node, Status.from_json(st))


def test_control_path_clean_when_connections_use_data_networks(mini: Testnet) -> None:
    relay = mini.node("relay")
    conn = {"peer": relay.peer_id, "remote_addr": f"{relay.listen_addrs[0]}", "kind": "direct"}
    snap = TestnetStatus(mini.name, [_status(mini, "val-a", connections=[conn])])
    assert audit.control_path_violations(mini, snap) == []


def test_control_path_flags_p2p_over_control_and_outside_addresses(mini: Testnet) -> None:
    relay = mini.node("relay")
    over_control = {
        "peer": relay.peer_id,
        "remote_addr": f"/ip4/{relay.control_ip}/tcp/4001",
        "kind": "direct",
    }
    outside = {"peer": "12D3KooWx", "remote_addr": "/ip4/8.8.8.8/tcp/4001", "kind": "direct"}
    bad_listen = [f"/ip4/{mini.node('val-a').control_ip}/tcp/4001"]
    snap = TestnetStatus(
        mini.name,
        [_status(mini, "val-a", connections=[over_control, outside], listen_addrs=bad_listen)],
    )
    findings = audit.control_path_violations(mini, snap)
    assert any("over the control network" in f for f in findings), findings
    assert any("8.8.8.8" in f and "outside" in f for f in findings), findings
    assert any("listens on" in f for f in findings), findings


# --------------------------------------------------------------------------- status + graph


def _snapshot(mini: Testnet) -> TestnetStatus:
    relay, a, b = mini.node("relay"), mini.node("val-a"), mini.node("val-b")
    circuit = f"{relay.listen_addrs[0]}/p2p/{relay.peer_id}/p2p-circuit"
    a_conns = [
        {"peer": relay.peer_id, "remote_addr": relay.listen_addrs[0], "kind": "direct"},
        {"peer": b.peer_id, "remote_addr": circuit, "kind": "relayed", "relay": relay.peer_id},
        {"peer": b.peer_id, "remote_addr": "/ip4/172.28.0.253/tcp/4001", "kind": "direct"},
    ]
    return TestnetStatus(
        mini.name,
        [
            _status(mini, "relay", circuits=[{"src": a.peer_id, "dst": b.peer_id}]),
            _status(
                mini,
                "val-a",
                connections=a_conns,
                reservations=[{"relay": relay.peer_id}],
                dcutr=[{"peer": b.peer_id, "outcome": "succeeded"}],
            ),
            NodeStatus(b, error="timeout"),
        ],
    )


def test_status_table_and_json(mini: Testnet) -> None:
    snap = _snapshot(mini)
    table = snap.table()
    row = next(line for line in table.splitlines() if line.startswith("val-a"))
    assert row.split()[:10] == ["val-a", "validator", "a", "5", "2", "1", "2", "1", "0", "1/0"]
    assert "DOWN (timeout)" in table
    assert "2/3 nodes answering" in table
    summary = snap.nodes[1].summary()
    assert summary["connections"] == {"direct": 2, "relayed": 1}
    assert summary["dcutr"] == {"succeeded": 1}


def test_graph_dedupes_edges_and_draws_each_kind(mini: Testnet) -> None:
    snap = _snapshot(mini)
    g = graph.build_graph(snap, mini)
    kinds = sorted((e.a, e.b, e.kind) for e in g.edges)
    assert kinds == [
        ("relay", "val-a", "direct"),
        ("relay", "val-a", "reservation"),
        ("val-a", "val-b", "direct"),
        ("val-a", "val-b", "relayed"),
    ]
    assert g.down == {"val-b"}
    svg = graph.to_svg(g)
    xml.dom.minidom.parseString(svg)  # well-formed
    assert svg.count('stroke-dasharray="8 5"') >= 2  # relayed edge + legend
    dot = graph.to_dot(g)
    assert '"val-a" -- "val-b" [style=dashed' in dot
    assert 'subgraph "cluster_public"' in dot


# --------------------------------------------------------------------------- perturb layout


def test_partition_sees_a_network_through_its_router_and_sentries() -> None:
    from harness.run import perturb

    tn = build_testnet(load_topology(MINI.parent / "sentry.yaml"), "unit-sentry")
    b_from_a = perturb.seen_as(tn, "b", exclude=("a", "b"))
    router_b, node7 = tn.router("router-b"), tn.node("node7")
    assert b_from_a[0] == tn.network("b").subnet
    assert f"{router_b.public_ip}/32" in b_from_a  # NATed traffic from b
    assert f"{node7.addresses['public']}/32" in b_from_a  # b's sentry on the public side
    # a router between a and public is "on both": it is never told to drop its own side
    a_from_public = perturb.seen_as(tn, "a", exclude=("a", "public"))
    assert f"{tn.node('node3').addresses['public']}/32" not in a_from_public
    with pytest.raises(Exception, match="control network"):
        perturb.require_net(tn, "control")
