"""Rendering: golden files, determinism, labels, subnet overrides, and the node's own loader.

Regenerate the goldens after an intended change with
    SENTRYNET_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py
and review the diff (`git diff tests/golden`) like any other change.
"""

from __future__ import annotations

import filecmp
import ipaddress
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import SentrynetError
from harness.infra import delayer
from harness.infra.render import render
from harness.model.keys import node_key
from harness.model.testnet import Testnet, build_testnet, parse_subnet_overrides
from harness.model.topology import load_topology
from node.config import load_config  # the contract's other side: drift fails here

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
IMAGE = "sentrynet-node:golden"
UPDATE = os.environ.get("SENTRYNET_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # topology paths are relative so the rendered "generated from" lines are portable
    monkeypatch.chdir(REPO)


def rendered(tmp_path: Path, topology: str, **kw: Any) -> tuple[Testnet, Path]:
    tn = build_testnet(load_topology(topology), **kw)
    out = tmp_path / "out"
    render(tn, out, IMAGE)
    return tn, out


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("name", ["sentry", "mini", "symmetric-nat"])
def test_render_matches_golden(tmp_path: Path, name: str) -> None:
    _, out = rendered(tmp_path, f"scenarios/{name}.yaml")
    golden = GOLDEN / name
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
    assert golden.is_dir(), f"no goldens for {name}: run with SENTRYNET_UPDATE_GOLDEN=1"
    got, want = tree(out), tree(golden)
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], (
            f"{rel} differs from tests/golden/{name}/{rel}; if intended, regenerate with "
            "SENTRYNET_UPDATE_GOLDEN=1 and review the diff"
        )


def test_render_is_deterministic(tmp_path: Path) -> None:
    tn = build_testnet(load_topology("scenarios/sentry.yaml"))
    render(tn, tmp_path / "one", IMAGE)
    render(build_testnet(load_topology("scenarios/sentry.yaml")), tmp_path / "two", IMAGE)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    cmp = filecmp.dircmp(tmp_path / "one", tmp_path / "two")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_every_node_config_loads_with_the_nodes_own_loader(tmp_path: Path) -> None:
    from libp2p.crypto.serialization import deserialize_private_key
    from libp2p.peer.id import ID

    for topo in ("sentry", "seed-exact", "symmetric-nat", "mini"):
        tn, out = rendered(tmp_path / topo, f"scenarios/{topo}.yaml")
        for node in tn.nodes:
            cfg = load_config(out / "nodes" / node.name / "node.toml")
            assert cfg.node.name == node.name
            assert cfg.node.role == node.role
            assert cfg.node.key_file == "/config/node.key"
            assert list(cfg.p2p.listen_addrs) == list(node.listen_addrs)
            assert cfg.api.listen == f"{node.control_ip}:9000"
            assert list(cfg.chain.validators) == list(tn.validators)
            assert cfg.chain.validator_ids == tn.validator_ids
            assert cfg.relay.enabled == (node.relay_mode != "off")
            if node.relay_mode != "off":
                assert cfg.relay.mode == node.relay_mode
            key = deserialize_private_key((out / "nodes" / node.name / "node.key").read_bytes())
            assert ID.from_pubkey(key.get_public_key()).to_base58() == node.peer_id


