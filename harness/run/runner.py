"""Running a scenario for real: setup -> start -> audit -> steps -> report -> cleanup.

`run(scenario)` is the whole of it, in that order, for `sentrynet scenario NAME`. The
pytest plugin (harness/pytest_plugin.py) shares one testnet between the scenarios of a
test module, so it uses the two halves: `bring_up(topology)` (setup -> start -> audit) and
`execute(scenario, running)` (steps -> report). Every run gets a unique testnet name and,
when the topology's subnets are taken on this machine, free ones.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from harness.client import NOT_READ, NodeStatus, TestnetStatus
from harness.infra.load import machine_load
from harness.model import load_topology, reach
from harness.progress import Progress
from harness.run import audit, cleanup, graph, report, setup, start
from harness.run.steps import CheckOutcome, Scenario, deadline_scale, pending_outcomes, run_steps
from harness.run.testnet import RunningTestnet

READY_DEADLINE_S = 120.0  # scaled by SENTRYNET_DEADLINE_SCALE


def run(
    scenario: Scenario,
    *,
    name: str | None = None,
    keep: bool = False,
    results_root: str | Path = report.RESULTS_DIR,
    progress: Progress | None = None,
    engine: str | None = None,
    hosts: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """setup -> start -> audit -> steps -> report -> cleanup, on `engine` (compose | swarm).

    A report is written whatever happens (the testnet did not come up, a step failed,
    Ctrl-C or SIGTERM during the steps); the testnet is removed at the end unless keep.
    """
    progress = progress or Progress()
    t_start = time.monotonic()
    started_at = _now_iso()
    running: RunningTestnet | None = None
    with cleanup.sigterm_as_interrupt():
        try:
            path = setup.topology_path(scenario.topology)
            running = start.setup_and_start(
                path,
                name=name or setup.unique_name(scenario.run_label),
                progress=progress,
                ready_deadline_s=READY_DEADLINE_S * deadline_scale(),
                engine=engine,
                hosts=hosts,
            )
            audit.audit_running(running, progress)
        except BaseException as exc:  # the testnet did not come up: the report says why
            stopped = isinstance(exc, KeyboardInterrupt)
            try:
                if not isinstance(exc, Exception):
                    raise
                outcomes = pending_outcomes(scenario, [], f"the testnet did not come up: {exc}")
                # start removes what it started; when the audit failed, the nodes' status,
                # events and logs go into the results before the testnet is removed
                return write_report(
                    scenario,
                    running,
                    outcomes,
                    results_root=results_root,
                    progress=progress,
                    error=f"up failed: {exc}",
                    t_start=t_start,
                )
            finally:
                if running is not None:
                    cleanup.teardown(
                        running.name, progress, "interrupted" if stopped else "start failed"
                    )
        running.started_at = started_at
        try:
            _add_topology(running, path)
            return execute(
                scenario,
                running,
                progress=progress,
                results_root=results_root,
                kept=keep,
                t_start=t_start,
            )
        finally:
            _cleanup(running, keep, progress)


def _cleanup(running: RunningTestnet, keep: bool, progress: Progress) -> None:
    if keep:
        progress.say(
            f"testnet {running.name} kept for inspection: `sentrynet status -t {running.name}`, "
            f"`sentrynet down {running.name}` when done"
        )
        return
    with cleanup.uninterruptible():
        progress.say(running.down())


def _add_topology(running: RunningTestnet, path: Path) -> None:
    """What the scenarios read besides the nodes: the topology as written (reach.py does
    not depend on subnets) and which relays each client can reach over IP according to the
    model (it explains failures)."""
    topo = load_topology(path)
    running.topology = topo
    running.observer.marks["reach_relays"] = {n.name: reach.reservable(topo, n) for n in topo.nodes}


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the two halves


def bring_up(
    topology: str,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    engine: str | None = None,
) -> RunningTestnet:
    """setup -> start -> audit of scenarios/<topology>.yaml under a unique name."""
    progress = progress or Progress()
    path = setup.topology_path(topology)
    started_at = _now_iso()
    running = start.up(
        path,
        name=name or setup.unique_name(load_topology(path).name),
        free_subnets=True,
        progress=progress,
        ready_deadline_s=READY_DEADLINE_S * deadline_scale(),
        engine=engine,
    )
    running.started_at = started_at
    try:
        _add_topology(running, path)
    except BaseException:
        cleanup.down(running.name)
        raise
    return running


def execute(
    scenario: Scenario,
    running: RunningTestnet,
    *,
    progress: Progress,
    results_root: str | Path = report.RESULTS_DIR,
    kept: bool = False,
    t_start: float | None = None,
) -> tuple[dict[str, Any], Path]:
    """steps -> report on a running testnet (the report is written also when interrupted)."""
    ctx = running.context(progress)
    decided: list[tuple[str, dict[str, Any]]] = []

    def keep_observation(outcome: CheckOutcome) -> None:
        # the observation the check's verdict came from (its last poll), for replay tests
        last = running.observer.last
        if last is not None:
            decided.append((outcome.name, last.to_json()))

    try:
        outcomes = run_steps(scenario, ctx, on_outcome=keep_observation)
    except KeyboardInterrupt as exc:
        done = list(ctx.extra.get("outcomes") or [])
        why = f"interrupted ({exc})" if str(exc) else "interrupted (Ctrl-C)"
        write_report(
            scenario,
            running,
            pending_outcomes(scenario, done, "interrupted"),
            results_root=results_root,
            progress=progress,
            error=why,
            kept=kept,
            t_start=t_start,
            decided=decided,
        )
        raise
    return write_report(
        scenario,
        running,
        pending_outcomes(scenario, outcomes, "not reached"),
        results_root=results_root,
        progress=progress,
        kept=kept,
        t_start=t_start,
        decided=decided,
    )


# --------------------------------------------------------------------------- report


def write_report(
    scenario: Scenario,
    running: RunningTestnet | None,
    outcomes: list[CheckOutcome],
    *,
    results_root: str | Path,
    progress: Progress,
    error: str | None = None,
    kept: bool = False,
    t_start: float | None = None,
    decided: list[tuple[str, dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Write results/<run-id>/ for whatever happened (complete, failed or interrupted).

    `decided` holds, per check outcome, the observation its verdict came from; they go to
    observations/NN-<check>.json so tests can replay the checks on real data."""
    run_dir = report.new_run_dir(results_root, scenario.run_label)
    artifacts: dict[str, Any] = {}
    if running is not None:
        try:
            running.observe()  # the final status of every node
        except Exception as exc:
            artifacts["final_poll_error"] = str(exc)
        tn, observer = running.testnet, running.observer
        artifacts.update(
            report.save_artifacts(
                run_dir,
                statuses={
                    **{
                        n.name: st.to_json() if (st := observer.status.get(n.name)) else None
                        for n in tn.nodes
                    },
                    **{  # what the routers' conntrack held at the end (harness/checks/outside)
                        r.name: {"conntrack": [f.to_json() for f in flows]}
                        for r in tn.routers
                        if (flows := observer.flows.get(r.network)) is not None
                    },
                },
                status_errors={**observer.errors, **_outside_views(running)},
                events={n: [e.to_json() for e in evs] for n, evs in observer.events.items()},
                logs=[n.name for n in tn.nodes] + [r.name for r in tn.routers],
                read_log=lambda name: (
                    running.container(name).logs(timestamps=True).decode(errors="replace")
                ),
                graph=lambda out_dir: _write_graph(running, out_dir),
            )
        )
        for i, (check, obs) in enumerate(decided or []):
            rel = f"observations/{i:02d}-{check}.json"
            (run_dir / "observations").mkdir(exist_ok=True)
            report.write_json(run_dir / rel, obs)
            artifacts.setdefault("written", []).append(rel)
    up_s = running.timings.get("up_to_ready_s") if running else None
    doc = report.build_report(
        scenario.name,
        outcomes,
        impl=scenario.impl,
        engine=running.testnet.engine if running else None,
        impl_switched=list(scenario.switched) if scenario.switched else None,
        description=scenario.description,
        run_id=run_dir.name,
        testnet=running.name if running else None,
        topology=scenario.topology,
        started_at=running.started_at if running else None,
        duration_s=round(time.monotonic() - t_start, 1) if t_start else None,
        up_seconds=round(float(up_s), 2) if up_s is not None else None,
        marks=_jsonable(running.observer.marks) if running else None,
        kept=kept or None,
        error=error,
        artifacts=artifacts or None,
        conclusion=scenario.conclusion(outcomes) if scenario.conclusion else None,
        machine=_machine(running),
    )
    report.write_results(run_dir, doc)
    progress.say(f"results: {run_dir} (report.json, junit.xml, logs/, status/, events/, graph.svg)")
    return doc, run_dir


