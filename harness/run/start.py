"""Start: compose up a set-up testnet and wait until every node answers; `up` is the whole
of setup -> start -> audit for callers that want a running testnet and nothing else.

`up` either returns a testnet that is running, answering and audited, or it raises after
removing everything it created: a failed start, Ctrl-C or SIGTERM never leaves containers
or networks behind (pass keep_on_failure=True to look at a broken testnet).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.client import TestnetStatus
from harness.errors import SentrynetError
from harness.infra import docker, netstate, swarm
from harness.infra.compose import Compose, compose_version
from harness.infra.load import machine_load
from harness.model import Node, Testnet
from harness.progress import Progress
from harness.run import audit, cleanup, hosts
from harness.run.setup import Setup, SubnetTaken, free_subnets_for, setup
from harness.run.testnet import RunningTestnet
from harness.wait import wait_until


def where(engine: str | None, hosts: dict[str, str] | None) -> dict[str, Any]:
    """Where a testnet runs, as setup's keyword arguments: the engine and the other hosts."""
    return {"engine": engine, "hosts": hosts}


READY_DEADLINE_S = 240.0  # generous: a loaded 2-CPU machine needs ~100 s for 8 nodes
ROUTER_READY_ROLE = "router-ready"  # docker-compose.yml.j2: the one-shot waiter per router
POOL_OVERLAP = "Pool overlaps with other one on this address space"  # the engine's words
SUBNET_ATTEMPTS = 3


def up(
    source: str | Path,
    *,
    name: str | None = None,
    subnets: dict[str, str] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    ready_deadline_s: float = READY_DEADLINE_S,
    keep_on_failure: bool = False,
    free_subnets: bool = False,
    engine: str | None = None,
    hosts: dict[str, str] | None = None,
) -> RunningTestnet:
    """setup -> start -> audit, from a topology file (or an already rendered directory).
    `free_subnets`: pick subnets free on this machine (instead of `subnets`), and pick again
    when another testnet takes one before compose up creates it. `engine`: compose (default)
    or swarm.

    On any failure, Ctrl-C or SIGTERM the testnet is torn down (by label) and the error
    re-raised, unless keep_on_failure.
    """
    progress = progress or Progress()
    t0 = time.monotonic()
    on = where(engine, hosts)
    with cleanup.sigterm_as_interrupt():
        if free_subnets:
            running = setup_and_start(
                Path(source),
                name=name,
                out=out,
                progress=progress,
                ready_deadline_s=ready_deadline_s,
                keep_on_failure=keep_on_failure,
                t0=t0,
                **on,
            )
        else:
            ready = setup(source, name=name, subnets=subnets, out=out, progress=progress, **on)
            running = start(ready, progress, ready_deadline_s, keep_on_failure, t0=t0)
        with _torn_down_on_failure(running.testnet, progress, keep_on_failure):
            audit.audit_running(running, progress)
    running.timings["total_s"] = time.monotonic() - t0
    progress.say(
        f"testnet {running.name} is up: {len(running.testnet.nodes)} nodes ready "
        f"{running.timings['up_to_ready_s']:.1f}s after compose up ({running.run_dir})"
    )
    return running


def start(
    ready: Setup,
    progress: Progress,
    ready_deadline_s: float = READY_DEADLINE_S,
    keep_on_failure: bool = False,
    t0: float | None = None,
) -> RunningTestnet:
    """compose up, then wait until every node answers /status (torn down on failure)."""
    testnet = ready.testnet
    compose = Compose(testnet.project, ready.run_dir / "docker-compose.yml")
    timings = {"prepare_s": time.monotonic() - t0} if t0 is not None else {}
    with _torn_down_on_failure(testnet, progress, keep_on_failure):
        images = ready.image + (f" and {ready.rust_image}" if ready.rust_image else "")
        if testnet.engine_hosts:  # several hosts: harness/run/hosts.py
            clients = hosts.other_engines(testnet)
            refs = [ready.image, *([ready.rust_image] if ready.rust_image else [])]
            hosts.ship_images(clients, refs, progress)
            hosts.create_overlays(testnet, progress)
            t_up = time.monotonic()
            hosts.start_services(testnet, ready.run_dir, compose, clients, progress)
            wait_ready(testnet, progress, ready_deadline_s)
            timings["up_to_ready_s"] = time.monotonic() - t_up
            return _ready(testnet, ready.run_dir, t_up, timings, progress)
        if testnet.engine == "swarm":
            swarm.ensure(progress, avoid=[n.subnet for n in (*testnet.networks, testnet.control)])
        with progress.step(f"compose up ({compose_version()}, image {images})"):
            t_up = time.monotonic()
            try:
                compose.up()
            except SentrynetError as exc:
                if POOL_OVERLAP in str(exc):
                    raise SubnetTaken(
                        f"a subnet of {testnet.name} was taken by another network before "
                        f"compose up created it ({POOL_OVERLAP})"
                    ) from exc
                raise
        wait_ready(testnet, progress, ready_deadline_s)
    timings["up_to_ready_s"] = time.monotonic() - t_up
    return _ready(testnet, ready.run_dir, t_up, timings, progress)


def _ready(
    testnet: Testnet, run_dir: Path, t_up: float, timings: dict[str, float], progress: Progress
) -> RunningTestnet:
    """The handle of a testnet whose nodes all answer, with the machine's load at that
    moment (harness/infra/load.py), said as a warning when the machine is saturated: every
    start (`up`, a scenario run, the bench) comes through here."""
    load = machine_load()
    if load is not None and (warning := load.warning()):
        progress.say(warning)
    return RunningTestnet(testnet, run_dir, t_up=t_up, timings=timings, load_at_ready=load)