def test_sentry_node_configs(tmp_path: Path) -> None:
    tn, out = rendered(tmp_path, "scenarios/sentry.yaml")
    cfg = tomllib.loads((out / "nodes/node0/node.toml").read_text())
    # relay servers by address WITHOUT peer id: local sentry on a, remote at its public IP
    assert cfg["relay"]["relay_servers"] == ["/ip4/172.20.0.13/tcp/4001", "/ip4/10.0.0.7/tcp/4001"]
    assert cfg["relay"]["mode"] == "client"
    assert cfg["p2p"]["listen_addrs"] == ["/ip4/172.20.0.10/tcp/4001"]
    assert all("/p2p/" in a for a in cfg["p2p"]["persistent_peers"])
    assert len(cfg["p2p"]["persistent_peers"]) == 3  # node1, node2, node3 share network a
    sentry = tomllib.loads((out / "nodes/node3/node.toml").read_text())
    assert sentry["relay"]["relay_servers"] == ["/ip4/10.0.0.7/tcp/4001"]
    assert sentry["relay"]["mode"] == "both"
    assert sentry["p2p"]["listen_addrs"] == ["/ip4/172.20.0.13/tcp/4001", "/ip4/10.0.0.3/tcp/4001"]
    node7_id = tn.node("node7").peer_id
    assert f"/ip4/10.0.0.7/tcp/4001/p2p/{node7_id}" in sentry["p2p"]["persistent_peers"]
    assert sentry["chain"]["validators"] == ["node0", "node1", "node4", "node5"]
    assert tn.warnings == ()


def test_seed_exact_renders_and_has_no_routers(tmp_path: Path) -> None:
    tn, out = rendered(tmp_path, "scenarios/seed-exact.yaml")
    assert tn.routers == ()
    assert tn.node("node0").default_via is None
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert not any(s.startswith("router-") for s in compose["services"])
    # no router to wait for; only its relay, node3, which itself waits for nothing
    assert compose["services"]["node0"]["depends_on"] == {"node3": {"condition": "service_started"}}
    assert "depends_on" not in compose["services"]["node3"]
    assert "ip route add default" not in (out / "nodes/node0/netsetup.sh").read_text()


def test_compose_labels_networks_and_ordering(tmp_path: Path) -> None:
    tn, out = rendered(tmp_path, "scenarios/sentry.yaml")
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    services = compose["services"]
    waiters = {"router-a-ready", "router-b-ready"}
    assert set(services) == {"router-a", "router-b", *waiters, *(f"node{i}" for i in range(8))}
    for name, svc in services.items():
        labels = svc["labels"]
        assert labels["sentrynet.testnet"] == "sentry"
        assert labels["sentrynet.node"] == name
        if name in waiters:  # one-shot, in its router's network namespace, no healthcheck
            assert labels["sentrynet.role"] == "router-ready"
            assert svc["network_mode"] == f"service:{name.removesuffix('-ready')}"
            assert "SN_READY" in svc["command"][-1] and "exit 1" in svc["command"][-1]
            assert "$" not in svc["command"][-1]  # compose and the multi-host start alike
            continue
        want_role = "router" if name.startswith("router") else tn.node(name).role
        assert labels["sentrynet.role"] == want_role
        assert svc["cap_add"] == ["NET_ADMIN"]
        assert svc["init"] is True
        assert svc["image"] == IMAGE
        # a healthcheck runs for the container's whole life (an exec every interval)
        assert "healthcheck" not in svc
    for name, net in compose["networks"].items():
        assert net["labels"]["sentrynet.testnet"] == "sentry"
        assert net["name"] == f"sentry_{name}"
    assert compose["networks"]["public"]["internal"] is True
    assert compose["networks"]["control"]["internal"] is True
    for private in ("a", "b"):
        net = compose["networks"][private]
        assert "internal" not in net
        assert net["driver_opts"] == {"com.docker.network.bridge.enable_ip_masquerade": "false"}
    for vol in compose["volumes"].values():
        assert vol["labels"]["sentrynet.testnet"] == "sentry"
    ra = services["router-a"]
    assert ra["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert ra["networks"] == {
        "a": {"ipv4_address": "172.20.0.254"},
        "public": {"ipv4_address": "10.0.0.254"},
    }
    assert services["router-b"]["networks"]["public"] == {"ipv4_address": "10.0.0.253"}
    n3 = services["node3"]
    assert n3["networks"]["a"] == {"ipv4_address": "172.20.0.13"}
    assert n3["networks"]["public"] == {"ipv4_address": "10.0.0.3"}
    assert n3["networks"]["control"] == {"ipv4_address": tn.node("node3").control_ip}
    assert n3["depends_on"] == {
        "router-a-ready": {"condition": "service_completed_successfully"},
        "router-b-ready": {"condition": "service_completed_successfully"},
    }
    assert "./nodes/node3:/config:ro" in n3["volumes"]
    assert "exec python -m node --config /config/node.toml" in n3["command"][-1]


