"""The multi-host path of docs/multi-host.md, on one machine: a second Docker engine in a
network namespace of its own (testkit/engine_host.py) is a second host, joined to a swarm
whose manager is this machine's engine over a veth link.

What is exercised, as a user does it on two hosts: `docker swarm init` on a private
address and `join` with the worker token; the images shipped to the second engine without
a registry (`sentrynet images ship`); attachable internal overlays created on the manager
and used from both hosts; a NAT router with its private network placed on the second host,
its iptables rules in its own container there; a node behind it reaching a peer on the
first host through it only (the peer sees the router's public address, and without the
route via the router nothing gets out); a transfer of several MB over VXLAN at the
overlay's MTU. Everything is removed and the engine left as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
import yaml

from harness import scenarios
from harness.infra import docker as docker_ops
from harness.infra import images, ship, swarm
from harness.progress import Progress
from harness.pytest_plugin import skip_unless_ci
from harness.run import cleanup, runner
from harness.wait import wait_until
from testkit.engine_host import EngineHost, missing_tools

pytestmark = pytest.mark.docker

LABEL = {docker_ops.LABEL_TESTNET: f"t{os.getpid()}-mh"}
PUBLIC, PRIVATE = "10.77.0.0/24", "172.30.0.0/24"
ROUTER_PUB, ROUTER_PRIV, NODE, PEER = "10.77.0.254", "172.30.0.254", "172.30.0.10", "10.77.0.20"
PAYLOAD = 3_000_000
SENTRY = Path(__file__).resolve().parents[2] / "scenarios" / "sentry.yaml"


@dataclass
class TwoHosts:
    worker: EngineHost
    image: str


def _networks() -> set[str]:
    return {n.name for n in docker_ops.client().networks.list()}


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[TwoHosts]:
    lacking = missing_tools()
    if lacking:
        skip_unless_ci(f"a second engine needs {', '.join(lacking)}", "CI's machine has them")
    if swarm.state().state != "inactive":
        skip_unless_ci(
            "this engine is in a swarm already (a user's): not touched",
            "its engine starts in no swarm",
        )
    before = _networks()
    image = images.node_image_tag()
    host = EngineHost(f"snh{os.getpid() % 100000}")
    manager = docker_ops.client()
    try:
        host.start()
        manager.swarm.init(
            advertise_addr=host.host_ip,
            listen_addr=f"{host.host_ip}:2377",
            default_addr_pool=[swarm.free_pool([PUBLIC, PRIVATE])],
            subnet_size=24,
        )
        wait_until(swarm._ingress_ready, what="ingress", deadline_s=30, likely_cause="engine")
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        host.client().swarm.join(
            remote_addrs=[f"{host.host_ip}:2377"],
            join_token=token,
            advertise_addr=host.ip,
            listen_addr=f"{host.ip}:2377",
        )
        yield TwoHosts(host, image)
    finally:
        for c in manager.containers.list(all=True, filters={"label": docker_ops.LABEL_TESTNET}):
            if c.labels.get(docker_ops.LABEL_TESTNET) == LABEL[docker_ops.LABEL_TESTNET]:
                c.remove(force=True)
        host.stop()
        with contextlib.suppress(docker.errors.APIError):
            manager.swarm.leave(force=True)
        wait_until(
            lambda: swarm._gwbridge_removed() if swarm.GWBRIDGE not in before else (True, ""),
            what="docker_gwbridge removed",
            deadline_s=30,
            likely_cause="the engine still detaches the ingress sandbox",
        )
        assert _networks() == before, "the engine's networks are as before"


def test_images_ship_to_the_second_host_once(two_hosts: TwoHosts) -> None:
    worker = two_hosts.worker.client()
    first = ship.ship(two_hosts.image, worker, Progress(), engine="host 2")
    assert first.sent_bytes > 10_000_000, first
    assert (
        worker.images.get(two_hosts.image).id == docker_ops.client().images.get(two_hosts.image).id
    )
    again = ship.ship(two_hosts.image, worker, Progress(), engine="host 2")
    assert again.sent_bytes == 0, "a tag with the same id is not sent again"


def test_the_second_host_joined_as_a_worker(two_hosts: TwoHosts) -> None:
    nodes = docker_ops.client().nodes.list()
    assert len(nodes) == 2
    addrs = {n.attrs["Status"]["Addr"]: n.attrs["Spec"]["Role"] for n in nodes}
    assert addrs == {two_hosts.worker.host_ip: "manager", two_hosts.worker.ip: "worker"}


def test_a_router_on_the_second_host_is_its_networks_only_way_out(two_hosts: TwoHosts) -> None:
    ship.ship(two_hosts.image, two_hosts.worker.client(), Progress(), engine="host 2")
    manager, worker = docker_ops.client(), two_hosts.worker.client()
    nets = {}
    for name, subnet in (("pub", PUBLIC), ("priv", PRIVATE)):
        nets[name] = manager.networks.create(
            f"t{os.getpid()}-mh-{name}",
            driver="overlay",
            attachable=True,
            internal=True,
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)]),
            labels=LABEL,
        )
    try:
        _route_through_a_router_on_host_2(manager, worker, two_hosts.image, nets)
    finally:
        for c in worker.containers.list(all=True):
            c.remove(force=True)
        for c in manager.containers.list(all=True, filters={"label": docker_ops.LABEL_TESTNET}):
            if c.labels.get(docker_ops.LABEL_TESTNET) == LABEL[docker_ops.LABEL_TESTNET]:
                c.remove(force=True)
        for n in nets.values():
            with contextlib.suppress(docker.errors.APIError):
                n.remove()


def _route_through_a_router_on_host_2(
    manager: docker.DockerClient,
    worker: docker.DockerClient,
    image: str,
    nets: dict[str, docker.models.networks.Network],
) -> None:
    pub, priv = nets["pub"].name, nets["priv"].name
    # host 1: a public peer serving PAYLOAD bytes over HTTP, logging who asked
    peer = manager.containers.create(
        image,
        ["sh", "-c", f"head -c {PAYLOAD} /dev/urandom > big && exec python3 -m http.server 8080"],
        labels=LABEL,
        network=pub,
        networking_config={pub: manager.api.create_endpoint_config(ipv4_address=PEER)},
        working_dir="/tmp",
    )
    peer.start()
    # host 2: the router (MASQUERADE out of its public side, nothing in unless answered)
    # and a node behind it whose default route is the router
    router = worker.containers.create(
        image,
        ["sleep", "600"],
        cap_add=["NET_ADMIN"],
        sysctls={"net.ipv4.ip_forward": "1"},
        labels=LABEL,
        network=priv,
        networking_config={priv: worker.api.create_endpoint_config(ipv4_address=ROUTER_PRIV)},
    )
    worker.api.connect_container_to_network(router.id, pub, ipv4_address=ROUTER_PUB)
    router.start()
    rules = (
        f"PUB=$(ip -o -4 addr show | awk '/ {ROUTER_PUB}\\//{{print $2}}'); "
        "iptables -t nat -A POSTROUTING -o $PUB -j MASQUERADE && "
        "iptables -A FORWARD -i $PUB -m state --state ESTABLISHED,RELATED -j ACCEPT && "
        "iptables -A FORWARD -i $PUB -j DROP"
    )
    res = router.exec_run(["sh", "-c", rules])
    assert res.exit_code == 0, res.output
    node = worker.containers.create(
        image,
        ["sleep", "600"],
        cap_add=["NET_ADMIN"],
        labels=LABEL,
        network=priv,
        networking_config={priv: worker.api.create_endpoint_config(ipv4_address=NODE)},
    )
    node.start()
    links = node.exec_run(["ip", "-o", "link"]).output.decode()
    assert links.count("link/ether") == 1, f"the node has one interface, its network's: {links}"
    fetch = (
        "import urllib.request,sys;"
        f"d=urllib.request.urlopen('http://{PEER}:8080/big',timeout=10).read();"
        "print(len(d))"
    )
    # without a route via the router there is no way out of the private network
    node.exec_run(["ip", "route", "del", "default"])
    res = node.exec_run(["python3", "-c", fetch])
    assert res.exit_code != 0 and b"unreachable" in res.output.lower(), res.output
    res = node.exec_run(["ip", "route", "add", "default", "via", ROUTER_PRIV])
    assert res.exit_code == 0, res.output
    res = node.exec_run(["python3", "-c", fetch])
    assert res.exit_code == 0 and res.output.decode().strip() == str(PAYLOAD), res.output
    seen = peer.logs().decode()
    assert f"{ROUTER_PUB} - -" in seen and NODE not in seen, seen
    mtu = node.exec_run(["cat", "/sys/class/net/eth0/mtu"]).output.decode().strip()
    assert int(mtu) <= 1450, f"overlay MTU {mtu}: VXLAN takes 50 bytes of the link's 1500"


def test_the_sentry_scenario_with_network_b_on_the_second_host(
    two_hosts: TwoHosts, tmp_path: Path
) -> None:
    """`sentrynet scenario sentry --engine swarm --host h2=URL` on the sentry topology with
    `placement: h2` on network b: router-b and node4..node7 on the second engine, the rest
    here, the API reached through the control gateway; all six checks, the wipe and restart
    of node4 on the second host included."""
    doc = yaml.safe_load(SENTRY.read_text())
    doc["networks"]["b"]["placement"] = "h2"
    topo = tmp_path / "sentry-two-hosts.yaml"
    topo.write_text(yaml.safe_dump(doc, sort_keys=False))
    sc = dataclasses.replace(scenarios.get("sentry"), topology=str(topo))
    hosts = {"h2": two_hosts.worker.url}
    report, run_dir = runner.run(
        sc, engine="swarm", hosts=hosts, keep=True, results_root=tmp_path / "results"
    )
    name = report.get("testnet")
    assert name, f"the testnet did not come up: {report.get('error')} ({run_dir})"
    try:
        on_h2 = {
            c.labels.get(docker_ops.LABEL_NODE)
            for c in two_hosts.worker.client().containers.list(
                filters={"label": f"{docker_ops.LABEL_TESTNET}={name}"}
            )
        }
        here = {
            c.labels.get(docker_ops.LABEL_NODE)
            for c in docker_ops.client().containers.list(
                filters={"label": f"{docker_ops.LABEL_TESTNET}={name}"}
            )
        }
    finally:
        removed = cleanup.down(name)
    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["passed"]]
    assert report["passed"], f"{failed} {report.get('error')} ({run_dir})"
    assert on_h2 == {"router-b", "node4", "node5", "node6", "node7"}, on_h2
    assert here == {"router-a", "node0", "node1", "node2", "node3", "ctlgw"}, here
    assert "router-b" in str(removed.containers) and not removed.errors, removed
    assert not two_hosts.worker.client().containers.list(all=True), "nothing left on host 2"
