"""NAT presets in the model: parsing and the alias, each node's port range behind a router,
the nftables table each preset gets, and what reachability makes of a full cone. The
routers' real behaviour per preset is measured in tests/docker/test_nat.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import SentrynetError
from harness.infra import natrules
from harness.infra.render import render
from harness.model import build_testnet, nat
from harness.model.reach import ip_path, pair_verdict
from harness.model.testnet import port_ranges
from harness.model.topology import Topology, TopologyError, load_topology, parse_topology

MINI = Path(__file__).resolve().parents[2] / "scenarios" / "mini.yaml"


def _mini(tmp_path: Path, nat_a: str = "cone", nat_b: str = "cone") -> Topology:
    text = MINI.read_text()
    first = text.index("nat: cone")
    text = text[:first] + f"nat: {nat_a}" + text[first + len("nat: cone") :]
    text = text.replace("nat: cone", f"nat: {nat_b}", 1)
    path = tmp_path / "mini.yaml"
    path.write_text(text)
    return load_topology(path)


def test_every_preset_parses_and_cone_is_the_port_restricted_cone(tmp_path: Path) -> None:
    for preset in nat.PRESETS:
        assert _mini(tmp_path, preset).network("a").nat == preset
    assert _mini(tmp_path, "cone").network("a").nat == "port-restricted-cone"


def test_an_unknown_nat_names_every_preset_and_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        _mini(tmp_path, "restricted")
    text = str(info.value)
    assert "networks.a.nat" in text and "'restricted' is not one of" in text
    assert all(p in text for p in nat.PRESETS) and "did you mean 'restricted-cone'" in text


def test_presets_say_which_punch_and_which_let_in() -> None:
    assert [p for p, m in nat.PRESETS.items() if m.punchable] == [
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
    ]
    assert [p for p, m in nat.PRESETS.items() if m.inbound_open] == ["full-cone"]
    assert not nat.model("symmetric").port_preserving


def test_each_node_behind_a_router_gets_its_own_port_range(tmp_path: Path) -> None:
    t = _mini(tmp_path)
    ranges = port_ranges(t)
    assert ranges == {"val-a": (20000, 20999), "val-b": (20000, 20999)}  # one per router
    tn = build_testnet(t)
    assert tn.node("relay").port_range is None  # public: no router, no range
    assert tn.node("val-a").port_range == (20000, 20999)


def test_many_nodes_behind_one_router_share_the_span_and_too_many_is_an_error() -> None:
    ranges = port_ranges(_topology(100))
    assert ranges["n0"] == (20000, 20399) and ranges["n99"] == (59600, 59999)
    with pytest.raises(SentrynetError, match="at most 625 per router"):
        port_ranges(_topology(700))


def _topology(n: int) -> Topology:
    """`n` nodes behind one full-cone router (the first a validator)."""
    nodes = {f"n{i}": {"role": "full", "networks": ["a"]} for i in range(n)}
    nodes["n0"]["role"] = "validator"
    doc = {
        "name": "many",
        "networks": {
            "a": {"subnet": "172.30.0.0/20", "nat": "full-cone"},
            "public": {"subnet": "10.9.0.0/24", "public": True},
        },
        "nodes": nodes,
    }
    return parse_topology(yaml.safe_dump(doc), "many.yaml")


def test_port_restricted_and_symmetric_routers_get_no_table(tmp_path: Path) -> None:
    tn = build_testnet(_mini(tmp_path))
    router = tn.router("router-a")
    inside = natrules.inside_nodes(tn, router)
    assert [(n.name, n.ports) for n in inside] == [("val-a", "4001, 20000-20999")]
    for preset in ("port-restricted-cone", "symmetric"):
        assert natrules.table(preset, inside, router.public_ip, "172.28.1.0/24", True) == ""
    assert natrules.replace_script("") == "nft delete table ip sn_cone 2>/dev/null || true\n"


def _table(tmp_path: Path, preset: str, hairpin: bool = True) -> str:
    """router-a's cone table for `preset` in mini.yaml."""
    tn = build_testnet(_mini(tmp_path, preset))
    router = tn.router("router-a")
    inside = natrules.inside_nodes(tn, router)
    return natrules.table(preset, inside, router.public_ip, "172.28.1.0/24", hairpin)


