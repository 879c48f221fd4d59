"""Running a benchmark testnet through the harness (up -> measure -> down) and reading it.

Every testnet a benchmark starts is named `bench-<label>-<4 hex>` (unique; only these are
ever torn down by the bench), brought up by `harness.run.start.up` on free subnets
(`harness.run.setup.free_subnet_overrides`) and removed by label in `finally`, also on
Ctrl-C. The handle is the harness's `RunningTestnet`; nodes are read only through their
HTTP API (`RunningTestnet.client`), as the typed records of node/contract.py (`Status`,
`Event`), gathered into the checks' `Observation` (`collect`).

Clocks. Node event times `t` and `started_at` are the node's `time.monotonic()`. Containers
share the host kernel's CLOCK_MONOTONIC (Docker creates no time namespace), so node times
are comparable across nodes and with the bench's own `time.monotonic()`; `clock_check`
verifies that on every testnet (every node's started_at lies between the bench's compose-up
moment and now) and the report records the outcome.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.context import Ctx
from harness.checks import Observation
from harness.client import NodeClient, NodeUnreachable
from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra.load import MachineLoad, machine_load
from harness.model import load_topology
from harness.run import cleanup, start
from harness.run.setup import free_subnet_overrides
from harness.run.testnet import RunningTestnet
from harness.wait import WaitTimeout, wait_until
from node.contract import Event, Status

PREFIX = "bench"
API_TIMEOUT_S = 3.0  # more than the harness's 2 s: the large scale points load the machine


def bench_name(label: str) -> str:
    """bench-<label>-<4 hex>, within the harness's 31-character name limit."""
    return f"{PREFIX}-{label[:20]}-{secrets.token_hex(2)}"


# ---- reading nodes ---------------------------------------------------------------------------


def client(net: RunningTestnet, node: str) -> NodeClient:
    return net.client(node, API_TIMEOUT_S)


def status(net: RunningTestnet, node: str) -> Status | None:
    """One node's /status, or None while it does not answer (a probe reports, never raises)."""
    try:
        return client(net, node).read_status()
    except NodeUnreachable:
        return None


def events(api: NodeClient) -> list[Event]:
    """A node's whole /events log: page after page until `next` stops moving (the figures
    need every event since start, not the ones since the last poll)."""
    out: list[Event] = []
    since = 0
    for _ in range(1000):
        nxt, evs = api.read_events(since)
        out.extend(evs)
        if nxt <= since or not evs:
            break
        since = nxt
    return out


def collect(net: RunningTestnet, names: list[str] | None = None) -> Observation:
    """The named nodes' (default: all) /status and whole /events log, read now, one node
    after the other. A node that does not answer has neither (its error is in
    `unreachable`). Events keep the node's clock `t` only (no harness `ts`): the bench
    compares node clocks with its own directly (see Clocks above)."""
    tn = net.testnet
    obs = Observation(
        t=time.monotonic() - net.t_up,
        nodes={n.name: n for n in tn.nodes},
        nets={n.name: n for n in tn.networks},
    )
    for name in names or [n.name for n in tn.nodes]:
        api = client(net, name)
        try:
            st, evs = api.read_status(), events(api)
        except NodeUnreachable as exc:
            obs.unreachable[name] = str(exc)
            continue
        obs.status[name], obs.events[name] = st, evs
    return obs


def at(event: Event) -> float:
    """An event's node-clock time; the contract always carries `t`, so a record without
    one is a broken node, not a zero."""
    if event.t is None:
        raise SentrynetError(f"event {event.type} #{event.seq} has no time `t`")
    return float(event.t)


def first(obs: Observation, node: str, type_: str, peer: str | None = None) -> Event | None:
    """`node`'s first event of `type_` (about `peer`, when given)."""
    evs = (e for e in obs.events_of(node, type_) if peer is None or e.peer == peer)
    return next(evs, None)


