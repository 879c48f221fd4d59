"""Placement across hosts (topology `placement:`, `--host NAME=URL`; docs/multi-host.md):
validated by field, resolved into the model, rendered, and the control gateway's proxy
forwarding real HTTP on loopback. The run across two engines is
tests/docker/test_multihost.py."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harness.cli._options import parse_hosts
from harness.client import describe_error
from harness.errors import SentrynetError
from harness.infra.render import render
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import TopologyError, load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]
SENTRY = REPO / "scenarios" / "sentry.yaml"
HOSTS = {"h2": "unix:///tmp/h2.sock"}


def sentry_with(changes: dict[str, dict[str, Any]]) -> str:
    doc = yaml.safe_load(SENTRY.read_text())
    for net, fields in changes.items():
        doc["networks"][net].update(fields)
    return yaml.safe_dump(doc)


def test_placement_is_validated_by_field() -> None:
    with pytest.raises(TopologyError, match=r"networks\.public\.placement: the public network"):
        parse_topology(sentry_with({"public": {"placement": "h2"}}))
    with pytest.raises(TopologyError, match=r"networks\.b\.placement: expected a host name"):
        parse_topology(sentry_with({"b": {"placement": 2}}))
    with pytest.raises(TopologyError, match=r"networks\.b\.placement: 'H 2' is not a valid host"):
        parse_topology(sentry_with({"b": {"placement": "H 2"}}))
    # node3, the sentry of a, is on a and the public network: a node runs on one host
    doc = yaml.safe_load(sentry_with({"b": {"placement": "h2"}}))
    doc["nodes"]["node3"]["networks"]["b"] = "172.21.0.30"
    with pytest.raises(TopologyError, match=r"nodes\.node3\.networks: its private networks"):
        parse_topology(yaml.safe_dump(doc))


def test_placement_resolves_routers_nodes_and_the_control_gateway() -> None:
    topo = parse_topology(sentry_with({"b": {"placement": "h2"}}), "sentry.yaml")
    tn = build_testnet(topo, "mh", engine="swarm", hosts=HOSTS)
    assert tn.engine_hosts == HOSTS
    assert tn.router("router-b").host == "h2" and tn.router("router-a").host is None
    assert {n.name for n in tn.nodes if n.host == "h2"} == {"node4", "node5", "node6", "node7"}
    gw = tn.control_gateway
    assert gw is not None and gw.control_ip.endswith(".2") and gw.local_subnet.endswith("/29")
    assert all(n.api_proxy == gw.proxy_url for n in tn.nodes)
    assert Testnet.from_dict(tn.to_dict()) == tn


def test_placement_without_hosts_runs_here_and_says_so() -> None:
    topo = parse_topology(sentry_with({"b": {"placement": "h2"}}), "sentry.yaml")
    tn = build_testnet(topo, "mh")
    assert not tn.engine_hosts and tn.control_gateway is None
    assert all(n.host is None and n.api_proxy is None for n in tn.nodes)
    assert any("placement ignored (b on h2)" in w for w in tn.warnings)


@pytest.mark.parametrize(
    ("engine", "hosts", "said"),
    [
        ("compose", HOSTS, "--host needs --engine swarm"),
        ("swarm", {"h3": "unix:///x"}, "networks.b.placement: host 'h2' has no engine"),
        ("swarm", {**HOSTS, "h3": "unix:///x"}, "--host h3: no network of sentry is placed"),
    ],
)
def test_hosts_that_do_not_fit_are_refused(engine: str, hosts: dict[str, str], said: str) -> None:
    topo = parse_topology(sentry_with({"b": {"placement": "h2"}}), "sentry.yaml", "sentry")
    with pytest.raises(SentrynetError, match=said.replace(".", r"\.")):
        build_testnet(topo, "mh", engine=engine, hosts=hosts)


def test_host_option_parsing() -> None:
    assert parse_hosts(["h2=ssh://u@h2", "h3=tcp://10.1.0.3:2376"]) == {
        "h2": "ssh://u@h2",
        "h3": "tcp://10.1.0.3:2376",
    }
    with pytest.raises(SentrynetError, match="expected NAME=URL"):
        parse_hosts(["h2"])


def test_render_across_hosts_uses_the_harness_overlays_and_a_gateway(tmp_path: Path) -> None:
    topo = parse_topology(sentry_with({"b": {"placement": "h2"}}), "sentry.yaml")
    tn = build_testnet(topo, "mh", engine="swarm", hosts=HOSTS)
    render(tn, tmp_path, "sentrynet-node:test")
    doc = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    for name in ("a", "b", "public", "control"):
        assert doc["networks"][name] == {"name": f"mh_{name}", "external": True}
    assert doc["networks"]["ctlgw"]["internal"] is True
    gw = doc["services"]["ctlgw"]
    assert gw["networks"]["control"] == {"ipv4_address": tn.control_gateway.control_ip}
    assert gw["command"][1] == "/config/ctlproxy.py"
    assert (tmp_path / "ctlgw" / "ctlproxy.py").read_text().startswith('"""The control gateway')
    assert load_topology(SENTRY).network("b").placement is None  # the file as shipped


@pytest.fixture
def api_on_loopback() -> Iterator[str]:
    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"peer_id": "x"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.5", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.5:{server.server_address[1]}"
    server.shutdown()


def test_the_gateway_proxy_forwards_into_its_subnet_only(
    api_on_loopback: str, tmp_path: Path
) -> None:
    proxy = subprocess.Popen(
        [sys.executable, str(REPO / "templates" / "ctlproxy.py"), "127.0.0.6", "0", "127.0.0.0/29"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proxy.stdout.readline() if proxy.stdout else ""
        assert line.startswith("control gateway: 127.0.0.6:"), line
        port = int(line.split()[2].split(":")[1])
        via = {"http": f"http://127.0.0.6:{port}"}
        resp = requests.get(f"{api_on_loopback}/status", proxies=via, timeout=5)
        assert resp.status_code == 200 and resp.json() == {"peer_id": "x"}
        outside = requests.get("http://127.0.0.9:1/status", proxies=via, timeout=5)
        assert outside.status_code == 403, "127.0.0.9 is outside 127.0.0.0/29"
        down = requests.get("http://127.0.0.4:1/status", proxies=via, timeout=5)
        assert down.status_code == 502, "inside the subnet, nothing listening: a bad gateway"
        assert "refused" in down.headers["X-Sentrynet-Gateway"]
        try:
            down.raise_for_status()
        except requests.HTTPError as exc:
            assert describe_error(exc) == "connection refused"  # as without a gateway
    finally:
        proxy.terminate()
        proxy.wait(timeout=5)
