"""Docker Swarm mode for `--engine swarm`: joined when a testnet needs it, left as it was found.

A testnet on the swarm engine puts its data networks on attachable, internal overlay
networks (docker-compose.yml.j2) and starts its containers with compose as on the compose
engine: Swarm services cannot be given static IPs (moby #24170; `docker stack deploy`
ignores `ipv4_address`), and a NAT testnet needs them. Overlays need the engine to be a
swarm manager, so:

- `ensure` initialises a single-node swarm when the engine is in none, bound to loopback
  (`--advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377`: nothing listens beyond the
  machine) with an address pool that avoids every subnet in use, and marks the swarm's node
  with OWNER_LABEL (and whether docker_gwbridge was already there) so that sentrynet, and
  only sentrynet, leaves it again. A swarm the user runs is used as it is and never left.
- `release_if_unused` leaves a swarm sentrynet initialised once no sentrynet overlay network
  remains (another testnet may still be on it) and removes the docker_gwbridge network the
  swarm created; the engine is then as it was before `ensure`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import docker.errors
from docker.models.networks import Network

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.progress import Progress
from harness.wait import WaitTimeout, wait_until

OWNER_LABEL = "sentrynet.swarm-owner"  # on the swarm node: sentrynet initialised this swarm
GWBRIDGE_LABEL = "sentrynet.gwbridge-before"  # "present" | "absent" when it initialised it
GWBRIDGE = "docker_gwbridge"
LISTEN = "127.0.0.1:2377"
# After `swarm leave` the engine detaches the ingress sandbox from docker_gwbridge, which
# cannot be removed before: within a second usually, more than 30 s once in a CI run (engine
# 20.10, the Docker tier running alone); the ingress network went with it minutes later.
GWBRIDGE_DEADLINE_S = 120.0
INGRESS_DEADLINE_S = 30.0
POOLS = ("10.249.0.0/16", "10.248.0.0/16", "10.247.0.0/16", "10.246.0.0/16")


@dataclass(frozen=True)
class SwarmState:
    """What the engine's swarm mode is now."""

    state: str  # inactive | active | pending | error | locked
    node_id: str
    manager: bool
    owned: bool  # initialised by sentrynet (OWNER_LABEL on its node)

    @property
    def active(self) -> bool:
        return self.state == "active"


def state() -> SwarmState:
    info = docker_ops.client().info().get("Swarm") or {}
    node_id = str(info.get("NodeID") or "")
    manager = bool(info.get("ControlAvailable"))
    owned = False
    if node_id and manager:
        labels = _node_labels(node_id)
        owned = labels.get(OWNER_LABEL) == "sentrynet"
    return SwarmState(str(info.get("LocalNodeState") or "inactive"), node_id, manager, owned)


def _node_labels(node_id: str) -> dict[str, str]:
    node = docker_ops.client().nodes.get(node_id)
    return dict((node.attrs.get("Spec") or {}).get("Labels") or {})


def free_pool(avoid: list[str]) -> str:
    """The first of POOLS that overlaps no Docker network and none of `avoid` (the testnet's
    own subnets): the swarm's ingress network is carved from it."""
    taken = [*docker_ops.subnets_in_use(), *(ipaddress.ip_network(s) for s in avoid)]
    for pool in POOLS:
        net = ipaddress.ip_network(pool)
        if not any(net.version == t.version and net.overlaps(t) for t in taken):
            return pool
    raise SentrynetError(
        f"no free address pool for the swarm among {', '.join(POOLS)}; remove the Docker "
        "networks using them, or `docker swarm init --default-addr-pool CIDR` yourself"
    )


