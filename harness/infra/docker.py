"""The harness's only door to the Docker engine (SDK): find, exec into and remove labelled objects.

Everything a testnet owns carries `sentrynet.testnet=<name>` (docs/contracts.md section 3).
Finding and removing by that label, never by compose project or name pattern, is what makes
`down` work without the rendered directory, after a half-failed start, and side by side
with other testnets on the same machine.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import json
import posixpath
import shutil
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import tenacity
from docker.models.containers import Container

from harness.errors import SentrynetError

LABEL_TESTNET = "sentrynet.testnet"
LABEL_NODE = "sentrynet.node"
# Compose's own labels: where the rendered docker-compose.yml of a running testnet lives.
LABEL_COMPOSE_DIR = "com.docker.compose.project.working_dir"


@functools.cache
def client() -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=60)
        c.ping()
    except Exception as exc:
        raise SentrynetError(
            f"cannot talk to the Docker daemon ({exc}); start it (`systemctl start docker` "
            "or `dockerd`) and make sure this user may use /var/run/docker.sock"
        ) from exc
    return c


def _label(name: str | None) -> str:
    return LABEL_TESTNET if name is None else f"{LABEL_TESTNET}={name}"


# On the networks of a testnet with containers on other hosts (docs/multi-host.md): JSON
# {host name: engine API URL}, so that every operation by label (down, status, logs) finds
# those containers too, without the rendered directory.
LABEL_HOSTS = "sentrynet.hosts"


@functools.cache
def engine(url: str, timeout: int = 60) -> docker.DockerClient:
    """A client of another host's engine (a multi-host testnet), by its API URL; not
    checked (`down` goes on past a host that does not answer)."""
    return docker.DockerClient(base_url=url, timeout=timeout)


def engine_answering(url: str, given_as: str, timeout: int = 600) -> docker.DockerClient:
    """A client of the engine at `url` (unix:///path, tcp://host:port, ssh://user@host)
    that answers, or an error naming the option it came from (`given_as`, e.g. "--to ")."""
    try:
        client = engine(url, timeout)
        client.ping()
    except Exception as exc:  # the SDK raises several kinds for an unreachable engine
        raise SentrynetError(
            f"{given_as}{url}: no Docker engine answers there ({exc}); give the engine's "
            "API, e.g. unix:///var/run/docker.sock or ssh://user@host"
        ) from None
    return client


def is_local(container: Container) -> bool:
    """Is `container` on the engine the harness runs beside (its pids are ours to read)?"""
    return container.client is client()  # engine(url) clients are other objects


def host_urls(name: str) -> dict[str, str]:
    """The other hosts testnet `name` has containers on (LABEL_HOSTS of its networks)."""
    out: dict[str, str] = {}
    for net in client().networks.list(filters={"label": [_label(name), LABEL_HOSTS]}):
        raw = (net.attrs.get("Labels") or {}).get(LABEL_HOSTS) or "{}"
        try:
            out.update({str(k): str(v) for k, v in dict(json.loads(raw)).items()})
        except (ValueError, TypeError):
            continue
    return out


def engines(name: str | None, unreachable: list[str] | None = None) -> list[docker.DockerClient]:
    """This engine, and for a multi-host testnet the engines of its other hosts.

    With `unreachable` given, an engine that does not answer (a host powered off, its
    engine stopped) is left out and named there, so that `down` removes what it can reach
    and says what it left."""
    if name is None:
        return [client()]
    out = [client()]
    for url in sorted(set(host_urls(name).values())):
        if unreachable is None:
            out.append(engine(url))
            continue
        try:  # the client asks the engine its API version as it is made
            eng = engine(url)
            eng.ping()
        except docker.errors.DockerException as exc:
            unreachable.append(f"another host of {name}, {url}, does not answer: {exc}")
            continue
        out.append(eng)
    return out


def containers(name: str | None) -> list[Container]:
    """Containers of testnet `name` (all testnets when None), running or not, on every host
    it has containers on."""
    out: list[Container] = []
    for eng in engines(name):
        out += eng.containers.list(all=True, filters={"label": _label(name)})
    return out


def stopped_containers(name: str) -> list[Container]:
    """Containers of testnet `name` that exited or died, each inspected in full (exit code,
    logs). The listing itself is sparse: a full listing inspects every container, and the
    start-up wait asks twice a second (at 64 nodes, 144 inspections a second that dockerd
    and the harness spent CPU on while the nodes were starting)."""
    out: list[Container] = []
    for eng in engines(name):
        for c in eng.containers.list(all=True, sparse=True, filters={"label": _label(name)}):
            if c.attrs.get("State") in ("exited", "dead"):
                try:
                    out.append(eng.containers.get(c.id))
                except docker.errors.NotFound:
                    continue  # removed meanwhile
    return out


def networks(name: str | None) -> list[Any]:
    """Networks of the testnet: on this engine (a multi-host testnet's overlays are swarm-
    scoped, listed on the manager)."""
    return list(client().networks.list(filters={"label": _label(name)}))


def volumes(name: str | None) -> list[Any]:
    out: list[Any] = []
    for eng in engines(name):
        out += eng.volumes.list(filters={"label": _label(name)})
    return out


def _labels_of_everything() -> list[dict[str, str]]:
    """The labels of every sentrynet container, network and volume, from the list calls
    alone. A full container listing inspects each container after listing it, and one
    removed in between (another testnet tearing down beside us, as `make test`'s two
    scenario workers do) raised NotFound out of `down --all`; the sparse listing carries
    the labels and inspects nothing."""
    out: list[dict[str, str]] = []
    for eng in engines(None):
        for c in eng.containers.list(all=True, sparse=True, filters={"label": _label(None)}):
            out.append(c.attrs.get("Labels") or {})
    for obj in [*networks(None), *volumes(None)]:
        out.append(obj.attrs.get("Labels") or {})
    return out


def testnet_names() -> list[str]:
    """Names of every testnet with anything left on this machine."""
    return sorted({n for labels in _labels_of_everything() if (n := labels.get(LABEL_TESTNET))})


def testnet_dirs() -> dict[str, set[str]]:
    """testnet name -> the rendered directories its objects were started from (Compose's
    working_dir label; empty for a testnet that has only networks or volumes left)."""
    out: dict[str, set[str]] = {}
    for labels in _labels_of_everything():
        name, wd = labels.get(LABEL_TESTNET), labels.get(LABEL_COMPOSE_DIR)
        if name:
            out.setdefault(name, set())
            if wd:
                out[name].add(wd)
    return out


def node_container(testnet: str, node: str) -> Container:
    """The container of one node (or router) by its topology name, on whichever host."""
    found: list[Container] = []
    for eng in engines(testnet):
        found += eng.containers.list(
            all=True, filters={"label": [_label(testnet), f"{LABEL_NODE}={node}"]}
        )
    if not found:
        known = sorted(c.labels.get(LABEL_NODE, "?") for c in containers(testnet))
        raise SentrynetError(
            f"testnet {testnet!r} has no container for {node!r}; "
            f"known: {', '.join(known) or 'none (is it up?)'}"
        )
    return found[0]


@dataclass
class ExecResult:
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def exec_in(container: Container, argv: list[str] | str, *, user: str = "root") -> ExecResult:
    """Run a command in a running container; stdout and stderr together, as text.

    A paused container refuses `docker exec` (409): there the command runs in the
    container's mount and network namespaces from the host (`exec_in_paused`)."""
    cmd = ["sh", "-c", argv] if isinstance(argv, str) else argv
    try:
        code, out = container.exec_run(cmd, user=user, demux=False)
    except docker.errors.APIError as exc:
        if "is paused" not in str(exc):
            raise
        return exec_in_paused(container, cmd)
    return ExecResult(int(code if code is not None else -1), (out or b"").decode(errors="replace"))


def exec_in_paused(container: Container, cmd: list[str]) -> ExecResult:
    """`nsenter` into a frozen container's mount and network namespaces (its own tools,
    its own netns) from the host: the process joins no cgroup of the container, so the
    freezer does not stop it. Needs root and an engine on this host (its pids visible)."""
    container.reload()
    pid = int((container.attrs.get("State") or {}).get("Pid") or 0)
    if (
        pid <= 0
        or not is_local(container)
        or not Path(f"/proc/{pid}/ns/net").exists()
        or shutil.which("nsenter") is None
    ):
        raise SentrynetError(
            f"{container.name} is paused and its namespaces cannot be entered from here "
            f"(pid {pid}; a remote engine, no root, or no nsenter): unpause it first"
        )
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-n", "--", *cmd],
        capture_output=True,
        check=False,
    )
    out = (done.stdout + done.stderr).decode(errors="replace")
    return ExecResult(done.returncode, out)