def clock_check(net: RunningTestnet, obs: Observation) -> dict[str, Any]:
    """Do node clocks line up with the bench clock? (see module docstring)."""
    now = time.monotonic()
    starts = [s.started_at for s in obs.status.values() if s.started_at is not None]
    ok = bool(starts) and all(net.t_up - 0.5 <= s <= now for s in starts)
    return {
        "shared_monotonic": ok,
        "compose_up_at": round(net.t_up, 3),
        "first_node_started_at": round(min(starts), 3) if starts else None,
        "last_node_started_at": round(max(starts), 3) if starts else None,
    }


# ---- up, wait, down ----------------------------------------------------------------------


def wait(
    ctx: Ctx,
    net: RunningTestnet,
    probe: Callable[[], tuple[bool, Any]],
    what: str,
    deadline_s: float,
    cause: str,
    interval_s: float = 0.5,
) -> Any:
    """harness.wait.wait_until on a bench probe, printing the probe's line whenever it
    changes and keeping it in `ctx.last_seen` (what an interrupted run reports). Not
    RunningTestnet.wait_for: a bench probe reads only what it needs (one node's /status
    while the relay's CPU is measured), not every node's status and events."""
    last = [""]

    def show(seen: Any) -> None:
        line = str(seen)
        if line != last[0]:
            ctx.say(f"  {line[:300]}")
            last[0] = line
            ctx.last_seen = line[:1000]

    try:
        return wait_until(
            probe,
            what=f"{what} ({net.name})",
            deadline_s=deadline_s,
            likely_cause=cause,
            interval_s=interval_s,
            on_poll=show,
        )
    except WaitTimeout as exc:
        raise with_load(exc, machine_load()) from None


def with_load(exc: WaitTimeout, load: MachineLoad | None) -> WaitTimeout:
    """The timeout, its likely cause naming this machine when it is saturated: at 128 nodes
    on two cores the relays answered RESERVE minutes late, and the run blamed unreachable
    relays or refusals."""
    if load is None or not load.saturated:
        return exc
    cause = (
        f"this machine is saturated ({load.describe()}): the nodes answer late; "
        f"else {exc.likely_cause}"
    )
    return WaitTimeout(exc.what, exc.deadline_s, exc.last_seen, cause, exc.polls, exc.elapsed_s)


@contextlib.contextmanager
def running(
    ctx: Ctx,
    doc: dict[str, Any],
    label: str,
    ready_deadline_s: float = 300.0,
    engine: str | None = None,
) -> Iterator[RunningTestnet]:
    """Bring the topology `doc` up under a unique bench- name (on `engine`: compose or
    swarm); always tear it down (by label, in `finally`: also on Ctrl-C and SIGTERM, and not
    cut short by a second one)."""
    from bench import topogen

    name = bench_name(label)
    path = ctx.work_dir / "topologies" / f"{name}.yaml"
    topogen.write(doc, path)
    overrides = free_subnet_overrides(load_topology(path), docker_ops.subnets_in_use())
    run_dir = ctx.work_dir / "testnets" / name
    net = start.up(
        path,
        name=name,
        subnets=overrides,
        out=run_dir,
        progress=ctx.progress,
        ready_deadline_s=ready_deadline_s,
        engine=engine,
    )
    ctx.last_seen = ""
    try:
        yield net
    finally:
        with cleanup.uninterruptible():  # a second Ctrl-C must not leave it running
            ctx.say(net.down())
        shutil.rmtree(run_dir, ignore_errors=True)


CGROUP = Path("/sys/fs/cgroup")


