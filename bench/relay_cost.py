"""Relay CPU and memory per active circuit.

Testnet (bench/topogen.pairs with DCUtR off): one public relay, k clients behind each of two
cone routers. With DCUtR off every a-b pair keeps its circuit, so with i clients running on
each side the relay carries i*i circuits. Steps: up; wait until the relay reports all k*k
circuits (`/status circuits`); sample; then stop the pairs (a_i, b_i) one at a time (their
circuits close at once, so the count is known: (k-1)^2, ..., 1, 0), waiting for the
relay's count to drop and sampling after each. A sample is the relay container over a
fixed window:
CPU seconds (cgroup total_usage, docker stats) per wall second, memory (usage -
inactive_file), relayed bytes (`sentrynet_relayed_bytes_total`). The per-circuit slope is a
least-squares fit over the points. Circuits carry the nodes' own background traffic
(identify, ping, gossipsub heartbeats and a one-block-per-second chain, peer exchange): the
figure is the cost of an open, lightly used circuit, not of a saturated one.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench import live, stats, topogen
from bench.context import Ctx
from harness.errors import SentrynetError
from harness.run.testnet import RunningTestnet

WINDOW_S = 15.0
QUICK_WINDOW_S = 5.0
RELAYED_BYTES = re.compile(r"^sentrynet_relayed_bytes_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", re.M)


def _relayed_bytes(net: RunningTestnet) -> float | None:
    try:
        m = RELAYED_BYTES.search(live.client(net, "relay").metrics())
    except SentrynetError:
        return None
    return float(m.group(1)) if m else None


def _circuits(net: RunningTestnet) -> int:
    st = live.status(net, "relay")
    return len(st.circuits) if st is not None else 0


def sample(net: RunningTestnet, window_s: float) -> dict[str, Any]:
    c = net.container("relay")
    b0, a0 = live.container_stats(c), _relayed_bytes(net)
    circ0 = _circuits(net)
    time.sleep(window_s)  # the sampling window, not a wait for a condition
    b1, a1 = live.container_stats(c), _relayed_bytes(net)
    dt = b1["t"] - b0["t"]
    return {
        "circuits": circ0,
        "circuits_end": _circuits(net),
        "cpu_cores": round((b1["cpu_s"] - b0["cpu_s"]) / dt, 4),
        "mem_mib": round(b1["mem_bytes"] / 2**20, 2),
        "relayed_bytes_per_s": (
            round((a1 - a0) / dt, 1) if a0 is not None and a1 is not None else None
        ),
        "window_s": round(dt, 2),
    }


def run_once(
    ctx: Ctx, k: int, window: float, run: int, relay_impl: str = "python"
) -> dict[str, Any]:
    """One testnet: k*k circuits through a relay of `relay_impl`, then down to 0, a sample
    at each step (module doc)."""
    points: list[dict[str, Any]] = []
    out: dict[str, Any] = {"run": run, "k": k, "relay_impl": relay_impl, "points": points}
    doc = topogen.pairs(k, "cone", dcutr=False, relay_impl=relay_impl)
    label = "relaycost" if relay_impl == "python" else f"relaycost-{relay_impl}"
    try:
        with live.running(ctx, doc, label) as net:
            out["testnet"] = net.name

            def circuits_at_least(want: int) -> tuple[bool, str]:
                have = _circuits(net)
                return have >= want, f"{have}/{want} circuits on the relay"

            try:
                live.wait(
                    ctx,
                    net,
                    lambda: circuits_at_least(k * k),
                    f"all {k * k} a-b circuits through the relay",
                    240.0,
                    "peers did not meet over the relay (reservations, peer exchange)",
                    interval_s=2.0,
                )
            except SentrynetError as exc:  # sample whatever formed
                out.setdefault("errors", []).append(str(exc))
            points.append(sample(net, window))
            ctx.say(f"relay cost ({relay_impl}): {points[-1]}")
            # then down to 0: stopping a pair closes its circuits at once, so each
            # step is quick and the count is known
            stopped: set[str] = set()
            for i in reversed(range(k)):
                for s in ("a", "b"):
                    net.container(f"{s}{i}").stop(timeout=10)
                    stopped.add(net.testnet.node(f"{s}{i}").peer_id)

                def closed(gone: frozenset[str] = frozenset(stopped)) -> tuple[bool, str]:
                    st = live.status(net, "relay")
                    circ = st.circuits if st is not None else ()
                    left = [c for c in circ if {c.src, c.dst} & gone]
                    return not left, f"{len(circ)} circuits, {len(left)} of stopped nodes"

                try:
                    live.wait(
                        ctx,
                        net,
                        closed,
                        "the stopped nodes' circuits to close",
                        60.0,
                        "the relay did not notice the closed connections",
                    )
                except SentrynetError as exc:
                    out.setdefault("errors", []).append(str(exc))
                points.append(sample(net, window))
                ctx.say(f"relay cost ({relay_impl}): {points[-1]}")
    except SentrynetError as exc:
        out["error"] = str(exc)
    return out


def fit(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU and memory per circuit: least-squares lines over every run's points."""
    pts = [p for r in runs for p in r["points"]]
    # circuits can open or close during a window: x is the mean of its two ends
    xs = [(float(p["circuits"]) + float(p["circuits_end"])) / 2 for p in pts]
    cpu = linear(xs, [p["cpu_cores"] for p in pts])
    mem = linear(xs, [p["mem_mib"] for p in pts])
    return {
        "cpu_cores_per_circuit": cpu["slope"],
        "cpu_cores_at_zero": cpu["intercept"],
        "cpu_fit_r2": cpu["r2"],
        "mem_mib_per_circuit": mem["slope"],
        "mem_mib_at_zero": mem["intercept"],
        "mem_fit_r2": mem["r2"],
        "max_circuits": max(xs, default=0),
        "windows": len(pts),
    }


def measure(ctx: Ctx, relay_impl: str = "python") -> dict[str, Any]:
    k = int(ctx.options.get("relay_k") or (2 if ctx.quick else 4))
    window = QUICK_WINDOW_S if ctx.quick else WINDOW_S
    runs = [run_once(ctx, k, window, run, relay_impl) for run in range(ctx.repeat)]
    return {
        "clock": "bench monotonic sampling windows; CPU from the relay container's cgroup",
        "window_s": window,
        "relay_impl": relay_impl,
        **fit(runs),
        "runs": runs,
    }


def linear(xs: list[float], ys: list[float]) -> dict[str, float | None]:
    fit = stats.linear_fit(xs, ys)
    return {k: (round(v, 6) if v is not None else None) for k, v in fit.items()}