def must_exec(container: Container, argv: list[str] | str) -> str:
    res = exec_in(container, argv)
    if not res.ok:
        shown = argv if isinstance(argv, str) else " ".join(argv)
        raise SentrynetError(
            f"{container.name}: `{shown}` failed (exit {res.exit_code}): {res.output.strip()}"
        )
    return res.output


def network_subnets(net: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cfgs = (net.attrs.get("IPAM") or {}).get("Config") or []
    return [ipaddress.ip_network(c["Subnet"], strict=False) for c in cfgs if c.get("Subnet")]


def network_gateways(net: Any) -> list[str]:
    """The host-side address of a network's bridge (a container's way out of the testnet).

    Docker lists it in IPAM only when it was given explicitly; otherwise a bridge network
    still takes the first host of each subnet, which is what we report then.
    """
    cfgs = (net.attrs.get("IPAM") or {}).get("Config") or []
    gws = []
    for c in cfgs:
        if c.get("Gateway"):
            gws.append(c["Gateway"])
        elif c.get("Subnet") and net.attrs.get("Driver") == "bridge":
            gws.append(str(ipaddress.ip_network(c["Subnet"], strict=False).network_address + 1))
    return gws


def subnets_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every subnet of every Docker network on this machine (to pick free ones)."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in client().networks.list():  # the list already carries IPAM
        used += network_subnets(net)
    return used


@dataclass
class Removed:
    """What `remove_testnet` removed, for the report `sentrynet down` prints."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what else was done (a swarm left)

    @property
    def nothing(self) -> bool:
        return not (self.containers or self.networks or self.volumes)


def remove_testnet(name: str) -> Removed:
    """Force-remove every container, network and volume labelled with `name`. Idempotent.

    Objects that vanish while we work (a concurrent down, compose finishing) are not errors.
    Containers go first, so the networks are free when their turn comes.
    """
    removed = Removed()
    # before the networks go: they name the other hosts
    engs = engines(name, removed.errors)
    unreachable = len(removed.errors)  # hosts that did not answer: their tasks stay
    found: list[Container] = []
    vols: list[Any] = []
    for eng in engs:
        found += eng.containers.list(all=True, sparse=True, filters={"label": _label(name)})
        vols += eng.volumes.list(filters={"label": _label(name)})
    with ThreadPoolExecutor(REMOVERS) as pool:
        outcomes = list(pool.map(_remove_container, found))
    for c, error in zip(found, outcomes, strict=True):
        if error is None:
            removed.containers.append(_sparse_name(c))
        elif error:
            removed.errors.append(f"container {_sparse_name(c)}: {error}")
    for n in networks(name):
        try:
            n.reload()
            for cid in n.attrs.get("Containers") or {}:
                # An endpoint left by a container we do not own: detach it, never remove it.
                with contextlib.suppress(docker.errors.APIError):
                    n.disconnect(cid, force=True)
            _remove_network(n, patient=unreachable == 0)
            removed.networks.append(n.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            removed.errors.append(f"network {n.name}: {network_refusal(n, exc)}")
    for v in vols:
        try:
            v.remove(force=True)
            removed.volumes.append(v.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            removed.errors.append(f"volume {v.name}: {exc.explanation or exc}")
    return removed


# Containers removed side by side: a forced remove kills the container and waits for it to
# go, a second or more each on a loaded machine, so one by one a 128-node testnet took
# minutes to remove, and an interrupted pytest-xdist worker, which gets 15 s, was cut off
# half way through its testnet.
REMOVERS = 8


def _sparse_name(c: Container) -> str:
    """A container's name from a sparse listing (`Names`: ["/name"]) or a full one."""
    names = c.attrs.get("Names") or [c.attrs.get("Name") or c.id[:12]]
    return str(names[0]).lstrip("/")


def _remove_container(c: Container) -> str | None:
    """Force-remove one container: None when removed, "" when it was already gone, else
    the engine's explanation."""
    try:
        c.remove(force=True, v=True)
    except docker.errors.NotFound:
        return ""
    except docker.errors.APIError as exc:
        return str(exc.explanation or exc)
    return None


# A swarm manager learns that a container on another host left an overlay a moment after
# that host removed it; until then removing the overlay fails "is in use by task" (seen
# in CI: a two-host testnet's public overlay, right after host 2's containers went).
OVERLAY_RELEASE_S = 30.0


def _still_attached_elsewhere(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.APIError) and "in use by task" in str(exc)


def network_refusal(net: Any, exc: docker.errors.APIError) -> str:
    """Why the engine would not remove a testnet's network, with what to do when it is the
    engine's own fault: a network that no container is attached to and that the engine still
    says "has active endpoints" for keeps a stale endpoint count (seen on engine 20.10 in a CI
    run: a testnet's control network, still refused 15 minutes later). Only a restart of the
    daemon clears it."""
    text = str(exc.explanation or exc)
    if "has active endpoints" in text and not (net.attrs.get("Containers") or {}):
        text += (
            " (no container is attached: the Docker engine keeps a stale endpoint count for"
            " it, which only a restart of the daemon clears; restart it, then run down again)"
        )
    return text


def _remove_network(net: Any, patient: bool) -> None:
    """`net.remove()`, waiting (bounded) while the swarm still counts a task on it; not
    `patient` when a host of the testnet did not answer (its tasks will not go)."""
    if not patient:
        net.remove()
        return
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_still_attached_elsewhere),
        stop=tenacity.stop_after_delay(OVERLAY_RELEASE_S),
        wait=tenacity.wait_fixed(0.5),
        reraise=True,
    )
    retrying(net.remove)


