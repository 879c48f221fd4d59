"""Pair link conditions (topology `links:`, harness/model/links.py): validation, which
addresses and ports each end matches (behind NAT: its router's public address and the
peer's own ports), and the rules rendered into each node's netsetup.sh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.infra.render import render
from harness.model.links import LinkRule
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import TopologyError, parse_topology

SENTRY = Path("scenarios/sentry.yaml")


def sentry_with(links: Any, **networks: dict[str, Any]) -> str:
    doc = yaml.safe_load(SENTRY.read_text())
    doc["links"] = links
    for name, extra in networks.items():
        doc["networks"][name].update(extra)
    return yaml.safe_dump(doc)


def built(links: Any) -> Testnet:
    return build_testnet(parse_topology(sentry_with(links), "x.yaml"))


def test_a_link_across_two_cone_routers_matches_each_peer_by_its_router_and_ports() -> None:
    tn = built([{"between": ["node0", "node4"], "latency_ms": 80, "jitter_ms": 5, "loss_pct": 2}])
    node0, node4 = tn.node("node0"), tn.node("node4")
    assert node0.port_range is not None and node4.port_range is not None
    router_b, router_a = tn.router("router-b").public_ip, tn.router("router-a").public_ip
    assert node0.links == (
        LinkRule(
            "node4",
            router_b,
            ((node4.p2p_port, node4.p2p_port), node4.port_range),
            80,
            5,
            2,
        ),
    )
    assert node4.links[0].ip == router_a and node4.links[0].ports[0] == (4001, 4001)
    assert node4.links[0].multiport == f"4001,{node0.port_range[0]}:{node0.port_range[1]}"
    assert tn.node("node1").links == () and tn.node("node5").links == ()  # their neighbours


def test_a_link_on_a_shared_network_or_to_a_public_address_matches_the_address() -> None:
    tn = built(
        [
            {"between": ["node0", "node3"], "latency_ms": 30},
            {"between": ["node3", "node7"], "loss_pct": 10},
        ]
    )
    assert [(r.peer, r.ip, r.ports) for r in tn.node("node0").links] == [
        ("node3", "172.20.0.13", ())
    ]
    assert [(r.peer, r.ip) for r in tn.node("node3").links] == [
        ("node0", "172.20.0.10"),
        ("node7", "10.0.0.7"),
    ]


def test_links_render_a_delay_out_and_a_loss_in_at_both_ends(tmp_path: Path) -> None:
    tn = built([{"between": ["node0", "node4"], "latency_ms": 80, "loss_pct": 2}])
    render(tn, tmp_path, "sentrynet-node:test")
    node0 = (tmp_path / "nodes/node0/netsetup.sh").read_text()
    b, ports = tn.router("router-b").public_ip, tn.node("node0").links[0].multiport
    assert "python3 /config/sn_delayer.py 800 80.0 0.0 " in node0
    for proto in ("tcp", "udp"):
        assert (
            f"iptables -t mangle -A OUTPUT -d {b} -p {proto} -m multiport --dports {ports} "
            '-m comment --comment "sn:link:node4" -j NFQUEUE --queue-num 800 --queue-bypass'
        ) in node0
        assert (
            f"iptables -I INPUT 1 -s {b} -p {proto} -m multiport --sports {ports} "
            "-m statistic --mode random --probability 0.0200"
        ) in node0
    assert (tmp_path / "nodes/node0/sn_delayer.py").exists()
    assert 'sn:link:node0"' in (tmp_path / "nodes/node4/netsetup.sh").read_text()
    assert "sn:link" not in (tmp_path / "nodes/node1/netsetup.sh").read_text()
    assert Testnet.load(tmp_path) == tn  # testnet.json keeps the rules


@pytest.mark.parametrize(
    ("links", "field", "problem"),
    [
        ({"between": ["node0"]}, "links[0].between", "expected two node names"),
        ({"between": ["node0", "node9"]}, "links[0].between[1]", "'node9' is not a node"),
        ({"between": ["node0", "node0"]}, "links[0].between", "the same node twice"),
        ({"between": ["node0", "node4"]}, "links[0]", "no condition"),
        (
            {"between": ["node0", "node4"], "latency_ms": 5, "jitter_ms": 9},
            "links[0].jitter_ms",
            "9 ms of jitter around a latency of 5 ms",
        ),
        ({"between": ["node0", "node4"], "delay": 5}, "links[0].delay", "unknown key"),
    ],
)
def test_a_bad_link_names_its_field(links: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(sentry_with([links]), "x.yaml")
    assert err.value.field == field and problem in err.value.problem, str(err.value)


def test_the_same_pair_twice_is_refused() -> None:
    twice = [
        {"between": ["node0", "node4"], "latency_ms": 5},
        {"between": ["node4", "node0"], "loss_pct": 1},
    ]
    with pytest.raises(TopologyError, match="node4 - node0 has a link already"):
        parse_topology(sentry_with(twice), "x.yaml")


def test_a_link_behind_symmetric_nat_is_refused_with_the_reason() -> None:
    text = sentry_with([{"between": ["node0", "node4"], "latency_ms": 5}], b={"nat": "symmetric"})
    with pytest.raises(TopologyError) as err:
        parse_topology(text, "x.yaml")
    assert "node4 is behind router-b (symmetric)" in str(err.value)
    assert "random ports" in str(err.value)


def test_analyse_lists_the_links() -> None:
    from harness.model.reach import analyse, format_report

    topo = parse_topology(
        sentry_with([{"between": ["node0", "node4"], "latency_ms": 80, "jitter_ms": 5}]), "x.yaml"
    )
    text = format_report(analyse(topo, ("node0", "node4")), topo)
    assert "  node0 - node4: 80 ms +- 5 ms" in text


def test_a_rebind_moves_the_router_its_networks_and_the_links_that_matched_it() -> None:
    """`perturb rebind` adopts Testnet.rebound: checks, later perturbations and testnet.json
    see the router's new address, and a link matched by it follows it."""
    tn = built([{"between": ["node0", "node4"], "latency_ms": 80}])
    old = tn.router("router-b").public_ip
    after = Testnet.from_dict(json_roundtrip(tn.rebound("b", "10.0.0.99")))
    assert after.router("router-b").public_ip == "10.0.0.99"
    assert after.network("b").router_public_ip == "10.0.0.99"
    assert after.node("node0").links[0].ip == "10.0.0.99"  # node4 is behind router-b
    assert after.node("node4").links == tn.node("node4").links  # router-a did not move
    assert after.router("router-a") == tn.router("router-a")
    assert after.network("a") == tn.network("a")
    assert old != "10.0.0.99" and tn.router("router-b").public_ip == old  # a new model
    with pytest.raises(Exception, match="no NAT router"):
        tn.rebound("public", "10.0.0.99")


def json_roundtrip(tn: Testnet) -> dict[str, Any]:
    return dict(json.loads(tn.to_json()))
