"""idle_node_cores: what a node costs once the sentry testnet has settled, per role.

The default testnet (scenarios/sentry.yaml) is brought up and left to settle: every relay
client holds its reservations and the chain has gone on IDLE_BLOCKS blocks on every node
since then (discovery, circuits and DCUtR upgrades done; 1 block/s). Then each node
container's CPU (cgroup, docker stats) is read over a window: cores per node, the median
per role (validator, sentry, full) and over all. Routers are not counted. The loopback
figure (bench/idle_profile.py) has no relay, circuit or NAT; this one has all of them.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from bench import live, reservation, stats
from bench.context import Ctx
from harness.errors import SentrynetError
from harness.run.setup import topology_path
from harness.run.testnet import RunningTestnet

IDLE_BLOCKS = 30  # the sentry scenario's circuits, upgrades and sync are done by then
WINDOW_S = 30.0
QUICK_WINDOW_S = 5.0
TARGET_CORES = 0.03


def wait_blocks(ctx: Ctx, net: RunningTestnet, blocks: int, deadline_s: float) -> None:
    """Until every node's chain height is `blocks` above what it was when called."""
    start: dict[str, int] = {}

    def probe() -> tuple[bool, str]:
        snap = net.snapshot(timeout_s=live.API_TIMEOUT_S)
        behind = []
        for ns in snap.nodes:
            h = ns.height
            if h is None:
                behind.append(f"{ns.name} no status")
                continue
            base = start.setdefault(ns.name, h)
            if h < base + blocks:
                behind.append(f"{ns.name} {h - base}/{blocks}")
        return not behind, "blocks since settled: " + (", ".join(behind[:8]) or "all")

    live.wait(
        ctx,
        net,
        probe,
        f"{blocks} more blocks on every node",
        deadline_s,
        "consensus stalled (see the nodes' chain status and events)",
        interval_s=1.0,
    )


def sample(net: RunningTestnet, window_s: float) -> list[dict[str, Any]]:
    """Cores per node container over `window_s` (a sampling window, not a wait)."""
    before = {n.name: live.container_stats(net.container(n.name)) for n in net.testnet.nodes}
    time.sleep(window_s)
    rows = []
    for n in net.testnet.nodes:
        a, b = live.container_stats(net.container(n.name)), before[n.name]
        cores = (a["cpu_s"] - b["cpu_s"]) / max(1e-6, a["t"] - b["t"])
        rows.append({"node": n.name, "role": n.role, "cores": round(cores, 4)})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    roles = sorted({r["role"] for r in rows})
    return {
        "idle_node_cores": stats.summary([r["cores"] for r in rows], 4),
        "by_role": {
            role: stats.summary([r["cores"] for r in rows if r["role"] == role], 4)
            for role in roles
        },
        "target_cores": TARGET_CORES,
    }


def measure(ctx: Ctx) -> dict[str, Any]:
    doc = yaml.safe_load(topology_path("sentry").read_text())
    window = QUICK_WINDOW_S if ctx.quick else WINDOW_S
    rows: list[dict[str, Any]] = []
    runs = []
    for i in range(ctx.repeat):
        with live.running(ctx, doc, "idle") as net:
            run: dict[str, Any] = {"testnet": net.name, "window_s": window}
            try:
                reservation.wait_reservations(ctx, net, 180.0)
                wait_blocks(ctx, net, IDLE_BLOCKS, 120.0)
                got = sample(net, window)
                for r in got:
                    r["run"] = i
                rows += got
                run["machine"] = live.machine_state()
            except SentrynetError as exc:
                run["error"] = str(exc)
            runs.append(run)
        ctx.say(f"idle run {i + 1}/{ctx.repeat}: {len(rows)} node samples")
    return {
        "topology": "scenarios/sentry.yaml",
        "clock": "bench monotonic; cgroup CPU time per node container",
        **summarize(rows),
        "runs": runs,
        "samples": rows,
    }