def pick_free_subnets(
    count: int, pool: str = "10.200.0.0/13", prefixlen: int = 24, seed: int | None = None
) -> list[str]:
    """`count` /prefixlen subnets of `pool` that no Docker network on this machine uses.

    For running a second copy of a topology (`--subnet NET=CIDR`) and for tests that must not
    collide with testnets other people run on the same machine. `seed` picks where in the
    pool to start looking, so concurrent callers rarely race for the same subnets.
    """
    used = subnets_in_use()
    candidates = list(ipaddress.IPv4Network(pool).subnets(new_prefix=prefixlen))
    start = (seed or 0) % len(candidates)
    out: list[str] = []
    for i in range(len(candidates)):
        cand = candidates[(start + i) % len(candidates)]
        if any(isinstance(u, ipaddress.IPv4Network) and cand.overlaps(u) for u in used):
            continue
        out.append(str(cand))
        if len(out) == count:
            return out
    raise SentrynetError(f"fewer than {count} free /{prefixlen} subnets left in {pool}")


def put_file(container: Container, path: str, text: str, mode: int = 0o644) -> None:
    """Write one text file into a container (docker cp semantics: works without a shell)."""
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(posixpath.basename(path))
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    if not container.put_archive(posixpath.dirname(path) or "/", buf.getvalue()):
        raise SentrynetError(f"{container.name}: could not write {path}")
