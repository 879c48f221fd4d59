"""Lifecycle: up (render -> image -> compose up -> wait ready -> verify) and down (by label).

`up` either returns a testnet that is running, answering and verified, or it raises after
removing everything it created: a failed start, Ctrl-C or SIGTERM never leaves containers
or networks behind (pass keep_on_failure=True to look at a broken testnet). `down` removes
by the `sentrynet.testnet` label through the Docker SDK, not through compose, so it works
without the rendered directory, after partial failures, and never touches another testnet.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import yaml

from harness.client import NodeTarget, TestnetStatus
from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra.compose import Compose, compose_version
from harness.infra.render import REPO_ROOT, render
from harness.model.testnet import TESTNET_FILE, Testnet, build_testnet
from harness.model.topology import load_topology
from harness.progress import Progress
from harness.run import audit as verify
from harness.wait import wait_until

RUNS_DIR = REPO_ROOT / ".cache" / "testnets"
READY_DEADLINE_S = 240.0  # generous: a loaded 2-CPU machine needs ~100 s for 8 nodes


@dataclass
class RunningTestnet:
    """A testnet that is up: every node answered /status and the safety checks passed."""

    testnet: Testnet
    run_dir: Path
    compose: Compose
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.testnet.name

    def snapshot(self, timeout_s: float = 2.0) -> TestnetStatus:
        return snapshot(self.testnet, timeout_s)


def targets(testnet: Testnet) -> list[NodeTarget]:
    return [
        NodeTarget(n.name, n.role, n.api_url, tuple(n.addresses), n.peer_id) for n in testnet.nodes
    ]


def snapshot(testnet: Testnet, timeout_s: float = 2.0) -> TestnetStatus:
    return TestnetStatus.collect(testnet.name, targets(testnet), timeout_s)


# --------------------------------------------------------------------------- signals


class Terminated(KeyboardInterrupt):
    """SIGTERM during `up`: handled like Ctrl-C (tear down, then exit)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Tear-down must finish: a second Ctrl-C would leave half a testnet behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    prev_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev_int)
        signal.signal(signal.SIGTERM, prev_term)


# --------------------------------------------------------------------------- up


def _prepare(
    source: Path,
    name: str | None,
    subnets: dict[str, str] | None,
    out: Path | None,
    progress: Progress,
) -> tuple[Testnet, Path, str | None]:
    """The testnet model and its run directory; the image is None when already rendered."""
    if source.is_dir():
        if name or subnets or out:
            raise SentrynetError(
                f"{source} is a rendered testnet: --name, --subnet and --out apply only when "
                "starting from a topology file (render again instead)"
            )
        return Testnet.load(source), source, None
    topo = load_topology(source)
    testnet = build_testnet(topo, name, subnets or {})
    for warning in testnet.warnings:
        progress.say(f"warning: {warning}")
    return testnet, (out or RUNS_DIR / testnet.name), "render"


def _rendered_image(run_dir: Path) -> str:
    doc = yaml.safe_load((run_dir / "docker-compose.yml").read_text())
    images = {svc.get("image") for svc in (doc.get("services") or {}).values()}
    images.discard(None)
    if len(images) != 1:
        raise SentrynetError(f"{run_dir}/docker-compose.yml: expected one image, found {images}")
    return str(images.pop())


def _preflight(testnet: Testnet) -> None:
    """Refuse a name or subnet that is taken, with the fix, before Docker half-creates it."""
    if docker_ops.containers(testnet.name) or docker_ops.networks(testnet.name):
        raise SentrynetError(
            f"a testnet named {testnet.name!r} is already up on this machine; "
            f"`sentrynet down {testnet.name}` first, or start this one with --name OTHER"
        )
    ours = [(n.name, ipaddress.ip_network(n.subnet)) for n in (*testnet.networks, testnet.control)]
    clashes: dict[str, str] = {}
    for dn in docker_ops.client().networks.list():  # the list already carries IPAM
        for used in docker_ops.network_subnets(dn):
            for net_name, subnet in ours:
                if subnet.version == used.version and subnet.overlaps(used):
                    clashes.setdefault(
                        net_name, f"{net_name} ({subnet}) overlaps {dn.name} ({used})"
                    )
    if clashes:
        free = docker_ops.pick_free_subnets(len(clashes), seed=hash(testnet.name) % 2048)
        flags = " ".join(f"--subnet {n}={c}" for n, c in zip(clashes, free, strict=True))
        raise SentrynetError(
            f"testnet {testnet.name}: subnets in use by other Docker networks: "
            + "; ".join(clashes.values())
            + f". Free ones on this machine now: {flags}"
        )


