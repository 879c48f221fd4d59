"""Benchmark results: the JSON document, the markdown table, the targets and the PNG plots.

`headline(results)` pulls the figures docs/bench.md quotes out of the per-measurement
sections; `targets(results)` judges each target against them (met / missed / not measured,
never guessed); `markdown(doc)` renders both as tables; `plots(doc, out)` draws the scale
curve and the hole-punch time distribution (bench/plot.py, matplotlib).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import plot

TARGETS = (
    ("warm", "warm `make testnet-sentry` end to end", "< 60 s"),
    ("reservation", "first reservation after node start (p95)", "<= 2 s"),
    ("dcutr", "DCUtR upgrade (cone) within 1 s + 3 relayed RTTs (p95 of pairs)", "95 % of pairs"),
    ("sync", "relayed sync throughput / direct", ">= 0.5"),
    ("scale64", "64 nodes running with reservations on this machine", "all ready"),
    ("idle", "idle node CPU in the sentry testnet, 1 block/s (median per node)", "<= 0.03 cores"),
    (
        "idle_ratio",
        "CPU of an idle node against the baseline's node code, same machine and run (loopback)",
        "<= 0.25",
    ),
)


def _get(doc: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(p)
    return doc


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures issue #7 asks for, flat: name -> {median, p95, n, ...} or a number."""
    h: dict[str, Any] = {}
    if "reservation" in results:
        h["first_reservation_s"] = _get(results, "reservation", "first_reservation_s")
    if "holepunch" in results:
        for nat in ("cone", "symmetric"):
            sec = _get(results, "holepunch", nat) or {}
            h[f"dcutr_upgrade_s_{nat}"] = sec.get("dcutr_upgrade_s")
            h[f"dcutr_success_ratio_{nat}"] = sec.get("dcutr_success_ratio")
            h[f"dcutr_pairs_{nat}"] = f"{sec.get('succeeded')}/{sec.get('pairs')}"
            h[f"relayed_rtt_s_{nat}"] = sec.get("relayed_rtt_s")
    if "sync" in results:
        s = results["sync"]
        h["sync_direct_blocks_per_s"] = s.get("sync_direct_blocks_per_s")
        h["sync_relayed_blocks_per_s"] = s.get("sync_relayed_blocks_per_s")
        h["sync_relayed_over_direct"] = s.get("relayed_over_direct")
    if "relay_cost" in results:
        r = results["relay_cost"]
        h["relay_cpu_cores_per_circuit"] = r.get("cpu_cores_per_circuit")
        h["relay_mem_mib_per_circuit"] = r.get("mem_mib_per_circuit")
        h["relay_cpu_cores_idle"] = r.get("cpu_cores_at_zero")
        h["relay_mem_mib_idle"] = r.get("mem_mib_at_zero")
    if "scale" in results:
        curve = _get(results, "scale", "curve") or []
        h["ready_s_by_nodes"] = {str(c["nodes"]): c["ready_s"] for c in curve}
        h["ready_first_s_by_nodes"] = {str(c["nodes"]): c.get("ready_first_s") for c in curve}
        h["scale_growth_exponent"] = _get(results, "scale", "growth_exponent")
    if "idle" in results:
        h["idle_node_cores"] = _get(results, "idle", "idle_node_cores")
        h["idle_node_cores_by_role"] = _get(results, "idle", "by_role")
    if "idle_ratio" in results:
        h["idle_over_baseline_code"] = _get(results, "idle_ratio", "working_tree_over_rev")
    if "warm" in results:
        h["testnet_sentry_warm_s"] = _get(results, "warm", "testnet_sentry_warm_s")
        h["testnet_sentry_warm_s_all_runs"] = _get(results, "warm", "all_runs_s")
    return h