def test_full_cone_table_lets_anyone_in_to_the_owner_and_hairpins(tmp_path: Path) -> None:
    script = _table(tmp_path, "full-cone")
    assert "elements = { 4001 : 172.28.1.10, 20000-20999 : 172.28.1.10 }" in script
    assert "ip saddr != 172.28.1.0/24 meta l4proto { tcp, udp } th dport @owner dnat" in script
    assert "ip saddr 172.28.1.0/24 meta l4proto" in script  # hairpin
    assert "@seen" not in script
    no_hairpin = _table(tmp_path, "full-cone", hairpin=False)
    assert "ip saddr 172.28.1.0/24 meta l4proto" not in no_hairpin


def test_restricted_cone_table_gates_on_address_and_port_sent_to(tmp_path: Path) -> None:
    script = _table(tmp_path, "restricted-cone")
    assert "update @seen { ip daddr . th sport }" in script
    assert "ip saddr . th dport @seen dnat to th dport map @owner" in script
    assert f"timeout {nat.FILTER_MEMORY_S}s" in script
    assert "ip saddr 172.28.1.0/24 meta l4proto" not in script  # hairpin: full cone only


def test_router_script_loads_the_table_of_its_preset(tmp_path: Path) -> None:
    tn = build_testnet(_mini(tmp_path, "full-cone", "restricted-cone"))
    render(tn, tmp_path / "out", image="sentrynet-node:test")
    a = (tmp_path / "out" / "routers" / "router-a" / "router.sh").read_text()
    b = (tmp_path / "out" / "routers" / "router-b" / "router.sh").read_text()
    assert "nft -f - <<'SN_NFT'" in a and "@seen" not in a
    assert "update @seen" in b
    compose = (tmp_path / "out" / "docker-compose.yml").read_text()
    assert 'net.ipv4.ip_local_port_range: "20000 20999"' in compose


def test_a_full_cone_node_is_dialled_at_its_routers_public_address(tmp_path: Path) -> None:
    t = _mini(tmp_path, "full-cone", "cone")
    tn = build_testnet(t)
    relay, val_a, val_b = t.node("relay"), t.node("val-a"), t.node("val-b")
    path = ip_path(t, relay, val_a)
    assert path is not None and path.addr == tn.router("router-a").public_ip
    assert "full cone" in path.reason
    back = ip_path(t, val_b, val_a)  # from behind another router, through it
    assert back is not None and back.via_router == "router-b"
    assert ip_path(t, relay, val_b) is None  # port-restricted: nothing gets in unasked
    v = pair_verdict(t, val_a, val_b)
    assert v.direct and "val-b dials val-a" in v.direct_reason
    assert not v.holepunch and "not needed" in v.holepunch_reason


def test_mapping_timeout_reaches_the_routers_conntrack_sysctls(tmp_path: Path) -> None:
    tn = build_testnet(load_topology(MINI))
    assert tn.router("router-b").mapping_timeout_s == 20
    assert tn.router("router-a").mapping_timeout_s is None
    render(tn, tmp_path / "out", image="sentrynet-node:test")
    compose = (tmp_path / "out" / "docker-compose.yml").read_text()
    assert compose.count('nf_conntrack_tcp_timeout_established: "20"') == 1


@pytest.mark.parametrize(
    ("network", "value", "problem"),
    [
        ("public", 20, "set on a network without a NAT router"),
        ("a", 0, "0 is out of range"),
        ("a", "long", "expected a number"),
    ],
)
def test_a_bad_mapping_timeout_names_the_field(
    tmp_path: Path, network: str, value: object, problem: str
) -> None:
    doc = yaml.safe_load(MINI.read_text())
    doc["networks"][network]["mapping_timeout_s"] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert f"networks.{network}.mapping_timeout_s" in str(info.value)
    assert problem in str(info.value)
