"""Start, for a testnet that spans hosts: the start stage's part on the other hosts of a
multi-host swarm (topology `placement:`, `--host NAME=URL`; docs/multi-host.md).

The manager (the engine the harness talks to) gets the overlays, created here with the
testnet's labels plus LABEL_HOSTS (which hosts to find its containers on); every host gets
the images (shipped, no registry). Containers placed on this engine start with compose as
always. Those placed on another host are created from the same rendered compose service
through that host's engine API: a worker cannot create overlay networks and compose there
does not see an attachable network no container of that host uses yet. Their /config is
copied into the container (the rendered directory is on this host only), their data
volume created on their host. Routers start first, everywhere, with the one-shot `-ready`
container of each, and every one of those must have finished before any node starts (the
compose file's `depends_on`, kept by hand across hosts).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import yaml

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra import ship, swarm
from harness.infra.compose import Compose
from harness.infra.render import ROUTER_READY_S
from harness.model.testnet import Testnet
from harness.progress import Progress
from harness.wait import wait_until

# as long as each router's -ready container itself waits (docker-compose.yml.j2)
ROUTER_READY_DEADLINE_S = float(ROUTER_READY_S)


def other_engines(testnet: Testnet) -> dict[str, docker.DockerClient]:
    """Each other host's engine, answering and in this engine's swarm, or an error that
    says how to join it."""
    now = swarm.state()
    if not (now.active and now.manager):
        raise SentrynetError(
            f"testnet {testnet.name} spans hosts ({', '.join(testnet.engine_hosts)}): this "
            "engine must be a manager of a swarm they joined; `docker swarm init "
            "--advertise-addr <this host's private address>` here and `docker swarm join` "
            "on each host (docs/multi-host.md)"
        )
    members = {n.id for n in docker_ops.client().nodes.list()}
    out = {}
    for name, url in testnet.engine_hosts.items():
        client = docker_ops.engine_answering(url, f"--host {name}=")
        info = client.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or info.get("NodeID") not in members:
            token = "$(docker swarm join-token -q worker)"
            raise SentrynetError(
                f"--host {name}={url}: that engine is not in this swarm (state "
                f"{info.get('LocalNodeState')!r}); on it: docker swarm join --token {token} "
                f"<this manager's address>:2377"
            )
        out[name] = client
    return out


def ship_images(
    clients: dict[str, docker.DockerClient], refs: list[str], progress: Progress
) -> None:
    for name, client in clients.items():
        for ref in refs:
            progress.say(ship.ship(ref, client, progress, engine=name).describe(name))


def create_overlays(testnet: Testnet, progress: Progress) -> None:
    """The data networks and the control network as attachable internal overlays, labelled
    as compose labels them plus LABEL_HOSTS."""
    hosts = json.dumps(testnet.engine_hosts, sort_keys=True)
    client = docker_ops.client()
    with progress.step(f"create {len(testnet.networks) + 1} overlay networks across hosts"):
        for net in (*testnet.networks, testnet.control):
            labels = {**testnet.network_labels(net), docker_ops.LABEL_HOSTS: hosts}
            client.networks.create(
                net.docker_name,
                driver="overlay",
                attachable=True,
                internal=True,
                ipam=docker.types.IPAMConfig(
                    pool_configs=[
                        # each host's load-balancer address comes from a block no container
                        # of the model asks for (Testnet.dynamic_range)
                        docker.types.IPAMPool(
                            subnet=net.subnet, iprange=testnet.dynamic_range(net.name)
                        )
                    ]
                ),
                labels=labels,
            )


def _seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)s", str(text).strip())
    return int(m.group(1)) if m else 10


def _tar_of(directory: Path, as_name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname=as_name)
    return buf.getvalue()


def create_service(
    client: docker.DockerClient, doc: dict[str, Any], service: str, run_dir: Path
) -> Any:
    """Create and start one compose service of the rendered file on another host's engine:
    the fields docker-compose.yml.j2 uses, bind-mounted rendered directories copied in."""
    svc = doc["services"][service]
    net_names = {k: v["name"] for k, v in (doc.get("networks") or {}).items()}
    volumes, copies = [], []
    for spec in svc.get("volumes") or []:
        src, dst = spec.split(":")[:2]
        if src.startswith("./"):
            copies.append((run_dir / src[2:], dst))
            continue
        vol = doc["volumes"][src]
        if not client.volumes.list(filters={"name": vol["name"]}):
            client.volumes.create(vol["name"], labels=vol.get("labels") or {})
        volumes.append(f"{vol['name']}:{dst}")
    nets = list((svc.get("networks") or {}).items())
    kwargs: dict[str, Any] = {}
    mode = str(svc.get("network_mode") or "")
    if mode.startswith("service:"):  # anyone's own image in its `-net` container's netns
        kwargs["network_mode"] = f"container:{doc['services'][mode[8:]]['container_name']}"
    else:
        first, first_cfg = nets[0]
        kwargs["network"] = net_names[first]
        kwargs["networking_config"] = {
            net_names[first]: client.api.create_endpoint_config(
                ipv4_address=(first_cfg or {}).get("ipv4_address")
            )
        }
        nets = nets[1:]
    if "healthcheck" in svc:
        hc = svc["healthcheck"]
        kwargs["healthcheck"] = {
            "test": hc["test"],
            "interval": _seconds(hc["interval"]) * 10**9,
            "timeout": _seconds(hc["timeout"]) * 10**9,
            "retries": int(hc["retries"]),
        }
    container = client.containers.create(
        svc["image"],
        svc.get("command"),
        name=svc["container_name"],
        hostname=svc.get("hostname"),
        init=bool(svc.get("init")),
        cap_add=svc.get("cap_add"),
        sysctls={k: str(v) for k, v in (svc.get("sysctls") or {}).items()} or None,
        labels={str(k): str(v) for k, v in (svc.get("labels") or {}).items()},
        volumes=volumes,
        stop_signal="SIGTERM",
        cpu_shares=svc.get("cpu_shares"),  # topology cpu_weight
        **kwargs,
    )
    for key, cfg in nets:
        client.api.connect_container_to_network(
            container.id, net_names[key], ipv4_address=(cfg or {}).get("ipv4_address")
        )
    for src, dst in copies:
        parent, name = dst.rsplit("/", 1)
        if not container.put_archive(parent or "/", _tar_of(src, name)):
            raise SentrynetError(f"{svc['container_name']}: could not copy {src} to {dst}")
    container.start()
    return container


def start_services(
    testnet: Testnet,
    run_dir: Path,
    compose: Compose,
    clients: dict[str, docker.DockerClient],
    progress: Progress,
) -> None:
    """Routers everywhere, ready, then the relays clients start after (the compose file's
    `depends_on`, which `--no-deps` leaves out), then the other nodes everywhere (and the
    control gateway here)."""
    doc = yaml.safe_load((run_dir / "docker-compose.yml").read_text())
    routers = [(s, r.host) for r in testnet.routers for s in (r.name, f"{r.name}-ready")]
    awaited = {r for n in testnet.nodes for r in testnet.starts_after(n)}
    relays: list[tuple[str, str | None]] = []
    nodes: list[tuple[str, str | None]] = []
    for n in testnet.nodes:
        stage_of = relays if n.name in awaited else nodes
        if n.image:
            stage_of.append((f"{n.name}-net", n.host))
        stage_of.append((n.name, n.host))
    stages = [("routers", routers), ("relays", relays), ("nodes", nodes)]
    for stage, members in [(name, m) for name, m in stages if m or name == "nodes"]:
        here = [s for s, h in members if h is None]
        if stage == "nodes" and testnet.control_gateway is not None:
            here.append("ctlgw")
        with progress.step(f"start {stage}: {_where(members)}"):
            for service, host in members:
                if host is not None:
                    create_service(clients[host], doc, service, run_dir)
            if here:
                compose.run("up", "-d", "--no-build", "--no-deps", *here)
        if stage == "routers":
            _wait_routers_ready(testnet, [r.name for r in testnet.routers])


def _where(members: list[tuple[str, str | None]]) -> str:
    by: dict[str, list[str]] = {}
    for s, h in members:
        by.setdefault(h or "this engine", []).append(s)
    return "; ".join(f"{h}: {', '.join(ss)}" for h, ss in by.items())


def _wait_routers_ready(testnet: Testnet, routers: list[str]) -> None:
    """Until every router's `-ready` container has exited 0 (router.sh finished); one that
    exited otherwise fails the start at once with its words."""

    def probe() -> tuple[bool, str]:
        waiting = []
        for name in routers:
            c = docker_ops.node_container(testnet.name, f"{name}-ready")
            c.reload()
            code = (c.attrs.get("State") or {}).get("ExitCode")
            if c.status == "exited" and code != 0:
                said = c.logs(tail=5).decode(errors="replace").strip()
                raise SentrynetError(f"router {name} did not become ready (exit {code}): {said}")
            if c.status != "exited":
                waiting.append(f"{name} {c.status}")
        return not waiting, ", ".join(waiting) or "all ready"

    wait_until(
        probe,
        what=f"the routers of {testnet.name} to be ready on their hosts",
        deadline_s=ROUTER_READY_DEADLINE_S,
        likely_cause="router.sh failed in a router container (`sentrynet logs ROUTER`)",
        interval_s=0.5,
    )
