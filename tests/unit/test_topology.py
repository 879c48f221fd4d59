"""Topology validation: every error names the file, the field path and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.model.topology import TopologyError, load_topology

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"

BASE: dict[str, Any] = {
    "name": "t",
    "networks": {
        "a": {"subnet": "172.20.0.0/24", "nat": "cone"},
        "b": {"subnet": "172.21.0.0/24", "nat": "cone"},
        "public": {"subnet": "10.0.0.0/24", "public": True},
    },
    "nodes": {
        "node0": {
            "role": "validator",
            "networks": {"a": "172.20.0.10"},
            "relay_mode": "client",
            "relay_servers": ["node3"],
        },
        "node3": {
            "role": "sentry",
            "networks": {"a": "172.20.0.13", "public": "10.0.0.3"},
            "relay_mode": "both",
        },
        "node4": {"role": "validator", "networks": ["b"]},
    },
}


def write(tmp_path: Path, doc: Any, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


FORWARD_ERRORS = [
    (
        lambda d: d["networks"]["public"].update(forwards=[{"port": 4001, "to": "node3"}]),
        "networks.public.forwards",
        "without a NAT router",
        "remove `forwards:`",
    ),
    (
        lambda d: d["networks"]["a"].update(forwards=[{"port": 4001, "to": "node9"}]),
        "networks.a.forwards[0].to",
        "'node9' is not a node",
        "known nodes",
    ),
    (
        lambda d: d["networks"]["a"].update(forwards=[{"port": 4001, "to": "node4"}]),
        "networks.a.forwards[0].to",
        "'node4' is not on network 'a'",
        "behind router-a",
    ),
    (
        lambda d: d["networks"]["a"].update(forwards=[{"port": 70000, "to": "node3"}]),
        "networks.a.forwards[0].port",
        "70000 is not a port",
        "1..65535",
    ),
    (
        lambda d: d["networks"]["a"].update(
            forwards=[{"port": 4001, "to": "node3"}, {"port": 4001, "to": "node0"}]
        ),
        "networks.a.forwards[1].port",
        "forwarded twice",
        "forward it once",
    ),
    (
        lambda d: d["networks"]["a"].update(
            forwards=[{"port": 4001, "to": "node3", "proto": "sctp"}]
        ),
        "networks.a.forwards[0].proto",
        "not one of",
        "",
    ),
    (
        lambda d: d["networks"]["public"].update(hairpin=True),
        "networks.public.hairpin",
        "without a NAT router",
        "remove `hairpin:`",
    ),
]


def error_for(tmp_path: Path, mutate: Any) -> TopologyError:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    path = write(tmp_path, doc)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    err = info.value
    msg = str(err)
    assert msg.startswith(f"{path}: "), msg  # names the file
    assert "\n" not in msg  # one line
    return err


def test_base_topology_loads(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, BASE))
    assert [n.name for n in topo.nodes] == ["node0", "node3", "node4"]
    assert topo.node("node4").addresses == {"b": "172.21.0.10"}  # auto-assigned from .10
    assert topo.public_network.name == "public"
    assert topo.validators == ("node0", "node4")


def test_unknown_relay_server_lists_known_nodes(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["nodes"]["node0"]["relay_servers"] = ["node9"]

    err = error_for(tmp_path, mutate)
    assert err.field == "nodes.node0.relay_servers[0]"
    assert "'node9' is not a node" in str(err)
    assert "known nodes: node0, node3, node4" in str(err)


def test_known_nodes_are_abbreviated_as_a_range(tmp_path: Path) -> None:
    doc = yaml.safe_load((SCENARIOS / "sentry.yaml").read_text())
    doc["nodes"]["node0"]["relay_servers"] = ["node9"]
    path = write(tmp_path, doc)
    with pytest.raises(TopologyError, match=r"known nodes: node0\.\.node7"):
        load_topology(path)


@pytest.mark.parametrize(
    ("mutate", "field", "problem", "fix"),
    [
        (
            lambda d: d.update(extra=1),
            "extra",
            "unknown key",
            "valid keys: name, description, chain, networks, nodes",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_server=["node3"]),
            "nodes.node0.relay_server",
            "unknown key",
            "valid keys: role, networks, relay_mode, relay_servers",
        ),
        (
            lambda d: d["networks"]["a"].update(nat="fullcone"),
            "networks.a.nat",
            "'fullcone' is not one of none, full-cone, restricted-cone, port-restricted-cone, "
            "symmetric, cone",
            "did you mean 'full-cone'?",
        ),
        (
            lambda d: d["networks"]["a"].pop("nat"),
            "networks.a.nat",
            "missing on a private network",
            "set `nat: cone`",
        ),
        (
            lambda d: d["networks"]["public"].update(nat="cone"),
            "networks.public.nat",
            "a public network has no NAT",
            "remove `nat:`",
        ),
        (
            lambda d: d["networks"]["b"].update(subnet="172.20.0.128/25"),
            "networks.b.subnet",
            "overlaps networks.a.subnet",
            "give every network its own subnet",
        ),
        (
            lambda d: d["networks"]["b"].update(subnet="172.21.0.5/24"),
            "networks.b.subnet",
            "has host bits set",
            "did you mean 172.21.0.0/24?",
        ),
        (
            lambda d: d["networks"]["b"].update(subnet="172.21.0.0"),
            "networks.b.subnet",
            "has no prefix length",
            "did you mean 172.21.0.0/24?",
        ),
        (
            lambda d: d["networks"]["b"].update(subnet="banana/24"),
            "networks.b.subnet",
            "is not an IPv4 subnet",
            "use CIDR",
        ),
        (
            lambda d: d["networks"]["b"].update(subnet="172.21.0.0/30"),
            "networks.b.subnet",
            "too small",
            "use /28 or larger",
        ),
        (
            lambda d: d["networks"]["public"].update(public=False, nat="none"),
            "networks",
            "no network is public",
            "mark exactly one network `public: true`",
        ),
        (
            lambda d: d["networks"]["b"].update(public=True, nat="none"),
            "networks",
            "2 networks are public (b, public)",
            "mark exactly one network `public: true`",
        ),
        (
            lambda d: (
                d["networks"]["public"].update(subnet="10.0.0.0/28")
                or d["networks"].update(
                    {f"p{i}": {"subnet": f"172.{22 + i}.0.0/24", "nat": "cone"} for i in range(5)}
                )
            ),
            "networks.public.subnet",
            "too small for the 7 NAT routers' public addresses",
            "use a larger public subnet",
        ),
        (
            lambda d: d["networks"]["a"].update(loss_pct=150),
            "networks.a.loss_pct",
            "150 is out of range",
            "use 0 <= value < 100",
        ),
        (
            lambda d: d["networks"].update(control={"subnet": "10.9.0.0/24", "nat": "none"}),
            "networks.control",
            "reserved by the harness",
            "rename it",
        ),
        (
            lambda d: d["nodes"]["node0"].update(role="miner"),
            "nodes.node0.role",
            "'miner' is not one of validator, full, sentry",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].pop("role"),
            "nodes.node0.role",
            "missing",
            "set one of validator, full, sentry",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"c": None}),
            "nodes.node0.networks.c",
            "'c' is not a network",
            "known networks: a, b, public",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"a": "172.21.0.10"}),
            "nodes.node0.networks.a",
            "172.21.0.10 is outside the network's subnet 172.20.0.0/24",
            "use an address in 172.20.0.0/24",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"a": "172.20.0.1"}),
            "nodes.node0.networks.a",
            "172.20.0.1 is reserved for Docker's gateway",
            "use another address",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"a": "172.20.0.254"}),
            "nodes.node0.networks.a",
            "172.20.0.254 is reserved for router-a",
            "use another address",
        ),
        (
            lambda d: d["nodes"]["node3"]["networks"].update(public="10.0.0.253"),
            "nodes.node3.networks.public",
            "10.0.0.253 is reserved for router-b",
            "use another address",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"a": "172.20.0.13"}),
            "nodes.node3.networks.a",
            "172.20.0.13 is already used by node0",
            "give every node its own IP",
        ),
        (
            lambda d: d["networks"]["public"].update(latency_ms=10, jitter_ms=20),
            "networks.public.jitter_ms",
            "20 ms of jitter around a latency of 10 ms",
            "set `latency_ms:` to at least the jitter",
        ),
        (
            lambda d: d["networks"]["a"].update(rate_kbit=2),
            "networks.a.rate_kbit",
            "2",
            "kbit/s per interface",
        ),
        (
            lambda d: d["nodes"]["node0"].update(networks={"a": "not-an-ip"}),
            "nodes.node0.networks.a",
            "'not-an-ip' is not an IPv4 address",
            "use an address in 172.20.0.0/24",
        ),
        (
            lambda d: d["nodes"]["node3"].update(networks={"a": "172.20.0.13"}),
            "nodes.node3.networks",
            "a sentry must be reachable from the public network",
            "add `public:` to its networks, add a `forwards:` entry",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_mode="off"),
            "nodes.node0.relay_servers",
            "relay_mode is 'off'",
            "set `relay_mode: client` or `both`",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_servers=["node4"]),
            "nodes.node0.relay_servers[0]",
            "'node4' has relay_mode 'off', it serves no relay",
            "set `relay_mode: server` or `both` on nodes.node4",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_servers=["node0"]),
            "nodes.node0.relay_servers[0]",
            "cannot be its own relay server",
            "name another node",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_servers=["node3", "node3"]),
            "nodes.node0.relay_servers[1]",
            "'node3' is listed twice",
            "list each relay server once",
        ),
        (
            lambda d: d["nodes"]["node0"].update(relay_mode="relay"),
            "nodes.node0.relay_mode",
            "'relay' is not one of off, client, server, both",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].update(persistent_peers=["nodeX"]),
            "nodes.node0.persistent_peers[0]",
            "'nodeX' is not a node",
            "known nodes:",
        ),
        (
            lambda d: d["nodes"]["node0"].update(serve_sync="yes"),
            "nodes.node0.serve_sync",
            "expected true or false",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"relays": {}}),
            "nodes.node0.config.relays",
            "not a node config section",
            "valid sections: node, p2p, relay, dcutr, chain, api",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"relay": {"max_reservation": 3}}),
            "nodes.node0.config.relay.max_reservation",
            "unknown key",
            "valid keys: enabled, mode, relay_servers",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"api": {"listen": "1.2.3.4:9"}}),
            "nodes.node0.config.api.listen",
            "api.listen is derived from the topology",
            "the API listens on the node's control-network IP",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"relay": {"max_reservation": 3}}),
            "nodes.node0.config.relay.max_reservation",
            "unknown key",
            "did you mean 'max_reservations'?",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"p2p": {"ping_interval_s": 0}}),
            "nodes.node0.config.p2p.ping_interval_s",
            "must be > 0",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"dcutr": {"max_attempts": "3"}}),
            "nodes.node0.config.dcutr.max_attempts",
            "expected an integer",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].update(
                config={"relay": {"relay_servers": ["/ip4/10.0.0.7/tcp/4001"]}}
            ),
            "nodes.node0.config.relay.relay_servers",
            "relay.relay_servers is derived from the topology",
            "set it through `relay_servers:` (node names)",
        ),
        (
            lambda d: d["nodes"]["node0"].update(
                config={"p2p": {"persistent_peers": ["/ip4/10.0.0.7/tcp/4001"]}}
            ),
            "nodes.node0.config.p2p.persistent_peers",
            "p2p.persistent_peers is derived from the topology",
            "set it through `persistent_peers:`",
        ),
        (
            lambda d: d["nodes"]["node0"].update(config={"node": {"data_dir": "/tmp"}}),
            "nodes.node0.config.node.data_dir",
            "node.data_dir is derived from the topology",
            "the node's data volume",
        ),
        (
            lambda d: d["nodes"].update(Node8={"role": "full", "networks": ["a"]}),
            "nodes.Node8",
            "'Node8' is not a valid node name",
            "lowercase letters",
        ),
        (
            lambda d: d["nodes"].update({"router-a": {"role": "full", "networks": ["a"]}}),
            "nodes.router-a",
            "reserved for NAT routers",
            "rename the node",
        ),
        (
            lambda d: [d["nodes"][n].update(role="full") for n in ("node0", "node4")],
            "nodes",
            "no node has `role: validator`",
            "at least one validator",
        ),
        (
            lambda d: d.pop("networks"),
            "networks",
            "missing",
            "add a `networks:` mapping",
        ),
        (
            lambda d: d.update(chain={"block_interval_s": 0}),
            "chain.block_interval_s",
            "must be > 0",
            "use e.g. 1.0",
        ),
        *FORWARD_ERRORS,
        # transports: QUIC beside TCP (tests/unit/test_topology_transports.py)
        (
            lambda d: d["nodes"]["node0"].update(transports=["quic"]),
            "nodes.node0.transports",
            "tcp is missing",
            "[tcp, quic]",
        ),
        (
            lambda d: d["nodes"]["node0"].update(transports=["tcp", "quick"]),
            "nodes.node0.transports[1]",
            "'quick' is not one of tcp, quic",
            "did you mean 'quic'?",
        ),
        (
            lambda d: d["nodes"]["node0"].update(transports="quic"),
            "nodes.node0.transports",
            "expected a list like [tcp, quic]",
            "",
        ),
        (
            lambda d: d["nodes"]["node0"].update(impl="rust", transports=["tcp", "quic"]),
            "nodes.node0.transports",
            "quic on a node with impl: rust",
            "use impl: python",
        ),
    ],
)
def test_validation_error_names_field_problem_and_fix(
    tmp_path: Path, mutate: Any, field: str, problem: str, fix: str
) -> None:
    err = error_for(tmp_path, mutate)
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert fix in err.fix, str(err)
    assert f": {field}: " in str(err)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = (
        (SCENARIOS / "mini.yaml")
        .read_text()
        .replace("  val-b:\n", "  val-a:\n    role: full\n    networks: [a]\n  val-b:\n")
    )
    path = write(tmp_path, text)
    with pytest.raises(TopologyError, match=r"duplicate key 'val-a'.*fix the YAML syntax"):
        load_topology(path)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nnetworks: [\n")
    with pytest.raises(TopologyError, match=r"topo\.yaml: line \d+: not valid YAML"):
        load_topology(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"nope\.yaml: cannot read topology"):
        load_topology(tmp_path / "nope.yaml")


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc.pop("name")
    topo = load_topology(write(tmp_path, doc, "my-net.yaml"))
    assert topo.name == "my-net"


def test_auto_assignment_is_deterministic_and_skips_taken(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["x"] = {"role": "full", "networks": ["b", "public"]}
    doc["nodes"]["y"] = {"role": "full", "networks": {"b": "172.21.0.11", "public": None}}
    topo = load_topology(write(tmp_path, doc))
    assert topo.node("node4").addresses == {"b": "172.21.0.10"}
    assert topo.node("x").addresses == {"b": "172.21.0.12", "public": "10.0.0.10"}
    assert topo.node("y").addresses == {"b": "172.21.0.11", "public": "10.0.0.11"}
    again = load_topology(write(tmp_path, doc, "again.yaml"))
    assert [n.addresses for n in again.nodes] == [n.addresses for n in topo.nodes]


def test_sentry_scenario_is_the_seed_layout() -> None:
    topo = load_topology(SCENARIOS / "sentry.yaml")
    assert topo.name == "sentry"
    nets = {n.name: n for n in topo.networks}
    assert nets["a"].subnet == "172.20.0.0/24" and nets["a"].nat == "port-restricted-cone"
    assert nets["b"].subnet == "172.21.0.0/24" and nets["b"].nat == "port-restricted-cone"
    assert nets["public"].subnet == "10.0.0.0/24" and nets["public"].public
    roles = {n.name: n.role for n in topo.nodes}
    assert roles == {
        "node0": "validator",
        "node1": "validator",
        "node2": "full",
        "node3": "sentry",
        "node4": "validator",
        "node5": "validator",
        "node6": "full",
        "node7": "sentry",
    }
    assert set(topo.node("node3").addresses) == {"a", "public"}
    assert topo.node("node3").addresses["public"] == "10.0.0.3"
    assert topo.node("node7").addresses["public"] == "10.0.0.7"
    for n in ("node0", "node1", "node2"):
        assert set(topo.node(n).addresses) == {"a"}
    for n in ("node4", "node5", "node6"):
        assert set(topo.node(n).addresses) == {"b"}
    assert topo.node("node3").relay_mode == topo.node("node7").relay_mode == "both"
    assert topo.node("node3").relay_servers == ("node7",)
    assert topo.node("node7").relay_servers == ("node3",)
    for n in ("node0", "node1", "node2", "node4", "node5", "node6"):
        node = topo.node(n)
        assert node.relay_mode == "client"
        assert set(node.relay_servers) == {"node3", "node7"}


def test_seed_exact_differs_from_sentry_only_in_nat_and_local_relays() -> None:
    sentry = load_topology(SCENARIOS / "sentry.yaml")
    exact = load_topology(SCENARIOS / "seed-exact.yaml")
    assert [n.nat for n in exact.networks] == ["none", "none", "none"]
    assert [(n.name, n.subnet) for n in exact.networks] == [
        (n.name, n.subnet) for n in sentry.networks
    ]
    for a, b in zip(sentry.nodes, exact.nodes, strict=True):
        assert (a.name, a.role, a.addresses, a.relay_mode) == (
            b.name,
            b.role,
            b.addresses,
            b.relay_mode,
        )
    local = {"node0": "node3", "node1": "node3", "node2": "node3"}
    local |= {"node4": "node7", "node5": "node7", "node6": "node7"}
    for client, sentry_name in local.items():
        assert exact.node(client).relay_servers == (sentry_name,)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_scenario_topology_loads(path: Path) -> None:
    topo = load_topology(path)
    assert topo.nodes and topo.validators


def test_nodes_behind_one_router_get_distinct_p2p_ports() -> None:
    """A port-preserving NAT gives nodes on one port one public endpoint: the model gives
    each node behind a router its own port; public and router-less nodes keep 4001."""
    t = load_topology(SCENARIOS / "sentry.yaml")
    ports = {n.name: n.p2p_port for n in t.nodes}
    assert ports == {
        "node0": 4001,
        "node1": 4002,
        "node2": 4003,
        "node3": 4001,  # sentry: public address, not behind the router
        "node4": 4001,
        "node5": 4002,
        "node6": 4003,
        "node7": 4001,
    }
    seed = load_topology(SCENARIOS / "seed-exact.yaml")
    assert {n.p2p_port for n in seed.nodes} == {4001}  # nat: none, no router


def test_explicit_p2p_port_is_kept_and_derived_ones_avoid_it(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node5"] = {"role": "full", "networks": ["b"], "p2p_port": 4001}
    doc["nodes"]["node4"]["p2p_port"] = 4001  # shares 4001 with node5 on purpose
    doc["nodes"]["node6"] = {"role": "full", "networks": ["b"]}
    t = load_topology(write(tmp_path, doc))
    assert [t.node(n).p2p_port for n in ("node4", "node5", "node6")] == [4001, 4001, 4002]


@pytest.mark.parametrize("bad", [80, 70000, "4001", True, 4001.5])
def test_bad_p2p_port_names_the_field(tmp_path: Path, bad: Any) -> None:
    err = error_for(tmp_path, lambda d: d["nodes"]["node4"].__setitem__("p2p_port", bad))
    assert err.field == "nodes.node4.p2p_port"
    assert "1024 to 65535" in str(err)


def test_config_takes_every_documented_node_key(tmp_path: Path) -> None:
    """`config:` is checked by the node's own schema: the liveness keys of docs/contracts.md
    section 1 are accepted (the harness's old copy of the schema rejected them)."""
    doc = copy.deepcopy(BASE)
    liveness = {"ping_interval_s": 2.0, "ping_timeout_s": 4, "ping_failures": 5}
    doc["nodes"]["node0"]["config"] = {"p2p": liveness, "relay": {"max_reservations": 7}}
    topo = load_topology(write(tmp_path, doc))
    assert topo.node("node0").config == {"p2p": liveness, "relay": {"max_reservations": 7}}


def test_forwards_resolve_to_the_node_address_and_p2p_port(tmp_path: Path) -> None:
    from harness.model import build_testnet

    d = copy.deepcopy(BASE)
    d["networks"]["a"]["forwards"] = [
        {"port": 4100, "to": "node3"},
        {"port": 53, "to": "node0", "to_port": 5353, "proto": "udp"},
    ]
    d["networks"]["a"]["hairpin"] = True
    topo = load_topology(write(tmp_path, yaml.safe_dump(d)))
    tn = build_testnet(topo, name="t")
    router = tn.router("router-a")
    assert router.hairpin
    node3 = tn.node("node3")
    f0, f1 = router.forwards
    assert (f0.port, f0.proto, f0.to_ip, f0.to_port) == (
        4100,
        "tcp",
        node3.addresses["a"],
        node3.p2p_port,
    )
    assert (f1.proto, f1.to, f1.to_port) == ("udp", "node0", 5353)
    from harness.model.testnet import Testnet

    assert Testnet.from_dict(tn.to_dict()) == tn