def setup_and_start(
    source: Path,
    *,
    name: str | None,
    progress: Progress,
    ready_deadline_s: float = READY_DEADLINE_S,
    out: str | Path | None = None,
    keep_on_failure: bool = False,
    t0: float | None = None,
    engine: str | None = None,
    hosts: dict[str, str] | None = None,
) -> RunningTestnet:
    """setup on the subnets free now, then start. Two runs on one machine (two checkouts,
    a CI job beside a user's scenario) can pick the same free subnets; the one whose
    compose up comes second fails with the engine's "Pool overlaps", is torn down, and
    picks again, up to SUBNET_ATTEMPTS times."""
    on = where(engine, hosts)
    for attempt in range(1, SUBNET_ATTEMPTS + 1):
        try:
            subnets = free_subnets_for(source, progress, name)
            ready = setup(source, name=name, subnets=subnets, out=out, progress=progress, **on)
            return start(ready, progress, ready_deadline_s, keep_on_failure, t0=t0)
        except SubnetTaken as exc:
            if attempt == SUBNET_ATTEMPTS or keep_on_failure:
                raise
            progress.say(f"{exc}; picking free subnets again ({attempt + 1}/{SUBNET_ATTEMPTS})")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _torn_down_on_failure(testnet: Testnet, progress: Progress, keep: bool) -> Iterator[None]:
    """On any exception (Ctrl-C and SIGTERM included) remove the testnet, then re-raise."""
    try:
        yield
    except BaseException as exc:
        if keep:
            progress.say(
                f"start failed; testnet {testnet.name} kept for inspection "
                f"(`sentrynet down {testnet.name}` removes it)"
            )
        else:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "start failed"
            cleanup.teardown(testnet.name, progress, reason)
        raise


# --------------------------------------------------------------------------- wait


def _dead_containers(testnet: Testnet) -> list[str]:
    """Containers of the testnet that stopped: waiting for them is pointless (a router's
    one-shot `-ready` container is meant to stop, with code 0)."""
    dead = []
    for c in docker.stopped_containers(testnet.name):
        code = c.attrs.get("State", {}).get("ExitCode")
        if code == 0 and c.labels.get("sentrynet.role") == ROUTER_READY_ROLE:
            continue
        tail = c.logs(tail=8).decode(errors="replace").strip()
        dead.append(f"{c.name} exited with code {code}; last log lines:\n{tail}")
    return dead


def _not_listening(testnet: Testnet, node: Node) -> str | None:
    """Why a node with `api: none` is not ready yet (None when it is, or has an API): ready
    means its TCP table, read from outside, has a listener on its p2p port."""
    if node.has_api:
        return None
    socks, err = netstate.tcp_table(docker.node_container(testnet.name, node.name))
    if socks is None:
        return f"TCP table unreadable: {err}"
    ips = {*node.addresses.values(), "0.0.0.0"}
    port = node.p2p_port
    if any(s.state == "LISTEN" and s.local_port == port and s.local_ip in ips for s in socks):
        return None
    return f"api: none, no listener on p2p port {node.p2p_port} yet"


def wait_ready(testnet: Testnet, progress: Progress, deadline_s: float) -> None:
    """Poll every node's /status over the control network until all answer.

    Prints a line whenever the picture changes ("5/8 nodes ready: waiting on node4 (connection
    refused)"); fails at once, with its log tail, when a container exits.
    """
    last_line = [""]
    total = len(testnet.nodes)
    answered: set[str] = set()  # asked once more only if their container stops (dead)

    def probe() -> tuple[bool, str]:
        asking = [n.name for n in testnet.nodes if n.name not in answered]
        snap = TestnetStatus.collect(testnet, timeout_s=1.0, only=asking)
        dead = _dead_containers(testnet)
        if dead:
            raise SentrynetError(
                f"testnet {testnet.name}: a container stopped while starting:\n" + "\n".join(dead)
            )
        answered.update(n.name for n in snap.nodes if n.ok)
        waiting: list[tuple[str, str | None]] = [(n.name, n.error) for n in snap.nodes if n.down]
        waiting += [
            (n.name, why)
            for n in testnet.nodes
            if n.name not in answered and (why := _not_listening(testnet, n))
        ]
        shown = ", ".join(f"{name} ({error})" for name, error in waiting[:3])
        more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        line = f"{total - len(waiting)}/{total} nodes ready" + (
            f": waiting on {shown}{more}" if waiting else ""
        )
        if line != last_line[0]:
            progress.say(line)
            last_line[0] = line
        return not waiting, line

    blind = sum(1 for n in testnet.nodes if not n.has_api)
    what = f"wait for {total} nodes to answer /status" + (
        f" ({blind} with api: none: to listen on their p2p port)" if blind else ""
    )
    with progress.step(f"{what} (deadline {deadline_s:g}s)"):
        wait_until(
            probe,
            what=f"every node of {testnet.name} to answer GET /status on its control IP",
            deadline_s=deadline_s,
            likely_cause="a node crashed or hangs before starting its API "
            "(`sentrynet logs NODE`), or the host cannot reach the control network "
            f"{testnet.control.subnet}",
            interval_s=0.5,
        )