def _ensure_image(progress: Progress) -> str:
    from harness.infra.images import ensure_node_image  # late: imports the build machinery

    return ensure_node_image(progress)


def up(
    source: str | Path,
    *,
    name: str | None = None,
    subnets: dict[str, str] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    ready_deadline_s: float = READY_DEADLINE_S,
    keep_on_failure: bool = False,
) -> RunningTestnet:
    """Start a testnet from a topology file (or an already rendered directory).

    On any failure, Ctrl-C or SIGTERM the testnet is torn down (by label) and the error
    re-raised, unless keep_on_failure.
    """
    progress = progress or Progress()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with _sigterm_as_interrupt():
        testnet, run_dir, action = _prepare(
            Path(source), name, subnets, Path(out) if out else None, progress
        )
        progress.say(
            f"testnet {testnet.name}: {len(testnet.nodes)} nodes, {len(testnet.routers)} "
            f"routers, networks "
            + ", ".join(f"{n.name}={n.subnet}" for n in (*testnet.networks, testnet.control))
        )
        _preflight(testnet)
        if action == "render":
            image = _ensure_image(progress)
            with progress.step(f"render into {run_dir}"):
                render(testnet, run_dir, image)
        else:
            image = _rendered_image(run_dir)
            if docker_ops.client().images.list(name=image) == []:
                raise SentrynetError(
                    f"{run_dir} was rendered for image {image}, which is not present; "
                    "`sentrynet images build` and render again"
                )
        compose = Compose(testnet.project, run_dir / "docker-compose.yml")
        timings["prepare_s"] = time.monotonic() - t0
        started = False
        try:
            with progress.step(f"compose up ({compose_version()}, image {image})"):
                started = True
                t_up = time.monotonic()
                compose.up()
            wait_ready(testnet, progress, ready_deadline_s)
            timings["up_to_ready_s"] = time.monotonic() - t_up
            with progress.step("safety checks"):
                report = verify.verify(testnet, snapshot(testnet))
            for line in report.passed:
                progress.say(f"  ok: {line}")
        except BaseException as exc:
            if started and not keep_on_failure:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "start failed"
                with _uninterruptible():
                    progress.say(f"{reason}: removing testnet {testnet.name}")
                    removed = down_settled(testnet.name)
                    progress.say(describe_removed(testnet.name, removed))
            elif started:
                progress.say(
                    f"start failed; testnet {testnet.name} kept for inspection "
                    f"(`sentrynet down {testnet.name}` removes it)"
                )
            raise
    timings["total_s"] = time.monotonic() - t0
    progress.say(
        f"testnet {testnet.name} is up: {len(testnet.nodes)} nodes ready "
        f"{timings['up_to_ready_s']:.1f}s after compose up ({run_dir})"
    )
    return RunningTestnet(testnet, run_dir, compose, timings)


# --------------------------------------------------------------------------- wait


def _dead_containers(testnet: Testnet) -> list[str]:
    """Containers of the testnet that stopped: waiting for them is pointless."""
    dead = []
    for c in docker_ops.containers(testnet.name):
        if c.status in ("exited", "dead"):
            code = c.attrs.get("State", {}).get("ExitCode")
            tail = c.logs(tail=8).decode(errors="replace").strip()
            dead.append(f"{c.name} exited with code {code}; last log lines:\n{tail}")
    return dead