def ensure(progress: Progress, avoid: list[str]) -> SwarmState:
    """A swarm manager to create overlay networks on: the engine's own swarm when it is a
    manager of one, else a single-node swarm on loopback that sentrynet owns."""
    now = state()
    if now.active and now.manager:
        return now
    if now.state != "inactive":
        raise SentrynetError(
            f"this Docker engine is in swarm state {now.state!r}"
            + (" as a worker" if now.active else "")
            + ": --engine swarm needs a manager (run it on a manager node, or `docker swarm "
            "leave` first)"
        )
    client = docker_ops.client()
    gw_before = "present" if _gwbridges() else "absent"
    pool = free_pool(avoid)
    with progress.step(f"docker swarm init (single node, on {LISTEN}, address pool {pool})"):
        try:
            client.swarm.init(
                advertise_addr="127.0.0.1",
                listen_addr=LISTEN,
                default_addr_pool=[pool],
                subnet_size=24,
            )
        except docker.errors.APIError as exc:
            raise SentrynetError(f"docker swarm init failed: {exc.explanation or exc}") from exc
        # the engine sets up the ingress network's sandbox after init returns; a swarm left
        # before that is done keeps a stale `ingress` network and its docker_gwbridge
        # endpoint until the daemon restarts (seen on engine 20.10): wait for it
        wait_until(
            _ingress_ready,
            what="the swarm's ingress sandbox",
            deadline_s=INGRESS_DEADLINE_S,
            likely_cause="the engine cannot create the ingress network's sandbox (VXLAN "
            "support missing in the kernel?)",
        )
        now = state()
        node = client.nodes.get(now.node_id)
        spec = dict(node.attrs["Spec"])
        spec["Labels"] = {**(spec.get("Labels") or {}), OWNER_LABEL: "sentrynet"}
        spec["Labels"][GWBRIDGE_LABEL] = gw_before
        node.update(spec)
    return state()


def _ingress_ready() -> tuple[bool, str]:
    for net in docker_ops.client().networks.list(names=["ingress"]):
        net.reload()
        if "ingress-sbox" in (net.attrs.get("Containers") or {}):
            return True, "ingress-sbox attached"
    return False, "no ingress-sbox on the ingress network yet"


def _gwbridges() -> list[Network]:
    """docker_gwbridge (the name filter matches substrings: keep the exact name only)."""
    return [n for n in docker_ops.client().networks.list(names=[GWBRIDGE]) if n.name == GWBRIDGE]


def _sentrynet_overlays(except_testnet: str | None) -> list[str]:
    names = []
    for net in docker_ops.client().networks.list(
        filters={"label": docker_ops.LABEL_TESTNET, "driver": "overlay"}
    ):
        if (net.attrs.get("Labels") or {}).get(docker_ops.LABEL_TESTNET) != except_testnet:
            names.append(net.name)
    return names


def release_if_unused(except_testnet: str | None = None) -> str | None:
    """Leave the swarm when sentrynet initialised it and no sentrynet overlay network is left
    (but `except_testnet`'s, which is being removed); what was done, in words, or None."""
    now = state()
    if not (now.active and now.owned):
        return None
    others = _sentrynet_overlays(except_testnet)
    if others:
        return None
    gw_before = _node_labels(now.node_id).get(GWBRIDGE_LABEL, "present")
    client = docker_ops.client()
    try:
        client.swarm.leave(force=True)
    except docker.errors.APIError as exc:
        return f"could not leave the swarm sentrynet initialised: {exc.explanation or exc}"
    said = "left the single-node swarm sentrynet had initialised"
    if gw_before == "absent" and _gwbridges():
        try:
            remove_gwbridge()
            said += f" and removed {GWBRIDGE}"
        except WaitTimeout as exc:
            said += f"; {GWBRIDGE} not removed ({exc.last_seen}): `docker network rm {GWBRIDGE}`"
    return said


def remove_gwbridge() -> None:
    """Remove docker_gwbridge once the engine lets go of it (GWBRIDGE_DEADLINE_S); raises
    WaitTimeout naming what it last saw."""
    wait_until(
        _gwbridge_removed,
        what=f"{GWBRIDGE} to be removed",
        deadline_s=GWBRIDGE_DEADLINE_S,
        likely_cause="the engine still detaches the ingress sandbox from it after the swarm "
        "was left",
    )


def _gwbridge_removed() -> tuple[bool, str]:
    """Remove docker_gwbridge; right after `swarm leave` the engine may still hold the
    ingress sandbox's endpoint on it ("has active endpoints"), so this is polled."""
    for net in _gwbridges():
        try:
            net.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            return False, str(exc.explanation or exc)
    return not _gwbridges(), "removed"