def test_router_scripts_follow_the_measured_recipe(tmp_path: Path) -> None:
    _, out = rendered(tmp_path, "scenarios/sentry.yaml")
    cone = (out / "routers/router-a/router.sh").read_text()
    assert 'iptables -t nat -A POSTROUTING -o "$PUB_IF" -j MASQUERADE\n' in cone
    assert 'iptables -A FORWARD -i "$PUB_IF" -j DROP' in cone
    assert 'iptables -A INPUT -i "$PUB_IF" -j DROP' in cone
    assert "REJECT" not in cone
    _, out2 = rendered(tmp_path / "sym", "scenarios/symmetric-nat.yaml")
    sym = (out2 / "routers/router-a/router.sh").read_text()
    assert "MASQUERADE --random-fully" in sym


def test_loss_and_latency_render_into_setup_scripts(tmp_path: Path) -> None:
    text = Path("scenarios/mini.yaml").read_text()
    text = text.replace(
        "    subnet: 172.28.1.0/24\n",
        "    subnet: 172.28.1.0/24\n    loss_pct: 5\n    latency_ms: 40\n",
    )
    topo_path = tmp_path / "lossy.yaml"
    topo_path.write_text(text)
    tn = build_testnet(load_topology(topo_path))
    render(tn, tmp_path / "out", IMAGE)
    setup = (tmp_path / "out/nodes/val-a/netsetup.sh").read_text()
    assert "-m statistic --mode random --probability 0.0500 -j DROP" in setup
    assert "netem delay 40ms" in setup
    # without netem, the NFQUEUE delayer written beside the script
    assert "-j NFQUEUE --queue-num" in setup and "python3 /config/sn_delayer.py" in setup
    assert (tmp_path / "out/nodes/val-a/sn_delayer.py").read_text() == delayer.DELAYER
    router = (tmp_path / "out/routers/router-a/router.sh").read_text()
    assert 'iptables -A FORWARD -i "$PRIV_IF" -m statistic' in router
    assert (
        "netem delay 40ms" in router and (tmp_path / "out/routers/router-a/sn_delayer.py").exists()
    )
    unaffected = (tmp_path / "out/nodes/val-b/netsetup.sh").read_text()
    assert "-m statistic" not in unaffected and "netem delay" not in unaffected


def test_jitter_and_rate_render_into_setup_scripts(tmp_path: Path) -> None:
    text = Path("scenarios/mini.yaml").read_text()
    text = text.replace(
        "    subnet: 172.28.0.0/24\n",
        "    subnet: 172.28.0.0/24\n    latency_ms: 30\n    jitter_ms: 10\n    rate_kbit: 4000\n",
    )
    topo_path = tmp_path / "wan.yaml"
    topo_path.write_text(text)
    tn = build_testnet(load_topology(topo_path))
    assert tn.network("public").jitter_ms == 10 and tn.network("public").rate_kbit == 4000
    render(tn, tmp_path / "out", IMAGE)
    for script in ("nodes/relay/netsetup.sh", "routers/router-a/router.sh"):
        text = (tmp_path / "out" / script).read_text()
        assert "root handle 1: netem delay 30ms 10ms" in text, script
        assert 'python3 /config/sn_delayer.py "$q" 30 10 ' in text, script
        assert "handle 2: tbf rate 4000kbit burst 10000 latency 200ms" in text, script
    inside = (tmp_path / "out/nodes/val-a/netsetup.sh").read_text()
    assert "tbf rate" not in inside and "netem delay" not in inside  # val-a: network a only
    assert Testnet.load(tmp_path / "out") == tn