def _machine(running: RunningTestnet | None) -> dict[str, Any] | None:
    """The machine's load when the testnet was ready and at the end of the run (report.json
    `machine`): what a check's seconds and timeouts were measured against."""
    end = machine_load()
    ready = running.load_at_ready if running is not None else None
    if end is None and ready is None:
        return None
    return {
        "at_ready": ready.to_json() if ready else None,
        "at_end": end.to_json() if end else None,
        "saturated": any(x is not None and x.saturated for x in (ready, end)),
    }


def _outside_views(running: RunningTestnet) -> dict[str, Any]:
    """What status/<node>.json says of a node with `api: none`: that it was never asked,
    and its TCP table as last read from outside; routers get their conntrack flows."""
    observer, out = running.observer, {}
    for n in running.testnet.nodes:
        if not n.has_api:
            out[n.name] = {
                "api": NOT_READ,
                "tcp_table": [s.to_json() for s in observer.sockets.get(n.name, [])],
            }
    return out


def _write_graph(running: RunningTestnet, run_dir: Path) -> list[str]:
    """The connection graph of the last observation (svg, dot, json)."""
    tn, observer = running.testnet, running.observer
    snap = TestnetStatus(
        tn.name,
        [NodeStatus(n, observer.status.get(n.name), observer.errors.get(n.name)) for n in tn.nodes],
    )
    g = graph.build_graph(snap, tn)
    graph.write(g, run_dir / "graph.svg")
    graph.write(g, run_dir / "graph.dot")
    edges = [{"a": e.a, "b": e.b, "kind": e.kind, "via": e.via} for e in g.edges]
    report.write_json(
        run_dir / "graph.json", {"testnet": tn.name, "down": sorted(g.down), "edges": edges}
    )
    return ["graph.svg", "graph.dot", "graph.json"]


def _jsonable(marks: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(marks, default=str)))
