"""Running a scenario for real: up -> steps -> results folder -> down.

Shared by `sentrynet scenario NAME` and the pytest plugin (harness/pytest_plugin.py):
- `start(topology)` brings a testnet up through harness/run/start.py under a unique name (and
  free subnets when the topology's are taken by another testnet on this machine) and returns
  a `Live` handle: the running testnet, an Observer polling its nodes, the perturbation
  layout and the moment `up` began (t = 0 of every check's `seconds`).
- `execute(scenario, live)` runs the steps and writes results/<run-id>/.
- `run(name)` is both, with tear-down in `finally` (also on Ctrl-C) unless keep=True.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks import Check, NetInfo, NodeInfo, Observation, Verdict
from harness.errors import SentrynetError
from harness.progress import Progress
from harness.run import report
from harness.run.steps import (
    CheckOutcome,
    Observer,
    RunContext,
    Scenario,
    deadline_scale,
    pending_outcomes,
    poll_check,
    run_steps,
)
from harness.wait import WaitTimeout

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO_ROOT / "scenarios"


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


def node_infos(testnet: Any) -> tuple[dict[str, NodeInfo], dict[str, NetInfo]]:
    """Static facts the checks need, from the resolved testnet model (harness/model/testnet.py)."""
    nodes = {
        n.name: NodeInfo(
            name=n.name,
            role=n.role,
            networks=tuple(n.addresses),
            validator=n.role == "validator",
            relay_client=n.relay_mode == "client",
            serve_sync=bool(n.serve_sync),
            peer_id=n.peer_id,
        )
        for n in testnet.nodes
    }
    routers = {r.network: r for r in testnet.routers}
    nets = {
        n.name: NetInfo(
            name=n.name,
            private=n.kind == "private",
            subnet=n.subnet,
            nat=None if n.nat == "none" else n.nat,
            router_public_ip=routers[n.name].public_ip if n.name in routers else None,
        )
        for n in testnet.networks
    }
    return nodes, nets


def perturb_layout(testnet: Any) -> Any:
    """harness/run/perturb.py's Layout for this testnet."""
    from harness.run import perturb

    return perturb.layout_of(testnet)


@dataclass
class Live:
    """A running testnet plus what scenarios need to look at and perturb it."""

    running: Any  # harness.run.start.RunningTestnet
    topology: Any  # harness.model.topology.Topology (with subnet overrides applied)
    observer: Observer
    layout: Any
    t_up: float  # time.monotonic() when `up` began (compose up)
    started_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.running.testnet.name)

    @property
    def testnet(self) -> Any:
        return self.running.testnet

    def observe(self) -> Observation:
        return self.observer.observe()

    def context(self, progress: Progress) -> RunContext:
        return RunContext(
            observer=self.observer,
            progress=progress,
            testnet=self.testnet,
            layout=self.layout,
            extra={"topology": self.topology, **self.extra},
        )

    def wait_for(
        self, check: Check, deadline_s: float, what: str = "", progress: Progress | None = None
    ) -> Verdict:
        """Poll `check` until it holds; on timeout raise WaitTimeout with the last verdict
        (what was seen) and its likely cause. The helper for ad-hoc tests."""
        ctx = self.context(progress or Progress(quiet=True))
        label = what or getattr(check, "__name__", "condition")
        v, t, ok = poll_check(ctx, label, check, deadline_s)
        if not ok:
            raise WaitTimeout(label, deadline_s, v.detail, v.cause or "see last seen", 0, t)
        return v

    def down(self, progress: Progress | None = None) -> str:
        from harness.run import start as lifecycle

        return lifecycle.describe_removed(self.name, lifecycle.down(self.name))


def start(
    topology: str,
    *,
    name: str | None = None,
    progress: Progress | None = None,
    ready_deadline_s: float = 120.0,
) -> Live:
    """Bring up `topology` under `name` (default: unique) and return the Live handle."""
    from harness.infra import docker as docker_ops
    from harness.model.topology import load_topology
    from harness.run import start as lifecycle

    progress = progress or Progress()
    path = topology_path(topology)
    topo = load_topology(path)
    tn_name = name or unique_name(topo.name)
    overrides = free_subnet_overrides(topo, docker_ops.subnets_in_use())
    if overrides:
        progress.say(
            "default subnets are taken on this machine; using "
            + ", ".join(f"{k}={v}" for k, v in overrides.items())
        )
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t_call = time.monotonic()
    running = lifecycle.up(
        path,
        name=tn_name,
        subnets=overrides,
        progress=progress,
        ready_deadline_s=ready_deadline_s * deadline_scale(),
    )
    # t = 0 is `compose up`: lifecycle reports how long preparing (image, render) took
    t_up = t_call + float(running.timings.get("prepare_s", 0.0))
    try:
        testnet = running.testnet
        nodes, nets = node_infos(testnet)
        observer = Observer(nodes, {n.name: n.api_url for n in testnet.nodes}, nets, t_up=t_up)
        # reachability does not depend on subnets: the topology as written serves reach.py
        live = Live(running, topo, observer, perturb_layout(testnet), t_up, started_at)
        from harness.model import reach

        # which relays each client can reach over IP, from the model (explains failures)
        observer.marks["reach_relays"] = {n.name: reach.reservable(topo, n) for n in topo.nodes}
        live.extra["up_seconds"] = round(float(running.timings.get("up_to_ready_s", 0.0)), 2)
    except BaseException:
        lifecycle.down(tn_name)
        raise
    return live