def test_testnet_json_round_trips(tmp_path: Path) -> None:
    tn, out = rendered(tmp_path, "scenarios/sentry.yaml")
    loaded = Testnet.load(out)
    assert loaded == tn
    assert loaded.node("node0").api_url == f"http://{tn.node('node0').control_ip}:9000"
    assert loaded.router("router-a").public_ip == "10.0.0.254"


def test_testnet_load_without_render_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SentrynetError, match="render the testnet first"):
        Testnet.load(tmp_path)


def test_name_and_subnet_overrides_let_two_testnets_coexist(tmp_path: Path) -> None:
    topo = load_topology("scenarios/sentry.yaml")
    one = build_testnet(topo)
    two = build_testnet(
        topo,
        name="sentry2",
        subnet_overrides=parse_subnet_overrides(
            ["a=172.30.0.0/24", "b=172.31.0.0/24", "public=10.1.0.0/24", "control=10.251.0.0/24"]
        ),
    )
    assert two.node("node3").addresses == {"a": "172.30.0.13", "public": "10.1.0.3"}
    assert two.router("router-b").public_ip == "10.1.0.253"
    assert two.control.subnet == "10.251.0.0/24"
    assert two.node("node0").relay_server_addrs == (
        "/ip4/172.30.0.13/tcp/4001",
        "/ip4/10.1.0.7/tcp/4001",
    )
    assert two.node("node0").peer_id != one.node("node0").peer_id  # keys derive from the name
    assert two.node("node0").peer_id == node_key("sentry2", "node0").peer_id
    subnets_one = {n.subnet for n in (*one.networks, one.control)}
    subnets_two = {n.subnet for n in (*two.networks, two.control)}
    assert not subnets_one & subnets_two
    out = tmp_path / "two"
    render(two, out, IMAGE)
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert compose["services"]["node0"]["container_name"] == "sentry2-node0"
    assert compose["networks"]["a"]["name"] == "sentry2_a"
    assert compose["services"]["node0"]["labels"]["sentrynet.testnet"] == "sentry2"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["a"], "expected NET=CIDR"),
        (["zz=10.9.0.0/24"], "'zz' is not a network"),
        (["a=172.30.0.0/16"], "must be a /24"),
        (["a=bogus"], "not a valid IPv4 subnet"),
        (["a=172.21.0.0/24"], "overlaps"),
    ],
)
def test_bad_subnet_overrides(items: list[str], message: str) -> None:
    topo = load_topology("scenarios/sentry.yaml")
    with pytest.raises(SentrynetError, match=message):
        build_testnet(topo, subnet_overrides=parse_subnet_overrides(items))


def test_render_refuses_a_foreign_directory_and_cleans_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    tn = build_testnet(load_topology("scenarios/mini.yaml"))
    with pytest.raises(SentrynetError, match="not a rendered testnet"):
        render(tn, foreign, IMAGE)
    assert (foreign / "important.txt").read_text() == "keep me"
    out = tmp_path / "out"
    render(build_testnet(load_topology("scenarios/sentry.yaml")), out, IMAGE)
    render(tn, out, IMAGE)  # re-render a smaller testnet into the same dir
    assert sorted(p.name for p in (out / "nodes").iterdir()) == ["relay", "val-a", "val-b"]


def test_unreachable_relay_server_is_rendered_and_warned(tmp_path: Path) -> None:
    text = (
        Path("scenarios/seed-exact.yaml")
        .read_text()
        .replace(
            "    relay_servers: [node3]\n  node1:", "    relay_servers: [node3, node7]\n  node1:"
        )
    )
    path = tmp_path / "x.yaml"
    path.write_text(text)
    tn = build_testnet(load_topology(path))
    assert tn.node("node0").relay_server_addrs[1] == "/ip4/10.0.0.7/tcp/4001"
    assert any("node0: relay server node7" in w and "unreachable" in w for w in tn.warnings)