def _stat_value(path: Path, key: str) -> float:
    """The value of `key` in a cgroup `<key> <value>` file (memory.stat, cpu.stat)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return float(value)
    return 0.0


def cgroup_stats(container_id: str) -> dict[str, float] | None:
    """container_stats read from this machine's cgroup files (v1 or v2, Docker's cgroupfs
    or systemd layout), the same counters `docker stats` reports; None when the container
    is not on this machine's engine. Why: a stats call takes the engine a second or more on
    a loaded machine, and a 64-node point made 128 of them (minutes of a saturated run)."""
    v1_cpu = CGROUP / "cpuacct" / "docker" / container_id / "cpuacct.usage"
    v1_mem = CGROUP / "memory" / "docker" / container_id
    v2 = [
        CGROUP / "system.slice" / f"docker-{container_id}.scope",
        CGROUP / "docker" / container_id,
    ]
    try:
        if v1_cpu.exists() and v1_mem.exists():
            cpu_s = int(v1_cpu.read_text()) / 1e9
            usage = float((v1_mem / "memory.usage_in_bytes").read_text())
            inactive = _stat_value(v1_mem / "memory.stat", "inactive_file")
            return {"cpu_s": cpu_s, "mem_bytes": usage - inactive, "t": time.monotonic()}
        for d in v2:
            if (d / "cpu.stat").exists():
                cpu_s = _stat_value(d / "cpu.stat", "usage_usec") / 1e6
                usage = float((d / "memory.current").read_text())
                inactive = _stat_value(d / "memory.stat", "inactive_file")
                return {"cpu_s": cpu_s, "mem_bytes": usage - inactive, "t": time.monotonic()}
    except (OSError, ValueError):
        return None  # gone between the check and the read: ask the engine
    return None


def container_stats(container: Any) -> dict[str, float]:
    """CPU time (s) and memory (bytes, docker's `usage - inactive_file`) of one container:
    from the cgroup files where it runs on this machine, else from the engine."""
    local = cgroup_stats(container.id)
    if local is not None:
        return local
    s = container.stats(stream=False, one_shot=True)
    cpu_ns = float(((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
    mem = s.get("memory_stats") or {}
    usage = float(mem.get("usage") or 0)
    inactive = float((mem.get("stats") or {}).get("inactive_file") or 0)
    return {"cpu_s": cpu_ns / 1e9, "mem_bytes": usage - inactive, "t": time.monotonic()}


CPU_PROBE_LOOPS = 3_000_000  # additions in one probe round: ~0.2-0.5 CPU-s on these machines


def cpu_probe_s(rounds: int = 3) -> float:
    """CPU seconds of one fixed pure-Python loop (median of `rounds`): how fast this
    machine runs the interpreter the nodes run on. Figures from two machines are only
    comparable with it beside them: the same code took 0.6-0.7 CPU-s to import on one
    machine and 1.5 on another, a day apart. Process CPU time, so other work on the
    machine slows it only through shared caches, not by taking turns."""
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        total = 0
        for i in range(CPU_PROBE_LOOPS):
            total += i
        times.append(time.process_time() - t0)
    return round(sorted(times)[len(times) // 2], 3)


def machine_state(probe: bool = False) -> dict[str, Any]:
    """What this machine was doing: cores, load, memory, other testnets, busiest processes;
    with `probe`, how fast it runs Python (cpu_probe_s: worth a second, so only before a run)."""
    state: dict[str, Any] = {"nproc": os.cpu_count()}
    if probe:
        state["cpu_probe_s"] = cpu_probe_s()
    if (load := machine_load()) is not None:
        state["loadavg"] = [load.load1, load.load5, load.load15]
    with contextlib.suppress(OSError):
        mem = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("MemTotal", "MemAvailable"):
                mem[k] = round(int(v.split()[0]) / 1024 / 1024, 2)
        state["mem_gib"] = mem
    try:
        names = docker_ops.testnet_names()
        state["testnets_running"] = {
            n: len(docker_ops.containers(n)) for n in names if not n.startswith(PREFIX + "-")
        }
        state["containers_running"] = len(docker_ops.client().containers.list())
    except Exception as exc:  # the state report must never fail the bench
        state["docker_error"] = str(exc)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ps", "-eo", "pcpu,rss,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
        state["top_processes"] = [" ".join(line.split()) for line in out[:8]]
        state["python_processes"] = sum(1 for line in out if "python" in line)
    return state
