"""Setup: topology -> testnet model -> checks against this machine -> image -> rendered run dir.

Nothing here creates a Docker object; `start` does. A name or subnet that is taken on this
machine is refused here, with the fix, before Docker half-creates anything (`preflight`).
A run either starts from a topology file (rendered into .cache/testnets/NAME, or --out) or
from a directory rendered before (`sentrynet render`), which is used as it is.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import SentrynetError
from harness.infra import code_mount, docker
from harness.infra.render import REPO_ROOT, render
from harness.model import Testnet, build_testnet, load_topology
from harness.model.testnet import DEFAULT_ENGINE, control_subnet_for
from harness.progress import Progress

RUNS_DIR = REPO_ROOT / ".cache" / "testnets"
CODE_DIR = REPO_ROOT / ".cache" / "code"  # extracted node code (harness/infra/code_mount.py)
SCENARIO_DIR = REPO_ROOT / "scenarios"


@dataclass(frozen=True)
class Setup:
    """A testnet ready to start: its model, its rendered directory and the images it runs
    (`rust_image` only when it has `impl: rust` nodes)."""

    testnet: Testnet
    run_dir: Path
    image: str
    rust_image: str | None = None


def setup(
    source: str | Path,
    *,
    name: str | None = None,
    subnets: dict[str, str] | None = None,
    out: str | Path | None = None,
    progress: Progress,
    engine: str | None = None,
    hosts: dict[str, str] | None = None,
) -> Setup:
    """The model (from a topology file, or a rendered directory), checked against this
    machine, with its image built and its run directory rendered. `engine`: compose (the
    default) or swarm (harness/model/testnet.py ENGINES); a rendered directory keeps its own."""
    testnet, run_dir, rendered = _model(
        Path(source), name, subnets, Path(out) if out else None, progress, engine, hosts
    )
    progress.say(
        f"testnet {testnet.name}: {len(testnet.nodes)} nodes, {len(testnet.routers)} "
        f"routers, networks "
        + ", ".join(f"{n.name}={n.subnet}" for n in (*testnet.networks, testnet.control))
        + (" (data networks as swarm overlays)" if testnet.engine == "swarm" else "")
    )
    preflight(testnet)
    if rendered:
        image, rust_image = rendered_images(run_dir, testnet)
        for ref in (image, rust_image):
            if ref is not None and docker.client().images.list(name=ref) == []:
                raise SentrynetError(
                    f"{run_dir} was rendered for image {ref}, which is not present; "
                    "`sentrynet images build` and render again"
                )
        compose = (run_dir / "docker-compose.yml").read_text()
        if str(code_mount.tree_dir(CODE_DIR, image)) in compose:
            # rendered with the image's code as mounts: the tree may have been pruned since
            code_mount.ensure(docker.client(), image, CODE_DIR, progress)
    else:
        image, rust_image = ensure_images(testnet, progress)
        code = code_tree(testnet, image, progress)
        with progress.step(f"render into {run_dir}"):
            render(testnet, run_dir, image, rust_image=rust_image, code=code)
    return Setup(testnet, run_dir, image, rust_image)


def code_tree(testnet: Testnet, image: str, progress: Progress) -> code_mount.CodeTree | None:
    """The node image's code as bind mounts, where this engine reads image layers through
    FUSE (harness/infra/code_mount.py); None elsewhere."""
    if not any(n.impl == "python" and not n.image for n in testnet.nodes):
        return None
    driver = str(docker.client().info().get("Driver", ""))
    if not code_mount.wanted(driver, testnet.engine, cache=CODE_DIR):
        return None
    tree = code_mount.ensure(docker.client(), image, CODE_DIR, progress)
    progress.say(f"python nodes read the image's code from {tree.root} ({driver} storage)")
    return tree


def _model(
    source: Path,
    name: str | None,
    subnets: dict[str, str] | None,
    out: Path | None,
    progress: Progress,
    engine: str | None = None,
    hosts: dict[str, str] | None = None,
) -> tuple[Testnet, Path, bool]:
    """The testnet model, its run directory, and whether that directory is already rendered."""
    if source.is_dir():
        loaded = Testnet.load(source)
        if name or subnets or out or hosts or (engine is not None and engine != loaded.engine):
            raise SentrynetError(
                f"{source} is a rendered testnet (engine {loaded.engine}): --name, --subnet, "
                "--out, --engine and --host apply only when starting from a topology file (render "
                "again instead)"
            )
        return loaded, source, True
    topo = load_topology(source)
    testnet = build_testnet(topo, name, subnets or {}, engine or DEFAULT_ENGINE, hosts)
    for warning in testnet.warnings:
        progress.say(f"warning: {warning}")
    return testnet, (out or RUNS_DIR / testnet.name), False


def rendered_images(run_dir: Path, testnet: Testnet) -> tuple[str, str | None]:
    """The node image and the rust node image (None: no rust node) a directory runs."""
    doc = yaml.safe_load((run_dir / "docker-compose.yml").read_text())
    services = doc.get("services") or {}
    rust = set(testnet.rust_nodes)
    own = {n.name for n in testnet.nodes if n.image}  # anyone's own image: not ours to check

    def images_of(want_rust: bool) -> set[str]:
        return {
            str(svc["image"])
            for name, svc in services.items()
            if svc.get("image") and name not in own and (name in rust) == want_rust
        }

    node_images, rust_images = images_of(False), images_of(True)
    if len(node_images) != 1 or len(rust_images) != (1 if rust else 0):
        raise SentrynetError(
            f"{run_dir}/docker-compose.yml: expected one node image and "
            f"{'one rust node image' if rust else 'no rust node image'}, found "
            f"{sorted(node_images)} and {sorted(rust_images)}; render again"
        )
    return node_images.pop(), (rust_images.pop() if rust_images else None)


def ensure_images(testnet: Testnet, progress: Progress) -> tuple[str, str | None]:
    """Build what the testnet runs: the node image, and the rust node image when it has an
    `impl: rust` node (without cargo that fails saying how to get it)."""
    from harness.infra.images import ensure_node_image  # late: imports the build machinery
    from harness.infra.rust_image import ensure_rust_image

    require_own_images(testnet)
    image = ensure_node_image(progress)
    return image, (ensure_rust_image(progress) if testnet.rust_nodes else None)


def require_own_images(testnet: Testnet) -> None:
    """Anyone's own node images must already be on this engine: nothing is pulled
    (containers and the harness reach no registry), so a missing one fails here, by name."""
    import docker.errors

    from harness.infra import docker as docker_ops

    for node in testnet.nodes:
        if not node.image:
            continue
        try:
            docker_ops.client().images.get(node.image)
        except docker.errors.ImageNotFound:
            raise SentrynetError(
                f"nodes.{node.name}.image: {node.image} is not on this Docker engine; build "
                "it here or `docker load` it (sentrynet pulls nothing: no registry is reached)"
            ) from None


class SubnetTaken(SentrynetError):
    """A subnet of the testnet is taken by another Docker network: found by the preflight,
    or by compose up when another run took it after the preflight (the engine's "Pool
    overlaps"). A run on subnets it picked as free picks again (start.setup_and_start)."""


def preflight(testnet: Testnet) -> None:
    """Refuse a name or subnet that is taken, with the fix, before Docker half-creates it."""
    if docker.containers(testnet.name) or docker.networks(testnet.name):
        raise SentrynetError(
            f"a testnet named {testnet.name!r} is already up on this machine; "
            f"`sentrynet down {testnet.name}` first, or start this one with --name OTHER"
        )
    ours = [(n.name, ipaddress.ip_network(n.subnet)) for n in (*testnet.networks, testnet.control)]
    if testnet.control_gateway is not None:
        ours.append(("ctlgw", ipaddress.ip_network(testnet.control_gateway.local_subnet)))
    clashes: dict[str, str] = {}
    for dn in docker.client().networks.list():  # the list already carries IPAM
        for used in docker.network_subnets(dn):
            for net_name, subnet in ours:
                if subnet.version == used.version and subnet.overlaps(used):
                    clashes.setdefault(
                        net_name, f"{net_name} ({subnet}) overlaps {dn.name} ({used})"
                    )
    if clashes:
        free = docker.pick_free_subnets(len(clashes), seed=hash(testnet.name) % 2048)
        flags = " ".join(f"--subnet {n}={c}" for n, c in zip(clashes, free, strict=True))
        raise SubnetTaken(
            f"testnet {testnet.name}: subnets in use by other Docker networks: "
            + "; ".join(clashes.values())
            + f". Free ones on this machine now: {flags}"
        )


# --------------------------------------------------------------------------- scenario runs


def topology_path(topology: str) -> Path:
    """scenarios/<name>.yaml, or the path itself when it names a file."""
    p = Path(topology)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidate = SCENARIO_DIR / f"{topology}.yaml"
    if not candidate.exists():
        known = ", ".join(sorted(x.stem for x in SCENARIO_DIR.glob("*.yaml")))
        raise SentrynetError(f"no topology {topology!r} ({candidate}); known: {known}")
    return candidate


def unique_name(base: str) -> str:
    """<base>-<4 hex>: a fresh testnet name per run, so runs never collide with (or tear
    down) another testnet, and the deterministic keys differ per run."""
    stem = base[:24].rstrip("-_") or "sn"
    return f"{stem}-{secrets.token_hex(2)}"


def free_control_subnet(
    name: str, topology: Any, overrides: dict[str, str], in_use: list[Any]
) -> str | None:
    """None when the control subnet the model picks for `name` (10.250.X.0/24, X from a
    hash of the name: harness/model/testnet.control_subnet_for) is free on this machine,
    else the next free one. Two testnets up at once (make test's scenario tier) whose
    names hash alike picked the same one; the preflight refused the second, and picking
    again gave the same name the same subnet, three times over."""
    data = [ipaddress.IPv4Network(overrides.get(n.name, n.subnet)) for n in topology.networks]
    taken = [t for t in in_use if t.version == 4]
    default = ipaddress.IPv4Network(control_subnet_for(name, data))
    if not any(default.overlaps(t) for t in taken):
        return None
    return control_subnet_for(name, [*data, *taken])


def free_subnet_overrides(topology: Any, in_use: list[Any]) -> dict[str, str]:
    """Overrides moving each topology network whose subnet is taken on this machine to a free
    subnet of the same size (host parts are kept by harness/model/testnet.py). Empty when the
    topology's own subnets are free, which keeps addresses identical to the YAML."""
    taken = [n for n in in_use if n.version == 4]
    overrides: dict[str, str] = {}
    chosen: list[ipaddress.IPv4Network] = []
    for net in topology.networks:
        mine = ipaddress.IPv4Network(net.subnet)
        if not any(mine.overlaps(t) for t in taken):
            chosen.append(mine)
            continue
        for pool in ("172.16.0.0/12", "10.0.0.0/8", "192.168.0.0/16"):
            found = None
            for cand in ipaddress.IPv4Network(pool).subnets(new_prefix=mine.prefixlen):
                if any(cand.overlaps(t) for t in [*taken, *chosen]):
                    continue
                found = cand
                break
            if found is not None:
                overrides[net.name] = str(found)
                chosen.append(found)
                break
        else:
            raise SentrynetError(f"no free /{mine.prefixlen} for network {net.name}")
    return overrides


def free_subnets_for(
    topology_file: Path, progress: Progress, name: str | None = None
) -> dict[str, str]:
    """free_subnet_overrides for a topology file against this machine's Docker networks,
    and the control network's (`control`) when the one testnet `name` would get is taken."""
    topology = load_topology(topology_file)
    in_use = docker.subnets_in_use()
    overrides = free_subnet_overrides(topology, in_use)
    control = free_control_subnet(name or topology.name, topology, overrides, in_use)
    if control is not None:
        overrides["control"] = control
    if overrides:
        progress.say(
            "default subnets are taken on this machine; using "
            + ", ".join(f"{k}={v}" for k, v in overrides.items())
        )
    return overrides