def test_extra_node_config_is_merged(tmp_path: Path) -> None:
    text = (
        Path("scenarios/mini.yaml")
        .read_text()
        .replace(
            "    relay_mode: server\n",
            "    relay_mode: server\n    config:\n      relay: {max_reservations: 7}\n"
            "      dcutr: {enabled: false}\n",
        )
    )
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    tn = build_testnet(load_topology(path))
    render(tn, tmp_path / "out", IMAGE)
    cfg = tomllib.loads((tmp_path / "out/nodes/relay/node.toml").read_text())
    assert cfg["relay"]["max_reservations"] == 7
    assert cfg["dcutr"]["enabled"] is False


def test_render_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from harness.cli import render as render_cmd

    parser = argparse.ArgumentParser()
    render_cmd.register(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            *("scenarios/mini.yaml", "--out", str(out), "--image", IMAGE, "--name", "mini2"),
            *("--subnet", "public=172.27.0.0/24"),
        ]
    )
    assert render_cmd.run(args) == 0
    assert "rendered testnet mini2 (3 nodes, 2 routers" in capsys.readouterr().out
    tn = Testnet.load(out)
    assert tn.name == "mini2"
    assert tn.node("relay").addresses == {"public": "172.27.0.10"}
    assert tn.router("router-a").public_ip == "172.27.0.254"


def test_swarm_engine_puts_the_data_networks_on_internal_overlays(tmp_path: Path) -> None:
    """--engine swarm: every data network an attachable overlay, internal (private ones too:
    an overlay that is not internal joins each container to docker_gwbridge, a way off the
    testnet), the control network a local bridge the host reaches; the services, their
    static IPs and testnet.json's engine as rendered."""
    _, out = rendered(tmp_path, "scenarios/sentry.yaml", engine="swarm")
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    tn = Testnet.load(out)
    for name in ("a", "b", "public"):
        net = compose["networks"][name]
        assert (net["driver"], net["attachable"], net["internal"]) == ("overlay", True, True)
        # the overlay's own addresses (one per host attached) never collide with the model's
        (ipam,) = net["ipam"]["config"]
        block = ipaddress.ip_network(ipam["ip_range"])
        assert block.subnet_of(ipaddress.ip_network(ipam["subnet"])) and block.num_addresses >= 16
        taken = {h.addresses[name] for h in tn.hosts() if name in h.addresses}
        assert not any(ipaddress.ip_address(ip) in block for ip in taken), (name, block)
        assert "driver_opts" not in net
        assert net["labels"]["sentrynet.testnet"] == "sentry"
    control = compose["networks"]["control"]
    assert (control["driver"], control["internal"]) == ("bridge", True)
    assert compose["services"]["router-a"]["networks"]["a"] == {"ipv4_address": "172.20.0.254"}
    assert Testnet.load(out).engine == "swarm"
    _, plain = rendered(tmp_path / "plain", "scenarios/sentry.yaml")
    assert Testnet.load(plain).engine == "compose"


def test_an_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(SentrynetError, match="--engine 'kubernetes': use one of compose, swarm"):
        build_testnet(load_topology("scenarios/sentry.yaml"), engine="kubernetes")


def test_relay_clients_start_after_their_relays_and_relays_after_no_node(tmp_path: Path) -> None:
    """The 64-node bench topology: every client's compose service depends on the sentries
    it reserves on; the sentries, which relay for each other in a ring, depend on no node
    (a cycle would stop compose)."""
    from bench import topogen

    tn = build_testnet(topogen.write(topogen.scale(64, 8), tmp_path / "s.yaml"))
    out = tmp_path / "out"
    render(tn, out, IMAGE)
    services = yaml.safe_load((out / "docker-compose.yml").read_text())["services"]
    nodes = {n.name for n in tn.nodes}
    for n in tn.nodes:
        deps = {d for d in services[n.name].get("depends_on", {}) if d in nodes}
        if n.relay_client:
            assert deps == set(n.relay_servers), n.name
        else:
            assert deps == set(), n.name