def _verdict(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[ok]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, what, goal in TARGETS:
        measured: Any = None
        ok: bool | None = None
        if key == "warm" and "warm" in results:
            med = _get(results, "warm", "testnet_sentry_warm_s", "median")
            runs = _get(results, "warm", "runs") or []
            if med is not None:
                measured, ok = f"{med:.1f} s (median)", med < 60.0
            elif runs:
                failed = [c.get("name") for c in runs[0].get("checks") or [] if not c.get("passed")]
                measured = (
                    f"{runs[0].get('seconds')} s, but the scenario failed (rc {runs[0].get('rc')}"
                    + (f"; failed checks: {', '.join(map(str, failed))}" if failed else "")
                    + ")"
                )
                ok = False
        elif key == "reservation" and "reservation" in results:
            p = _get(results, "reservation", "first_reservation_s", "p95")
            m = _get(results, "reservation", "first_reservation_s", "median")
            if p is not None:
                measured, ok = f"p95 {p:.2f} s, median {m:.2f} s", p <= 2.0
        elif key == "dcutr" and "holepunch" in results:
            cone = _get(results, "holepunch", "cone") or {}
            met = str(cone.get("target_met") or "0/0")
            a = int(met.split("/")[0])
            pairs = int(cone.get("pairs") or 0)
            if pairs:
                measured = f"{a}/{pairs} pairs within target (success {cone.get('succeeded')})"
                ok = a >= 0.95 * pairs
            else:
                errs = [r.get("error") for r in cone.get("runs") or [] if r.get("error")]
                measured = "no pair met over a circuit" + (
                    f": {str(errs[0]).splitlines()[0][:160]}" if errs else ""
                )
                ok = False
        elif key == "sync" and "sync" in results:
            r = _get(results, "sync", "relayed_over_direct")
            if r is not None:
                measured, ok = f"{r:.2f}", r >= 0.5
            else:
                runs = _get(results, "sync", "runs") or []
                errs = [
                    e for run in runs for e in [run.get("error"), *(run.get("errors") or [])] if e
                ]
                if runs:
                    measured = "no ratio: " + (
                        str(errs[0]).splitlines()[0][:160] if errs else "a figure is missing"
                    )
                    ok = False
        elif key == "scale64" and "scale" in results:
            pts = [p for p in _get(results, "scale", "points") or [] if p.get("nodes") == 64]
            if pts:
                good = [p for p in pts if p.get("ready_s") is not None]
                measured = (
                    f"ready in {good[0]['ready_s']:.0f} s"
                    if good
                    else f"not ready: {(pts[0].get('error') or '?')[:120]}"
                )
                ok = bool(good)
        elif key == "idle" and "idle" in results:
            med = _get(results, "idle", "idle_node_cores", "median")
            if med is not None:
                roles = _get(results, "idle", "by_role") or {}
                per_role = ", ".join(
                    f"{r} {v.get('median'):.3f}" for r, v in roles.items() if v.get("median")
                )
                measured = f"{med:.3f} cores (median; {per_role})"
                ok = med <= 0.03
            else:
                errs = [r.get("error") for r in _get(results, "idle", "runs") or []]
                measured = "not measured: " + str(next((e for e in errs if e), "?"))[:160]
                ok = False
        elif key == "idle_ratio" and "idle_ratio" in results:
            r = results["idle_ratio"]
            ratio = r.get("working_tree_over_rev")
            if ratio is not None:
                runs = r.get("runs_cpu_cores_median") or {}
                measured = (
                    f"{ratio:.3f} ({r.get('working_tree_median'):.4f} / "
                    f"{r.get('rev_median'):.4f} cores, {r.get('rev')}, "
                    f"{len(runs.get('rev') or [])} pairs)"
                )
                ok = ratio <= r.get("target_ratio", 0.25)
            else:
                measured = "not measured: " + str(r.get("error") or "?")[:160]
                ok = False
        out.append({"target": what, "goal": goal, "measured": measured, "verdict": _verdict(ok)})
    return out


def _s(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _row(name: str, v: Any, unit: str, clock: str) -> str:
    if isinstance(v, dict) and "median" in v:
        if not v.get("n"):
            return f"| {name} | - | - | 0 | {unit} | {clock} |"
        return f"| {name} | {_s(v['median'])} | {_s(v['p95'])} | {v['n']} | {unit} | {clock} |"
    return f"| {name} | {_s(v)} | | | {unit} | {clock} |"


def _probe_text(probe: Any) -> str:
    """The machine's Python speed (bench/live.py cpu_probe_s), when the run measured it."""
    if not isinstance(probe, int | float):
        return ""
    return f" (CPU probe {probe:g} CPU-s, lower is faster: docs/bench.md, Method)"


def markdown(doc: dict[str, Any]) -> str:
    h = doc.get("headline") or {}
    m = doc.get("machine", {}).get("before") or {}
    lines = [
        f"# sentrynet bench {doc.get('run_id')}",
        "",
        f"commit `{doc.get('commit')}`{' (dirty tree)' if doc.get('dirty') else ''}, "
        f"{'quick' if doc.get('quick') else 'full'} run, repeat {doc.get('repeat')}, "
        f"{doc.get('started_at')} -> {doc.get('finished_at')} "
        f"({doc.get('wall_s')} s). Machine: {m.get('nproc')} cores"
        f"{_probe_text(m.get('cpu_probe_s'))}, load "
        f"{m.get('loadavg')}, memory {m.get('mem_gib')} GiB, other testnets running: "
        f"{m.get('testnets_running')}.",
        "",
        "| figure | median | p95 | n | unit | clock |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    node, bench, wall = "node monotonic", "bench monotonic", "wall (make)"
    rows = [
        ("first_reservation_s", h.get("first_reservation_s"), "s", node),
        ("dcutr_upgrade_s (cone)", h.get("dcutr_upgrade_s_cone"), "s", node),
        ("dcutr_success_ratio (cone)", h.get("dcutr_success_ratio_cone"), "ratio", node),
        ("relayed RTT (cone)", h.get("relayed_rtt_s_cone"), "s", node),
        ("dcutr_upgrade_s (symmetric)", h.get("dcutr_upgrade_s_symmetric"), "s", node),
        ("dcutr_success_ratio (symmetric)", h.get("dcutr_success_ratio_symmetric"), "ratio", node),
        ("relayed RTT (symmetric)", h.get("relayed_rtt_s_symmetric"), "s", node),
        ("sync_direct_blocks_per_s", h.get("sync_direct_blocks_per_s"), "blocks/s", node),
        ("sync_relayed_blocks_per_s", h.get("sync_relayed_blocks_per_s"), "blocks/s", node),
        ("relayed / direct sync", h.get("sync_relayed_over_direct"), "ratio", node),
        ("relay CPU per circuit", h.get("relay_cpu_cores_per_circuit"), "cores", bench),
        ("relay memory per circuit", h.get("relay_mem_mib_per_circuit"), "MiB", bench),
        ("relay CPU, no circuit", h.get("relay_cpu_cores_idle"), "cores", bench),
        ("relay memory, no circuit", h.get("relay_mem_mib_idle"), "MiB", bench),
        ("idle node CPU (sentry testnet)", h.get("idle_node_cores"), "cores", bench),
        ("idle CPU / baseline node code", h.get("idle_over_baseline_code"), "ratio", "host"),
    ]
    for n, v in (h.get("ready_s_by_nodes") or {}).items():
        rows.append((f"ready_s, {n} nodes", v, "s", "bench+node (shared)"))
    for n, v in (h.get("ready_first_s_by_nodes") or {}).items():
        rows.append((f"ready (first reservation each), {n} nodes", v, "s", "bench+node (shared)"))
    rows.append(("testnet_sentry_warm_s (passing runs)", h.get("testnet_sentry_warm_s"), "s", wall))
    rows.append(
        ("make testnet-sentry, every run", h.get("testnet_sentry_warm_s_all_runs"), "s", wall)
    )
    for name, v, unit, clock in rows:
        if v is not None:
            lines.append(_row(name, v, unit, clock))
    lines += ["", "| target | goal | measured | verdict |", "| --- | --- | --- | --- |"]
    for t in doc.get("targets") or []:
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured'] or '-'} | {t['verdict']} |")
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "Where the time goes:", ""] + [f"- {n}" for n in notes]
    errors = doc.get("errors") or {}
    if errors:
        lines += ["", "Errors:", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def plots(doc: dict[str, Any], out: Path, stem: str) -> list[str]:
    """scale curve and hole-punch distribution PNGs; returns the file names written."""
    written = []
    res = doc.get("results") or {}
    pts = [p for p in _get(res, "scale", "points") or [] if p.get("phases_s")]
    if pts:
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for label, key in (
            ("all reservations (ready_s)", "compose_up_to_all_reservations"),
            ("every client's first reservation", "compose_up_to_all_first_reservations"),
            ("all APIs answering", "compose_up_to_all_apis"),
            ("last node process started", "compose_up_to_last_node_started"),
        ):
            s = [
                (float(p["nodes"]), float(p["phases_s"][key]))
                for p in pts
                if p["phases_s"].get(key) is not None
            ]
            if s:
                series.append((label, s))
        name = f"{stem}-scale.png"
        plot.line_chart(out / name, series, "Time from compose up vs nodes", "nodes", "seconds")
        written.append(name)
    hp = _get(res, "holepunch") or {}
    samples: list[tuple[str, list[float]]] = []
    for nat in ("cone", "symmetric"):
        rows = [r for run in _get(hp, nat, "runs") or [] for r in run.get("samples") or []]
        ups = [float(r["upgrade_s"]) for r in rows if r.get("upgrade_s") is not None]
        if ups:
            samples.append((f"{nat} upgrade_s", ups))
        punch = [float(r["punch_s"]) for r in rows if r.get("punch_s") is not None]
        if punch:
            samples.append((f"{nat} punch_s (last attempt)", punch))
        failed = [float(x) for r in rows for x in r.get("failed_attempt_s") or []]
        if failed:
            samples.append((f"{nat} failed attempts", failed))
    if samples:
        name = f"{stem}-holepunch.png"
        plot.histogram(out / name, samples, "DCUtR time to direct", "seconds")
        written.append(name)
    return written


def write(doc: dict[str, Any], out: Path, run_id: str) -> list[Path]:
    """<run-id>.json/.md, latest.json/.md and the plots, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = plots(doc, out, run_id)
    text = json.dumps(doc, indent=1, default=str)
    md = markdown(doc)
    paths = []
    for stem in (run_id, "latest"):
        (out / f"{stem}.json").write_text(text + "\n")
        (out / f"{stem}.md").write_text(md)
        paths += [out / f"{stem}.json", out / f"{stem}.md"]
    return paths


def _reasons(reservation: dict[str, Any]) -> str:
    """`; by reason: no answer within Ns 120, ...` (all clients), or nothing."""
    counts = reservation.get("denied_reasons_before_first") or {}
    if not counts:
        return ""
    return "; by reason: " + ", ".join(f"{k} {v}" for k, v in list(counts.items())[:5])


def where_time_goes(results: dict[str, Any]) -> list[str]:
    """Plain sentences from the measured phases (only what the numbers show)."""
    notes = []
    r = results.get("reservation") or {}
    fr = _get(r, "first_reservation_s", "median")
    if fr is not None:
        conn = _get(r, "phases_s", "start_to_relay_connection", "median")
        disc = _get(r, "phases_s", "start_to_relay_discovered", "median")
        late = _get(r, "phases_s", "relay_process_started_after_client", "median")
        denied = _get(r, "denied_before_first", "mean")
        notes.append(
            f"first reservation (median {fr:.2f} s after node start): first connection to the "
            f"relay at {_s(conn)} s, relay matched at {_s(disc)} s, reservation "
            f"accepted at {fr:.2f} s (node clock, medians over clients); the relay's process "
            f"started {_s(late)} s after the client's (median; negative: before); failed or "
            f"denied attempts "
            f"before the first accept: {_s(denied)} per client (mean)" + _reasons(r)
        )
    for pt in _get(results, "scale", "points") or []:
        ph = pt.get("phases_s")
        if not ph:
            if pt.get("error"):
                notes.append(f"scale {pt['nodes']} nodes: {pt['error'][:300]}")
            continue
        res = pt.get("resources") or {}
        notes.append(
            f"scale {pt['nodes']} nodes / {pt['private_networks']} networks: compose up -> "
            f"first node process started {_s(ph.get('compose_up_to_first_node_started'))} s, "
            f"last {_s(ph.get('compose_up_to_last_node_started'))} s, all APIs "
            f"{_s(ph.get('compose_up_to_all_apis'))} s, every client's first reservation "
            f"{_s(ph.get('compose_up_to_all_first_reservations'))} s, all reservations "
            f"{_s(ph.get('compose_up_to_all_reservations'))} s; first reservation after node "
            f"start median {_s(_get(pt, 'first_reservation_s', 'median'))} s; node memory "
            f"median {_s(_get(res, 'node_mem_mib', 'median'))} MiB "
            f"(total {_s(res.get('node_mem_total_mib'))} MiB), node CPU total "
            f"{_s(res.get('node_cpu_total_cores'))} cores once ready; each node got "
            f"{_s(_get(res, 'node_avg_cores_since_up', 'median'))} cores on average since "
            f"compose up (median; {_s(_get(pt, 'machine_ready', 'loadavg'))} load average)"
        )
    for nat in ("cone", "symmetric"):
        sec = _get(results, "holepunch", nat)
        if not sec or not sec.get("pairs"):
            continue
        up = _get(sec, "dcutr_upgrade_s", "median")
        pu = _get(sec, "punch_s", "median")
        att = _get(sec, "attempts_to_success", "median")
        fails = sec.get("failure_reasons") or {}
        notes.append(
            f"DCUtR {nat}: {sec.get('succeeded')}/{sec.get('pairs')} pairs direct; upgrade "
            f"median {_s(up)} s of which the successful attempt {_s(pu)} s (attempts to "
            f"success median {_s(att)}; relayed RTT median "
            f"{_s(_get(sec, 'relayed_rtt_s', 'median'))} s)"
            + (f"; failures: {fails}" if fails else "")
        )
    for run in _get(results, "sync", "runs") or []:
        for who in ("sync-direct", "sync-relay"):
            fig = run.get(who) or {}
            if fig.get("stalled_s") is not None:
                last = (fig.get("log") or ["(no log)"])[-1]
                notes.append(
                    f"sync run {run.get('run')}: {who} got no block in {fig['stalled_s']} s; "
                    f"its last sync log line: {last}"
                )
    for run in _get(results, "warm", "runs") or []:
        checks = ", ".join(f"{c.get('name')} {c.get('seconds')} s" for c in run.get("checks") or [])
        notes.append(
            f"make testnet-sentry run {run.get('run')}: {run.get('seconds')} s wall, rc "
            f"{run.get('rc')}; testnet up (compose up -> ready) {run.get('up_seconds')} s; "
            f"checks, seconds since up: {checks or '-'}"
        )
    return notes
