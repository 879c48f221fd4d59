"""Reachability verdicts from the model: the seed's failure and the sentry fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import analyse as analyse_cmd
from harness.model.reach import PairVerdict, analyse, ip_path, pair_verdict, reservable
from harness.model.topology import Topology, load_topology

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
A_SIDE = ("node0", "node1", "node2")
B_SIDE = ("node4", "node5", "node6")


def topo(name: str) -> Topology:
    return load_topology(SCENARIOS / f"{name}.yaml")


def verdict(t: Topology, a: str, b: str) -> PairVerdict:
    return pair_verdict(t, t.node(a), t.node(b))


def test_seed_exact_node0_and_node4_share_no_relay() -> None:
    t = topo("seed-exact")
    v = verdict(t, "node0", "node4")
    assert not v.direct and not v.circuit and not v.holepunch
    assert "no relay both can use" in v.circuit_reason
    assert "node0 reaches relays [node3]" in v.circuit_reason
    assert "node4 reaches relays [node7]" in v.circuit_reason
    assert "no router" in v.direct_reason


def test_seed_exact_every_cross_network_pair_is_cut() -> None:
    t = topo("seed-exact")
    for a in A_SIDE:
        assert reservable(t, t.node(a)) == ["node3"]
        assert ip_path(t, t.node(a), t.node("node7")) is None
        for b in B_SIDE:
            v = verdict(t, a, b)
            assert (v.direct, v.circuit, v.holepunch) == (False, False, False), v
    report = analyse(t)
    cut = {(p.a, p.b) for p in report.pairs if not p.direct and not p.circuit}
    assert cut == {(a, b) for a in A_SIDE for b in B_SIDE}


def test_seed_exact_sentries_reach_each_other_and_their_network() -> None:
    t = topo("seed-exact")
    v = verdict(t, "node3", "node7")
    assert v.direct and "same network public" in v.direct_reason
    assert verdict(t, "node0", "node3").direct
    # node7 reserves on node3, which node0 reaches: node0 can dial node7 through node3
    v = verdict(t, "node0", "node7")
    assert not v.direct and v.circuit and v.circuit_relays == ("node3",)


def test_sentry_cross_network_pairs_relay_and_hole_punch() -> None:
    t = topo("sentry")
    for a in A_SIDE:
        path = ip_path(t, t.node(a), t.node("node7"))
        assert path is not None and path.addr == "10.0.0.7" and path.via_router == "router-a"
        assert reservable(t, t.node(a)) == ["node3", "node7"]
        for b in B_SIDE:
            v = verdict(t, a, b)
            assert not v.direct, v
            assert v.circuit and set(v.circuit_relays) == {"node3", "node7"}, v
            assert v.holepunch and "cone" in v.holepunch_reason, v
    # nothing reaches into a private network from outside
    assert ip_path(t, t.node("node7"), t.node("node0")) is None


def test_symmetric_nat_relays_but_does_not_punch() -> None:
    t = topo("symmetric-nat")
    v = verdict(t, "node0", "node4")
    assert v.circuit and not v.holepunch
    assert "symmetric NAT" in v.holepunch_reason


def test_mini_validators_punch_through_the_public_relay() -> None:
    t = topo("mini")
    v = verdict(t, "val-a", "val-b")
    assert not v.direct and v.circuit and v.circuit_relays == ("relay",) and v.holepunch
    v = verdict(t, "relay", "val-a")
    assert v.direct and "val-a dials relay" in v.direct_reason


def test_check_command_prints_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    parser = __import__("argparse").ArgumentParser()
    analyse_cmd.register(parser)
    args = parser.parse_args([str(SCENARIOS / "seed-exact.yaml"), "--pair", "node0", "node4"])
    assert analyse_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "node0 - node4  no      no       no" in out
    assert "no relay both can use" in out
    args = parser.parse_args([str(SCENARIOS / "sentry.yaml"), "--json"])
    assert analyse_cmd.run(args) == 0
    data = json.loads(capsys.readouterr().out)
    pair = next(p for p in data["pairs"] if (p["a"], p["b"]) == ("node0", "node4"))
    assert pair["circuit"] and pair["holepunch"] and not pair["direct"]


def _variant(tmp_path: Path, old: str, new: str) -> Topology:
    text = (SCENARIOS / "mini.yaml").read_text()
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    return load_topology(path)


def test_dcutr_disabled_in_extra_config_means_no_hole_punch(tmp_path: Path) -> None:
    t = _variant(
        tmp_path,
        "    networks: [a]\n    relay_mode: client\n",
        "    networks: [a]\n    relay_mode: client\n    config: {dcutr: {enabled: false}}\n",
    )
    v = verdict(t, "val-a", "val-b")
    assert v.circuit and not v.holepunch
    assert "DCUtR disabled on val-a" in v.holepunch_reason


def test_listener_without_reservation_cannot_be_reached_by_circuit(tmp_path: Path) -> None:
    # val-b does not reserve anywhere: val-a cannot dial it, but val-b can still dial val-a
    t = _variant(
        tmp_path,
        "    networks: [b]\n    relay_mode: client\n    relay_servers: [relay]\n",
        "    networks: [b]\n    relay_mode: client\n",
    )
    v = verdict(t, "val-a", "val-b")
    assert v.circuit and v.circuit_reason == "val-b->val-a via relay"
    assert reservable(t, t.node("val-b")) == []


def test_nat_none_network_has_no_path_out(tmp_path: Path) -> None:
    a_router = "    nat: cone\n    forwards:\n      - {port: 6100, to: val-a, to_port: 6100}\n"
    t = _variant(tmp_path, a_router + "    hairpin: true\n", "    nat: none\n")
    assert ip_path(t, t.node("val-a"), t.node("relay")) is None
    v = verdict(t, "val-a", "val-b")
    assert not v.circuit and "val-a reaches relays [none]" in v.circuit_reason


def test_shared_public_port_behind_one_router_is_reported(tmp_path: Path) -> None:
    """Two nodes on one port behind one MASQUERADE router share its public endpoint: the
    verdict still allows a punch but says only one such pair can be direct, and the
    rendered testnet carries a warning."""
    from harness.model.reach import shared_public_endpoints
    from harness.model.testnet import build_testnet

    text = (SCENARIOS / "sentry.yaml").read_text()
    for ip in ("172.21.0.14", "172.21.0.15"):  # node4 and node5, both on 4001
        text = text.replace(f"{{b: {ip}}}\n", f"{{b: {ip}}}\n    p2p_port: 4001\n")
    path = tmp_path / "shared.yaml"
    path.write_text(text)
    t = load_topology(path)
    assert shared_public_endpoints(t) == {"router-b:4001": ["node4", "node5"]}
    v = verdict(t, "node0", "node5")
    assert v.holepunch and "shares its router's public port 4001 with node4" in v.holepunch_reason
    assert shared_public_endpoints(topo("sentry")) == {}
    warnings = build_testnet(t).warnings
    assert any("node4, node5 share router-b:4001" in w for w in warnings)


def test_analyse_is_also_called_check(capsys: pytest.CaptureFixture[str]) -> None:
    """`sentrynet check` was the command's name before "check" meant scenario checks only."""
    from harness.cli import main

    pair = [str(SCENARIOS / "seed-exact.yaml"), "--pair", "node0", "node4"]
    assert main(["analyse", *pair]) == 0
    analysed = capsys.readouterr().out
    assert main(["check", *pair]) == 0
    assert capsys.readouterr().out == analysed
    assert "node0 - node4  no      no       no" in analysed