def wait_ready(testnet: Testnet, progress: Progress, deadline_s: float) -> TestnetStatus:
    """Poll every node's /status over the control network until all answer.

    Prints a line whenever the picture changes ("5/8 nodes ready: waiting on node4 (connection
    refused)"); fails at once, with its log tail, when a container exits.
    """
    last_line = [""]
    total = len(testnet.nodes)

    def probe() -> tuple[bool, str]:
        snap = snapshot(testnet, timeout_s=1.0)
        dead = _dead_containers(testnet)
        if dead:
            raise SentrynetError(
                f"testnet {testnet.name}: a container stopped while starting:\n" + "\n".join(dead)
            )
        waiting = [n for n in snap.nodes if not n.ok]
        shown = ", ".join(f"{n.name} ({n.error})" for n in waiting[:3])
        more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        line = f"{total - len(waiting)}/{total} nodes ready" + (
            f": waiting on {shown}{more}" if waiting else ""
        )
        if line != last_line[0]:
            progress.say(line)
            last_line[0] = line
        return not waiting, line

    with progress.step(f"wait for {total} nodes to answer /status (deadline {deadline_s:g}s)"):
        wait_until(
            probe,
            what=f"every node of {testnet.name} to answer GET /status on its control IP",
            deadline_s=deadline_s,
            likely_cause="a node crashed or hangs before starting its API "
            "(`sentrynet logs NODE`), or the host cannot reach the control network "
            f"{testnet.control.subnet}",
            interval_s=0.5,
        )
    return snapshot(testnet)


# --------------------------------------------------------------------------- down and lookup


def down(name: str) -> docker_ops.Removed:
    """Remove everything labelled sentrynet.testnet=<name>; idempotent."""
    return docker_ops.remove_testnet(name)


def down_settled(name: str, deadline_s: float = 60.0) -> docker_ops.Removed:
    """`down` until nothing labelled reappears for a few polls in a row.

    After an interrupted `compose up` the daemon may still finish creating a container the
    killed client asked for; a single pass could miss it.
    """
    total = down(name)
    empty_polls = [0]

    def probe() -> tuple[bool, str]:
        again = down(name)
        total.containers += again.containers
        total.networks += again.networks
        total.volumes += again.volumes
        empty_polls[0] = empty_polls[0] + 1 if again.nothing else 0
        left = [c.name for c in docker_ops.containers(name)]
        left += [n.name for n in docker_ops.networks(name)]
        return empty_polls[0] >= 3 and not left, f"still present: {left or 'nothing'}"

    wait_until(
        probe,
        what=f"nothing labelled sentrynet.testnet={name} to remain",
        deadline_s=deadline_s,
        likely_cause="the Docker daemon keeps (re)creating objects for this testnet; "
        "is another `compose up` for it still running?",
        interval_s=0.5,
    )
    return total


def describe_removed(name: str, removed: docker_ops.Removed) -> str:
    if removed.nothing and not removed.errors:
        return f"testnet {name}: nothing to remove"
    parts = [
        f"{len(removed.containers)} container(s)",
        f"{len(removed.networks)} network(s)",
        f"{len(removed.volumes)} volume(s)",
    ]
    text = f"testnet {name}: removed {', '.join(parts)}"
    if removed.errors:
        text += "\n  could not remove:\n" + "\n".join(f"    {e}" for e in removed.errors)
    return text


def resolve_name(name: str | None) -> str:
    """The testnet a command means: the one named, else the only one running."""
    if name:
        return name
    found = docker_ops.testnet_names()
    if not found:
        raise SentrynetError("no sentrynet testnet is up on this machine (`sentrynet up TOPOLOGY`)")
    if len(found) > 1:
        raise SentrynetError(f"several testnets are up ({', '.join(found)}); pick one with -t NAME")
    return found[0]


def find_testnet(name: str | None) -> tuple[Testnet, Path]:
    """The model of a running testnet, from the rendered directory compose recorded."""
    name = resolve_name(name)
    dirs: list[Path] = []
    for c in docker_ops.containers(name):
        wd = c.labels.get(docker_ops.LABEL_COMPOSE_DIR)
        if wd and Path(wd) not in dirs:
            dirs.append(Path(wd))
    dirs.append(RUNS_DIR / name)
    for d in dirs:
        if (d / TESTNET_FILE).exists():
            testnet = Testnet.load(d)
            if testnet.name == name:
                return testnet, d
    raise SentrynetError(
        f"testnet {name!r}: no rendered directory found (looked in "
        f"{', '.join(str(d) for d in dirs)}); is it up? (`sentrynet up TOPOLOGY`)"
    )
