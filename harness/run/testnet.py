"""RunningTestnet: THE handle of a testnet that is up, used by the CLI, the scenario runner,
the pytest plugin, the bench and the Docker tests alike.

It holds the model (`testnet`, harness/model/) and what the run added to it: the rendered
directory, when `compose up` began (t = 0 of every check's seconds) and how long each part of
starting took. Through it a caller reads a node (`client(name)`, `snapshot()`, `observe()`),
reaches a container (`container(name)`) and removes the testnet (`down()`).
`RunningTestnet.find(name)` gives the handle of a testnet another process started.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.models.containers import Container

from harness.checks import Check, Observation, Verdict
from harness.client import NodeClient, TestnetStatus
from harness.errors import SentrynetError
from harness.infra import docker
from harness.infra.load import MachineLoad
from harness.model import Testnet, Topology
from harness.model.testnet import TESTNET_FILE
from harness.progress import Progress
from harness.run import cleanup
from harness.run.observe import Observer, OutsideReader
from harness.run.setup import RUNS_DIR
from harness.run.steps import RunContext, poll_check
from harness.wait import WaitTimeout


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RunningTestnet:
    """A testnet that is up: every node answered /status and the audit passed."""

    testnet: Testnet
    run_dir: Path
    t_up: float = field(default_factory=time.monotonic)  # time.monotonic() at compose up
    started_at: str = field(default_factory=_now_iso)  # wall clock, for reports
    timings: dict[str, float] = field(default_factory=dict)
    topology: Topology | None = None  # as written (scenario runs: reach.py reads it)
    load_at_ready: MachineLoad | None = None  # the machine's load when every node answered
    _observer: Observer | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.testnet.name

    # ---- reading nodes -----------------------------------------------------------------
    def client(self, node: str, timeout_s: float = 2.0) -> NodeClient:
        """The typed HTTP client of one node's API (over the control network)."""
        return NodeClient.of(self.testnet.node(node), timeout_s)

    def snapshot(
        self, timeout_s: float = 2.0, only: Collection[str] | None = None
    ) -> TestnetStatus:
        """Every node's /status (or `only` these nodes'), read in parallel at (nearly) one
        moment."""
        return TestnetStatus.collect(self.testnet, timeout_s, only)

    @property
    def observer(self) -> Observer:
        """The poller of /status and /events since `up`, kept for the whole run."""
        if self._observer is None:
            tn = self.testnet
            outside = None
            api_less = [n.name for n in tn.nodes if not n.has_api]
            if tn.routers or api_less:
                routers = {r.network: r.name for r in tn.routers}
                outside = OutsideReader(tn.name, routers, api_less)
            self._observer = Observer(
                {n.name: n for n in tn.nodes},
                {n.name: NodeClient.of(n) for n in tn.nodes if n.has_api},
                {n.name: n for n in tn.networks},
                t_up=self.t_up,
                outside=outside,
            )
        return self._observer

    def observe(self) -> Observation:
        return self.observer.observe()

    def adopt(self, testnet: Testnet) -> None:
        """The model after a perturbation that changed it (a router's rebind): the
        observer's checks, later perturbations and testnet.json (what `sentrynet` commands
        load) all see it."""
        self.testnet = testnet
        (self.run_dir / TESTNET_FILE).write_text(testnet.to_json())
        if self._observer is not None:
            self._observer.nodes = {n.name: n for n in testnet.nodes}
            self._observer.nets = {n.name: n for n in testnet.networks}

    def context(self, progress: Progress) -> RunContext:
        """What scenario steps run with (harness/run/steps.py)."""
        extra: dict[str, Any] = {"topology": self.topology}
        return RunContext(
            observer=self.observer,
            progress=progress,
            testnet=self.testnet,
            extra=extra,
            adopt=self.adopt,
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

    # ---- containers ----------------------------------------------------------------------
    def container(self, name: str) -> Container:
        """The container of a node or router, by its topology name."""
        return docker.node_container(self.name, name)

    def down(self) -> str:
        """Remove the testnet (by label); what was removed, in words."""
        return cleanup.describe_removed(self.name, cleanup.down(self.name))

    # ---- finding one another process started ------------------------------------------------
    @classmethod
    def find(cls, name: str | None) -> RunningTestnet:
        """The running testnet `name` (default: the only one), from the directory compose
        recorded when it was started."""
        name = resolve_name(name)
        dirs: list[Path] = []
        for c in docker.containers(name):
            wd = c.labels.get(docker.LABEL_COMPOSE_DIR)
            if wd and Path(wd) not in dirs:
                dirs.append(Path(wd))
        dirs.append(RUNS_DIR / name)
        for d in dirs:
            if (d / TESTNET_FILE).exists():
                testnet = Testnet.load(d)
                if testnet.name == name:
                    return cls(testnet, d)
        raise SentrynetError(
            f"testnet {name!r}: no rendered directory found (looked in "
            f"{', '.join(str(d) for d in dirs)}); is it up? (`sentrynet up TOPOLOGY`)"
        )


def resolve_name(name: str | None) -> str:
    """The testnet a command means: the one named, else the only one running."""
    if name:
        return name
    found = docker.testnet_names()
    if not found:
        raise SentrynetError("no sentrynet testnet is up on this machine (`sentrynet up TOPOLOGY`)")
    if len(found) > 1:
        raise SentrynetError(f"several testnets are up ({', '.join(found)}); pick one with -t NAME")
    return found[0]