def test_nested_nat_paths_cross_both_routers() -> None:
    """cgnat.yaml: val-home's router sits on the carrier's network behind router-isp."""
    t = topo("cgnat")
    path = ip_path(t, t.node("val-home"), t.node("relay"))
    assert path is not None and path.via_router == "router-home"
    assert "router-home (port-restricted-cone) then router-isp" in path.reason
    assert "(nested NAT)" in path.reason
    inside = ip_path(t, t.node("val-home"), t.node("full-isp"))  # the carrier's customer
    assert inside is not None and inside.network == "isp"
    assert ip_path(t, t.node("full-isp"), t.node("val-home")) is None  # router-home filters
    v = pair_verdict(t, t.node("val-home"), t.node("val-b"))
    assert v.circuit and v.holepunch, v


def test_nested_nat_upstream_errors_name_the_field(tmp_path: Path) -> None:
    from harness.model.topology import TopologyError

    text = (SCENARIOS / "cgnat.yaml").read_text()
    for target, problem in (
        ("nowhere", "'nowhere' is not a network"),
        ("public", "'public' has no NAT router"),
        ("home", "'home' is this network itself"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(text.replace("upstream: isp", f"upstream: {target}"))
        with pytest.raises(TopologyError) as info:
            load_topology(path)
        assert "networks.home.upstream" in str(info.value) and problem in str(info.value)
    loop = text.replace(
        "  isp:\n    subnet: 172.29.1.0/24\n    nat: cone\n",
        "  isp:\n    subnet: 172.29.1.0/24\n    nat: cone\n    upstream: home\n",
    )
    path = tmp_path / "loop.yaml"
    path.write_text(loop)
    with pytest.raises(TopologyError, match="a loop: isp -> home -> isp"):
        load_topology(path)
