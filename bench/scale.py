"""ready_s vs node count: from `compose up` to every node answering with its reservations.

Each point is a generated topology (bench/topogen.py: N nodes over P private networks behind
cone routers, one sentry per network on the public network), started through
harness.run.start.up and torn down after. Figures per point:

- ready_s (events): bench-clock compose-up moment -> the last relay client's last needed
  `reservation_accepted` (node clock; containers share the host's CLOCK_MONOTONIC, checked
  per testnet in `clock`); needed = min(relay servers, max_reservations_held).
  ready_first_s: the same for every client's first reservation. ready_poll_s: ready_s seen
  by polling /status (1 s interval), an upper bound that includes the poll interval.
- phases: compose up -> first / last node process started (`started_at`: container
  creation, network setup, Python imports) -> last API answering -> last reservation.
- resources once ready: memory per node container (docker stats, usage - inactive_file),
  node CPU over a sampling window, host MemAvailable.
- chain once ready: the highest height before and after that window; a point counts as
  ready only if it grew and no node trails it by more than CHAIN_LAG_OK blocks
  (reservations held and consensus running).
Where a point fails (deadline, start failure) the error and the last state seen are kept.
"""

from __future__ import annotations

import time
from typing import Any

from bench import live, reservation, stats, topogen
from bench.context import Ctx
from harness.checks import Observation
from harness.errors import SentrynetError
from harness.model.testnet import DEFAULT_ENGINE
from harness.run.testnet import RunningTestnet

SIZES = (8, 16, 32, 64)
QUICK_SIZES = (8,)
CPU_WINDOW_S = 10.0


def last_needed_reservation(
    obs: Observation, first_only: bool = False
) -> tuple[float | None, list[str]]:
    """Node-clock time when the last client got its last needed reservation (its first,
    with first_only), and the clients that never did."""
    worst = None
    missing = []
    for n in obs.nodes.values():
        if n.relay_mode not in ("client", "both") or not n.relay_servers:
            continue
        held = int((n.config.get("relay") or {}).get("max_reservations_held", 2))
        need = 1 if first_only else min(len(n.relay_servers), held)
        seen: dict[str, float] = {}
        for e in obs.events_of(n.name, "reservation_accepted"):
            seen.setdefault(str(e.relay), live.at(e))
        times = sorted(seen.values())
        if len(times) < need:
            missing.append(n.name)
            continue
        t = times[need - 1]
        worst = t if worst is None else max(worst, t)
    return worst, missing


def resources(net: RunningTestnet, window_s: float) -> dict[str, Any]:
    """Memory per node container now, node CPU (cores) over `window_s`, and the CPU each
    node got since compose up."""
    t_compose_up = net.t_up
    names = [n.name for n in net.testnet.nodes]
    before = {}
    for n in names:
        try:
            before[n] = live.container_stats(net.container(n))
        except Exception:
            continue
    time.sleep(window_s)  # a sampling window for CPU, not a wait for a condition
    cpu, mem = [], []
    for n, b in before.items():
        try:
            a = live.container_stats(net.container(n))
        except Exception:
            continue
        cpu.append((a["cpu_s"] - b["cpu_s"]) / max(1e-6, a["t"] - b["t"]))
        mem.append(a["mem_bytes"] / 2**20)
    since_up = max(1e-6, time.monotonic() - t_compose_up - window_s)
    spent = [b["cpu_s"] for b in before.values()]
    return {
        # CPU each node container got since compose up: with N nodes on C cores an
        # unstarved node could have had up to C/N cores; far less means it was waiting on
        # the CPU, not on the network
        "node_cpu_s_since_up": stats.summary(spent, 2),
        "node_avg_cores_since_up": stats.summary([x / since_up for x in spent], 4),
        "containers_sampled": len(mem),
        "node_mem_mib": stats.summary(mem, 1),
        "node_mem_total_mib": round(sum(mem), 1),
        "node_cpu_cores": stats.summary(cpu, 3),
        "node_cpu_total_cores": round(sum(cpu), 3),
        "cpu_window_s": window_s,
    }


CHAIN_LAG_OK = 5  # blocks a node may trail the highest at the end of the window


def heights(net: RunningTestnet) -> dict[str, int | None]:
    """Every node's chain height now (None: not read)."""
    return {ns.name: ns.height for ns in net.snapshot(timeout_s=live.API_TIMEOUT_S).nodes}


