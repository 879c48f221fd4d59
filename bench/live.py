"""Running a benchmark testnet through the harness (up -> measure -> down) and reading it.

Every testnet a benchmark starts is named `bench-<label>-<4 hex>` (unique; only these are
ever torn down by the bench), brought up by `harness.run.start.up` on free subnets
(`harness.run.setup.free_subnet_overrides`) and removed by label in `finally`, also on
Ctrl-C. The handle is the harness's `RunningTestnet`; nodes are read only through their
HTTP API (`RunningTestnet.client`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.client import NodeClient, NodeUnreachable
from harness.infra import docker as docker_ops
from harness.model import Testnet, load_topology
from harness.progress import Progress
from harness.run import cleanup, start
from harness.run.setup import free_subnet_overrides
from harness.run.testnet import RunningTestnet
from harness.wait import wait_until

PREFIX = "bench"


def bench_name(label: str) -> str:
    """bench-<label>-<4 hex>, within the harness's 31-character name limit."""
    return f"{PREFIX}-{label[:20]}-{secrets.token_hex(2)}"


@dataclass
class NodeData:
    """One node's /status and its whole /events log, read after a measurement."""

    name: str
    status: dict[str, Any] | None
    events: list[dict[str, Any]]
    error: str | None = None

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type_]

    def first(self, type_: str) -> dict[str, Any] | None:
        evs = self.of_type(type_)
        return evs[0] if evs else None

    @property
    def started_at(self) -> float | None:
        v = (self.status or {}).get("started_at")
        return float(v) if v is not None else None


@dataclass
class BenchNet:
    """A running benchmark testnet (the harness's handle) plus the bench's progress output."""

    running: RunningTestnet
    topology_path: Path
    progress: Progress = field(default_factory=lambda: Progress(quiet=True))
    last_seen: str = ""  # the last line a wait printed (kept for interrupted runs)

    @property
    def testnet(self) -> Testnet:
        return self.running.testnet

    @property
    def name(self) -> str:
        return self.running.testnet.name

    @property
    def t_compose_up(self) -> float:
        """Bench-clock moment compose up began."""
        return self.running.t_up

    def client(self, node: str, timeout_s: float = 3.0) -> NodeClient:
        return self.running.client(node, timeout_s)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return self.client(node).status()
        except NodeUnreachable:
            return None

    def events(self, node: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        since = 0
        for _ in range(1000):  # pages until `next` stops moving
            nxt, evs = self.client(node).events(since)
            out.extend(evs)
            if nxt <= since or not evs:
                break
            since = nxt
        return out

    def collect(self, names: list[str] | None = None) -> dict[str, NodeData]:
        out = {}
        for n in names or [x.name for x in self.testnet.nodes]:
            try:
                out[n] = NodeData(n, self.client(n).status(), self.events(n))
            except NodeUnreachable as exc:
                out[n] = NodeData(n, None, [], str(exc))
        return out

    def container(self, node: str) -> Any:
        return self.running.container(node)

    def wait(
        self,
        probe: Callable[[], tuple[bool, Any]],
        what: str,
        deadline_s: float,
        cause: str,
        interval_s: float = 0.5,
    ) -> Any:
        """harness.wait.wait_until, printing the probe's line whenever it changes."""
        last = [""]

        def show(seen: Any) -> None:
            line = str(seen)
            if line != last[0]:
                self.progress.say(f"  {line[:300]}")
                last[0] = line
                self.last_seen = line[:1000]

        return wait_until(
            probe,
            what=f"{what} ({self.name})",
            deadline_s=deadline_s,
            likely_cause=cause,
            interval_s=interval_s,
            on_poll=show,
        )


def clock_check(net: BenchNet, data: dict[str, NodeData]) -> dict[str, Any]:
    """Do node clocks line up with the bench clock? (see module docstring)."""
    now = time.monotonic()
    starts = [d.started_at for d in data.values() if d.started_at is not None]
    ok = bool(starts) and all(net.t_compose_up - 0.5 <= s <= now for s in starts)
    return {
        "shared_monotonic": ok,
        "compose_up_at": round(net.t_compose_up, 3),
        "first_node_started_at": round(min(starts), 3) if starts else None,
        "last_node_started_at": round(max(starts), 3) if starts else None,
    }


@contextlib.contextmanager
def running(
    doc: dict[str, Any],
    label: str,
    work_dir: Path,
    progress: Progress,
    ready_deadline_s: float = 300.0,
) -> Iterator[BenchNet]:
    """Bring the topology `doc` up under a unique bench- name; always tear it down."""
    from bench import topogen

    name = bench_name(label)
    path = work_dir / "topologies" / f"{name}.yaml"
    topogen.write(doc, path)
    topo = load_topology(path)
    overrides = free_subnet_overrides(topo, docker_ops.subnets_in_use())
    run_dir = work_dir / "testnets" / name
    running_tn = start.up(
        path,
        name=name,
        subnets=overrides,
        out=run_dir,
        progress=progress,
        ready_deadline_s=ready_deadline_s,
    )
    try:
        yield BenchNet(running_tn, path, progress)
    finally:
        progress.say(cleanup.describe_removed(name, cleanup.down(name)))
        shutil.rmtree(run_dir, ignore_errors=True)


def container_stats(container: Any) -> dict[str, float]:
    """CPU time (s) and memory (bytes, docker's `usage - inactive_file`) of one container."""
    s = container.stats(stream=False, one_shot=True)
    cpu_ns = float(((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
    mem = s.get("memory_stats") or {}
    usage = float(mem.get("usage") or 0)
    inactive = float((mem.get("stats") or {}).get("inactive_file") or 0)
    return {"cpu_s": cpu_ns / 1e9, "mem_bytes": usage - inactive, "t": time.monotonic()}


def machine_state() -> dict[str, Any]:
    """What this machine was doing: cores, load, memory, other testnets, busiest processes."""
    state: dict[str, Any] = {"nproc": os.cpu_count()}
    with contextlib.suppress(OSError):
        state["loadavg"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
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