def _graph_writer(live: Live) -> Any:
    def write(run_dir: Path) -> list[str]:
        from harness.cli.graph import layout
        from harness.client import NodeStatus, NodeTarget, TestnetStatus
        from harness.run import graph

        tn = live.testnet
        snap = TestnetStatus(
            tn.name,
            [
                NodeStatus(
                    NodeTarget(n.name, n.role, n.api_url, tuple(n.addresses)),
                    live.observer.status.get(n.name),
                    live.observer.errors.get(n.name),
                )
                for n in tn.nodes
            ],
        )
        nets, routers = layout(tn)
        g = graph.build_graph(snap, nets, routers)
        graph.write(g, run_dir / "graph.svg")
        graph.write(g, run_dir / "graph.dot")
        edges = [{"a": e.a, "b": e.b, "kind": e.kind, "via": e.via} for e in g.edges]
        report.write_json(
            run_dir / "graph.json",
            {"testnet": tn.name, "down": sorted(g.down), "edges": edges},
        )
        return ["graph.svg", "graph.dot", "graph.json"]

    return write


def _read_log(live: Live) -> Any:
    def read(name: str) -> str:
        from harness.infra import docker as docker_ops

        c = docker_ops.node_container(live.name, name)
        return str(c.logs(timestamps=True).decode(errors="replace"))

    return read


def finish(
    scenario: Scenario,
    live: Live | None,
    outcomes: list[CheckOutcome],
    *,
    results_root: str | Path,
    progress: Progress,
    error: str | None = None,
    kept: bool = False,
    t_start: float | None = None,
) -> tuple[dict[str, Any], Path]:
    """Write results/<run-id>/ for whatever happened (complete, failed or interrupted)."""
    run_dir = report.new_run_dir(results_root, scenario.name)
    artifacts: dict[str, Any] = {}
    if live is not None:
        try:
            live.observe()  # the final status of every node
        except Exception as exc:
            artifacts["final_poll_error"] = str(exc)
        names = [n.name for n in live.testnet.nodes] + [r.name for r in live.testnet.routers]
        artifacts.update(
            report.save_artifacts(
                run_dir,
                statuses={n.name: live.observer.status.get(n.name) for n in live.testnet.nodes},
                status_errors=live.observer.errors,
                events=live.observer.events,
                logs=names,
                read_log=_read_log(live),
                graph=_graph_writer(live),
            )
        )
    doc = report.build_report(
        scenario.name,
        outcomes,
        description=scenario.description,
        run_id=run_dir.name,
        testnet=live.name if live else None,
        topology=scenario.topology,
        started_at=live.started_at if live else None,
        duration_s=round(time.monotonic() - t_start, 1) if t_start else None,
        up_seconds=live.extra.get("up_seconds") if live else None,
        marks=_jsonable(live.observer.marks) if live else None,
        kept=kept or None,
        error=error,
        artifacts=artifacts or None,
    )
    report.write_results(run_dir, doc)
    progress.say(f"results: {run_dir} (report.json, junit.xml, logs/, status/, events/, graph.svg)")
    return doc, run_dir


def _jsonable(marks: dict[str, Any]) -> dict[str, Any]:
    import json

    return dict(json.loads(json.dumps(marks, default=str)))


def execute(
    scenario: Scenario,
    live: Live,
    *,
    progress: Progress,
    results_root: str | Path = report.RESULTS_DIR,
    kept: bool = False,
    t_start: float | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run the steps on a live testnet and write the results (also when interrupted)."""
    ctx = live.context(progress)
    error = None
    try:
        outcomes = run_steps(scenario, ctx)
    except KeyboardInterrupt as exc:
        done = list(ctx.extra.get("outcomes") or [])
        why = f"interrupted ({exc})" if str(exc) else "interrupted (Ctrl-C)"
        finish(
            scenario,
            live,
            pending_outcomes(scenario, done, "interrupted"),
            results_root=results_root,
            progress=progress,
            error=why,
            kept=kept,
            t_start=t_start,
        )
        raise
    return finish(
        scenario,
        live,
        pending_outcomes(scenario, outcomes, error or "not reached"),
        results_root=results_root,
        progress=progress,
        kept=kept,
        t_start=t_start,
    )


def run(
    scenario: Scenario,
    *,
    name: str | None = None,
    keep: bool = False,
    results_root: str | Path = report.RESULTS_DIR,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], Path]:
    """up -> steps -> results -> down (down in `finally`, also on Ctrl-C, unless keep)."""
    progress = progress or Progress()
    t_start = time.monotonic()
    with _sigterm_as_ctrl_c():
        return _run(scenario, name, keep, results_root, progress, t_start)


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (CI timeout, `kill`) tears the testnet down like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    scenario: Scenario,
    name: str | None,
    keep: bool,
    results_root: str | Path,
    progress: Progress,
    t_start: float,
) -> tuple[dict[str, Any], Path]:
    live: Live | None = None
    try:
        try:
            live = start(
                scenario.topology, name=name or unique_name(scenario.name), progress=progress
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # up failed: still write a report saying why
            outcomes = pending_outcomes(scenario, [], f"the testnet did not come up: {exc}")
            return finish(
                scenario,
                None,
                outcomes,
                results_root=results_root,
                progress=progress,
                error=f"up failed: {exc}",
                t_start=t_start,
            )
        return execute(
            scenario, live, progress=progress, results_root=results_root, kept=keep, t_start=t_start
        )
    finally:
        if live is not None:
            if keep:
                progress.say(
                    f"testnet {live.name} kept for inspection: `sentrynet status -t {live.name}`, "
                    f"`sentrynet down {live.name}` when done"
                )
            else:
                # tear-down must finish: a second Ctrl-C would leave half a testnet behind
                main = threading.current_thread() is threading.main_thread()
                prev = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
                try:
                    progress.say(live.down())
                finally:
                    if main:
                        signal.signal(signal.SIGINT, prev)