def validators_view(net: RunningTestnet) -> dict[str, dict[str, Any]]:
    """Each validator's consensus state now (height, round, step, its chain topic's mesh
    and its peers): where a stalled chain stands, and whether its votes can travel."""
    out: dict[str, dict[str, Any]] = {}
    for ns in net.snapshot(timeout_s=live.API_TIMEOUT_S).nodes:
        if not ns.target.validator:
            continue
        chain = ns.status.chain if ns.status else None
        out[ns.name] = {
            "height": ns.height,
            "round": chain.round if chain else None,
            "step": chain.step if chain else None,
            "mesh_peers": len(chain.mesh_peers) if chain else None,
            "peers": len(ns.peers()) if ns.status else None,
            "error": ns.error,
        }
    return out


def chain_progress(before: dict[str, int | None], after: dict[str, int | None]) -> dict[str, Any]:
    """Is consensus running once the testnet is ready: the highest height grew over the CPU
    window, and no node trails it by more than CHAIN_LAG_OK blocks (or went unread)."""
    top_before = max((h for h in before.values() if h is not None), default=-1)
    top_after = max((h for h in after.values() if h is not None), default=-1)
    behind = sorted(n for n, h in after.items() if h is None or h < top_after - CHAIN_LAG_OK)
    blocks = max(0, top_after - top_before) if top_before >= 0 else 0
    return {
        "height_before": top_before if top_before >= 0 else None,
        "height_after": top_after if top_after >= 0 else None,
        "blocks_in_window": blocks,
        "behind": behind,
        "running": blocks > 0 and not behind,
    }


def point(ctx: Ctx, n_nodes: int, run: int, engine: str = DEFAULT_ENGINE) -> dict[str, Any]:
    p = topogen.networks_for(n_nodes)
    interval = float(ctx.options.get("block_interval_s") or 1.0)
    doc = topogen.scale(n_nodes, p, block_interval_s=interval)
    row: dict[str, Any] = {
        "nodes": n_nodes,
        "private_networks": p,
        "run": run,
        "engine": engine,
        "block_interval_s": interval,
    }
    deadline = 120.0 + 6.0 * n_nodes
    row["machine_before"] = live.machine_state()
    t0 = time.monotonic()
    up = False  # the testnet came up: an interruption after that reports its last wait line
    try:
        with live.running(ctx, doc, f"scale{n_nodes}", deadline, engine=engine) as net:
            up = True
            row["testnet"] = net.name
            row["prepare_s"] = round(net.timings.get("prepare_s", 0.0), 3)
            row["up_to_api_s"] = round(net.timings.get("up_to_ready_s", 0.0), 3)
            try:
                t_first = reservation.wait_reservations(ctx, net, deadline, first_only=True)
                row["ready_first_poll_s"] = round(t_first - net.t_up, 3)
                # the second reservation of each client: a shorter grace once all have one
                t_done = reservation.wait_reservations(ctx, net, 60.0 + 2.0 * n_nodes)
                row["ready_poll_s"] = round(t_done - net.t_up, 3)
            except SentrynetError as exc:
                row["error"] = str(exc)
            obs = live.collect(net)
            row["clock"] = live.clock_check(net, obs)
            t_last, missing = last_needed_reservation(obs)
            if t_last is not None and not missing:
                row["ready_s"] = round(t_last - net.t_up, 3)
            row["without_reservations"] = missing
            t_first_ev, missing_first = last_needed_reservation(obs, first_only=True)
            if t_first_ev is not None and not missing_first:
                row["ready_first_s"] = round(t_first_ev - net.t_up, 3)
            starts = [s.started_at for s in obs.status.values() if s.started_at is not None]
            if starts:
                row["phases_s"] = {
                    "compose_up_to_first_node_started": round(min(starts) - net.t_up, 3),
                    "compose_up_to_last_node_started": round(max(starts) - net.t_up, 3),
                    "compose_up_to_all_apis": row["up_to_api_s"],
                    "compose_up_to_all_first_reservations": row.get("ready_first_s"),
                    "compose_up_to_all_reservations": row.get("ready_s"),
                }
            rows = reservation.samples(obs)
            row["reservation_samples"] = rows
            row["first_reservation_s"] = stats.summary(r.get("first_reservation_s") for r in rows)
            heights_before = heights(net)
            # long enough to see blocks at the chosen interval (the consensus check)
            window = max(CPU_WINDOW_S, 3 * interval) if not ctx.quick else 3.0
            row["resources"] = resources(net, window)
            row["chain"] = chain_progress(heights_before, heights(net))
            row["validators"] = validators_view(net)
            if not row["chain"]["running"]:
                row.setdefault("error", f"consensus not running: {row['chain']}")
                row.pop("ready_s", None)
            row["machine_ready"] = live.machine_state()
    except SentrynetError as exc:
        row.setdefault("error", str(exc))
    except KeyboardInterrupt:
        # keep how far it got: where a large point breaks is a result too
        row["error"] = f"interrupted after {time.monotonic() - t0:.0f} s"
        if up:
            row["last_seen"] = ctx.last_seen
        row["wall_s"] = round(time.monotonic() - t0, 1)
        row["machine_interrupted"] = live.machine_state()
        ctx.partial.setdefault("scale_points", []).append(row)
        raise
    row["wall_s"] = round(time.monotonic() - t0, 1)
    ctx.say(
        f"scale {n_nodes} nodes / {p} networks on {engine}: ready_s={row.get('ready_s')} "
        f"poll={row.get('ready_poll_s')} error={(row.get('error') or '-')[:200]}"
    )
    return row


def measure(ctx: Ctx) -> dict[str, Any]:
    sizes = ctx.options.get("sizes") or (QUICK_SIZES if ctx.quick else SIZES)
    engines = ctx.options.get("engines") or [DEFAULT_ENGINE]
    points: list[dict[str, Any]] = ctx.partial.setdefault("scale_points", [])
    for n in sizes:
        for i in range(ctx.repeat):
            for engine in engines:  # interleaved: drift of the machine hits both alike
                points.append(point(ctx, int(n), i, engine))
    return summarize(points)


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The compose curve (the headline's), and with other engines in the run each engine's
    curve and its ratio to compose per size (medians of ready_s and of compose up -> every
    API answering)."""
    engines = sorted({pt.get("engine", DEFAULT_ENGINE) for pt in points})
    out = _summarize([pt for pt in points if pt.get("engine", DEFAULT_ENGINE) == DEFAULT_ENGINE])
    out["points"] = points
    if engines != [DEFAULT_ENGINE]:
        out["engines"] = {
            e: _summarize([pt for pt in points if pt.get("engine") == e])["curve"] for e in engines
        }
        out["over_compose"] = _ratios(points, engines)
    return out


def _ratios(points: list[dict[str, Any]], engines: list[str]) -> dict[str, list[dict[str, Any]]]:
    def med(e: str, n: int, key: str) -> float | None:
        vals = [
            pt[key]
            for pt in points
            if pt.get("engine") == e and pt["nodes"] == n and pt.get(key) is not None
        ]
        return stats.median(vals)

    out: dict[str, list[dict[str, Any]]] = {}
    for e in engines:
        if e == DEFAULT_ENGINE:
            continue
        rows = []
        for n in sorted({pt["nodes"] for pt in points}):
            row: dict[str, Any] = {"nodes": n}
            for key in ("ready_s", "up_to_api_s", "prepare_s"):
                mine, base = med(e, n, key), med(DEFAULT_ENGINE, n, key)
                row[key] = {"median": mine, "compose_median": base}
                row[f"{key}_ratio"] = round(mine / base, 3) if mine and base else None
            rows.append(row)
        out[e] = rows
    return out


def _summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    by_size: dict[int, list[float]] = {}
    first_by_size: dict[int, list[float]] = {}
    for pt in points:
        if pt.get("ready_s") is not None:
            by_size.setdefault(pt["nodes"], []).append(pt["ready_s"])
        if pt.get("ready_first_s") is not None:
            first_by_size.setdefault(pt["nodes"], []).append(pt["ready_first_s"])
    curve = [
        {
            "nodes": n,
            "ready_s": stats.summary(by_size.get(n, []), 3),
            "ready_first_s": stats.summary(first_by_size.get(n, []), 3),
        }
        for n in sorted(set(by_size) | set(first_by_size))
    ]
    xs = [float(n) for n in sorted(by_size)]
    ys = [float(stats.median(by_size[n]) or 0.0) for n in sorted(by_size)]
    return {
        "clock": "bench monotonic at compose up -> node-monotonic reservation_accepted.t "
        "(shared kernel clock, see clock.shared_monotonic per point)",
        "curve": curve,
        "growth_exponent": stats.growth_exponent(xs, ys),
        "per_node_slope_s": stats.linear_fit(xs, ys)["slope"] if len(xs) > 1 else None,
        "points": points,
    }
