"""Scenario engine: a scenario is a sequence of steps run against one live testnet.

Steps are
- `CheckStep`: a named check (a pure function of an Observation, harness/checks/) polled
  with `harness.wait.wait_until` until it holds or its deadline passes. Its outcome is one
  row of the report: name, passed, seconds since `up`, detail (what was seen; on failure
  also the likely cause).
- `WaitStep`: an unnamed condition the flow needs before going on ("the others committed 5
  blocks without node4"); polled the same way, shown in progress, not a report row. When it
  times out, the checks after it fail with that reason.
- `ActionStep`: a perturbation (stop/wipe/start a node, kill a relay, partition), doing its
  work through harness/run/perturb.py and recording marks (heights, times) for later checks.
- `BackgroundStep`: action steps run in a loop on a thread (every `every_s` seconds) while
  the later steps run; stopped when the scenario's steps end, however they end.

`Scenario` objects come from scenario files (scenarios/library/*.yaml, read by
harness/scenarios/loader.py) and serve the CLI (`sentrynet scenario NAME|FILE`) and pytest
(scenarios/test_scenarios.py through harness/pytest_plugin.py); neither re-implements the
flow.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.checks import Check, Observation, Verdict
from harness.model import Testnet
from harness.progress import Progress
from harness.run.observe import Observer
from harness.wait import WaitTimeout, wait_until

# When a check this one builds on failed, do not spend its whole deadline: the detail of
# a short look is as informative, and CI time is finite.
DEPENDENT_DEADLINE_S = 15.0
# Each poll reads /status and /events of every node; every 2 s is enough because a check's
# time comes from the nodes' own event timestamps, and it keeps load off small machines.
POLL_INTERVAL_S = 2.0


def deadline_scale() -> float:
    """SENTRYNET_DEADLINE_SCALE multiplies every deadline (a loaded 2-CPU CI runner, several
    testnets side by side); it never shortens one below what the scenario says."""
    try:
        return max(1.0, float(os.environ.get("SENTRYNET_DEADLINE_SCALE", "1")))
    except ValueError:
        return 1.0


# ---------------------------------------------------------------------------------------
# steps and outcomes
# ---------------------------------------------------------------------------------------
@dataclass
class CheckOutcome:
    """One row of report.json `checks`."""

    name: str
    passed: bool
    seconds: float | None  # from `up` until the check held (or gave up)
    detail: str
    expect: str = "holds"
    cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "detail": self.detail,
        }
        if self.expect != "holds":
            out["expect"] = self.expect
        if self.cause and not self.passed:
            out["likely_cause"] = self.cause
        return out


@dataclass
class RunContext:
    """What steps may use: the observer, marks, progress, and the testnet model the flow's
    actions (harness/run/perturb.py) act on."""

    observer: Observer
    progress: Progress
    testnet: Testnet | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # who else keeps the model (RunningTestnet.adopt): told when a step changes it
    adopt: Callable[[Testnet], None] | None = None

    @property
    def marks(self) -> dict[str, Any]:
        return self.observer.marks

    def model_changed(self, testnet: Testnet) -> None:
        """A perturbation changed the model (a rebind): later steps and checks use it."""
        self.testnet = testnet
        if self.adopt is not None:
            self.adopt(testnet)

    def observe(self) -> Observation:
        return self.observer.observe()


@dataclass
class CheckStep:
    name: str
    check: Check
    deadline_s: float
    expect: str = "holds"  # "holds", or what a negative result looks like ("impossible")
    requires: tuple[str, ...] = ()
    likely_cause: str = ""
    # evaluate even when an earlier action or wait failed (a check that means something on
    # whatever state the testnet is in, like no_forks)
    always: bool = False


@dataclass
class WaitStep:
    what: str
    check: Check
    deadline_s: float
    likely_cause: str = ""
    requires: tuple[str, ...] = ()


@dataclass
class ActionStep:
    what: str
    run: Callable[[RunContext], str]


@dataclass
class BackgroundStep:
    what: str
    steps: list[ActionStep]
    every_s: float


Step = CheckStep | WaitStep | ActionStep | BackgroundStep


@dataclass
class Scenario:
    name: str
    topology: str  # topology file name under scenarios/ (without .yaml)
    description: str
    steps: list[Step]
    # One paragraph for the report from the check rows (report.json `conclusion`): what a
    # reader came to learn, e.g. the seed's conclusion against what this run showed.
    conclusion: Callable[[list[CheckOutcome]], str] | None = None
    source: str = ""  # the scenario file it was read from
    # The implementation the run puts the topology's unpinned nodes on (`--impl`,
    # harness/scenarios/loader.py): python (the file as written), rust, rust:clients, ...
    impl: str = "python"
    impls: tuple[str, ...] = ("python",)  # the file's `impls:`: what `make test` runs
    engines: tuple[str, ...] = ("compose",)  # the file's `engines:`: each impl on each
    switched: tuple[str, ...] = ()  # the nodes `impl` moved (pinned ones are not)
    node_impls: dict[str, str] = field(default_factory=dict)  # node -> impl, as run
    # `tested_by:` another library scenario whose run `make test` judges these checks in
    tested_by: str | None = None

    @property
    def check_names(self) -> list[str]:
        return [s.name for s in self.steps if isinstance(s, CheckStep)]

    @property
    def run_label(self) -> str:
        """The name results and testnets carry: `relay-limits`, `relay-limits-rust`,
        `relay-limits-rust-clients`."""
        if self.impl == "python":
            return self.name
        return f"{self.name}-{self.impl.replace(':', '-')}"

    @property
    def variant(self) -> str:
        """`relay-limits[rust]` (pytest's parameter, progress lines)."""
        return f"{self.name}[{self.impl}]"


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------
def _short(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Ticker:
    """Live progress while a condition is polled: one line every `every_s` seconds saying
    what was last seen, so a slow check is never silent in a CI log."""

    def __init__(self, progress: Progress, label: str, every_s: float = 15.0) -> None:
        self.progress = progress
        self.label = label
        self.every_s = every_s
        self.next = time.monotonic() + every_s

    def __call__(self, seen: Verdict) -> None:
        if time.monotonic() >= self.next and not seen.ok:
            self.next = time.monotonic() + self.every_s
            self.progress.say(f"  {self.label}: waiting; {_short(str(seen), 300)}")


def poll_check(
    ctx: RunContext, label: str, check: Check, deadline_s: float, likely_cause: str = ""
) -> tuple[Verdict, float, bool]:
    """Poll `check` until it holds, returns a final verdict, or the deadline passes.

    Returns (last verdict, harness seconds since up when it held or gave up, held?)."""

    def probe() -> tuple[bool, Verdict]:
        v = check(ctx.observe())
        return v.ok or bool(v.data.get("final")), v

    try:
        v = wait_until(
            probe,
            what=label,
            deadline_s=deadline_s * deadline_scale(),
            likely_cause=likely_cause or "see the detail",
            interval_s=POLL_INTERVAL_S,
            on_poll=_Ticker(ctx.progress, label),
        )
    except WaitTimeout as exc:
        last = exc.last_seen if isinstance(exc.last_seen, Verdict) else None
        if last is None:
            last = Verdict(False, f"no observation: {exc}", cause=likely_cause)
        return last, ctx.observer.now(), False
    now = ctx.observer.now()
    if not v.ok:
        return v, now, False
    since = v.since if v.since is not None and 0 <= v.since <= now else now
    return v, since, True


def run_steps(
    scenario: Scenario, ctx: RunContext, on_outcome: Callable[[CheckOutcome], None] | None = None
) -> list[CheckOutcome]:
    """Run every step in order; one CheckOutcome per CheckStep, always (a step that could not
    run is a failed row saying why). KeyboardInterrupt propagates after recording the
    outcomes so far in ctx.extra['outcomes'] (the caller still writes a report)."""
    outcomes: list[CheckOutcome] = []
    ctx.extra["outcomes"] = outcomes
    failed: set[str] = set()
    blocked: str | None = None  # why the flow cannot continue (an action or wait failed)
    blocked_cause: str | None = None

    def record(o: CheckOutcome) -> None:
        outcomes.append(o)
        if not o.passed:
            failed.add(o.name)
        if on_outcome is not None:
            on_outcome(o)

    loops: list[_Background] = []
    try:
        for step in scenario.steps:
            blocked, blocked_cause = _run_one(
                step, ctx, loops, failed, blocked, blocked_cause, record
            )
    finally:
        for loop in loops:
            loop.stop()
    return outcomes


class _Background:
    """A BackgroundStep's loop: its actions in order, then sleep until `every_s` after the
    round started; a failing action is reported and the loop goes on."""

    def __init__(self, step: BackgroundStep, ctx: RunContext) -> None:
        self.step = step
        self.ctx = ctx
        self.halt = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._loop, name=f"bg {step.what}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        p = self.ctx.progress
        while not self.halt.is_set():
            began = time.monotonic()
            for action in self.step.steps:
                if self.halt.is_set():
                    return
                try:
                    said = action.run(self.ctx)
                except Exception as exc:  # the loop is a perturbation; it keeps going
                    p.say(f"background {self.step.what}: {action.what} FAILED: {exc}")
                else:
                    p.say(f"background {self.step.what}: {action.what}: {_short(said, 200)}")
            self.rounds += 1
            self.halt.wait(max(0.0, self.step.every_s - (time.monotonic() - began)))

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(timeout=120)
        self.ctx.progress.say(f"background {self.step.what}: stopped after {self.rounds} round(s)")


def _run_one(
    step: Step,
    ctx: RunContext,
    loops: list[_Background],
    failed: set[str],
    blocked: str | None,
    blocked_cause: str | None,
    record: Callable[[CheckOutcome], None],
) -> tuple[str | None, str | None]:
    """Run one step; returns (blocked, blocked_cause) for the steps after it."""
    p = ctx.progress
    unchanged = (blocked, blocked_cause)
    if isinstance(step, BackgroundStep):
        if blocked:
            return unchanged
        p.say(f"background: {step.what} (every {step.every_s:g}s, until the end) ...")
        loops.append(_Background(step, ctx))
        return unchanged
    if isinstance(step, ActionStep):
        if blocked:
            return unchanged
        p.say(f"step: {step.what} ...")
        try:
            said = step.run(ctx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            p.say(f"step: {step.what} FAILED: {exc}")
            return f"step '{step.what}' failed: {exc}", blocked_cause
        p.say(f"step: {step.what} done" + (f": {_short(said, 400)}" if said else ""))
        return unchanged
    if isinstance(step, WaitStep):
        if blocked:
            return unchanged
        deadline = step.deadline_s
        if any(r in failed for r in step.requires):
            deadline = min(deadline, DEPENDENT_DEADLINE_S)
        p.say(f"wait: {step.what} (deadline {deadline * deadline_scale():g}s) ...")
        v, t, ok = poll_check(ctx, step.what, step.check, deadline, step.likely_cause)
        if ok:
            p.say(f"wait: {step.what}: ok at {t:.1f}s: {_short(v.detail)}")
            return unchanged
        p.say(f"wait: {step.what} TIMED OUT: {_short(str(v), 400)}")
        return f"'{step.what}' did not happen: {v.detail}", v.cause
    if blocked and not step.always:
        v = step.check(ctx.observe())
        record(
            CheckOutcome(
                step.name,
                False,
                ctx.observer.now(),
                f"not reached: {blocked}; seen now: {v.detail}",
                step.expect,
                blocked_cause or blocked,
            )
        )
        p.say(f"check {step.name}: FAIL (not reached: {_short(blocked)})")
        return unchanged
    deadline = step.deadline_s
    deps = [r for r in step.requires if r in failed]
    if deps:
        deadline = min(deadline, DEPENDENT_DEADLINE_S)
    p.say(
        f"check {step.name} (deadline {deadline * deadline_scale():g}s"
        + (f", {', '.join(deps)} failed" if deps else "")
        + ") ..."
    )
    v, t, ok = poll_check(ctx, f"check {step.name}", step.check, deadline, step.likely_cause)
    detail = v.detail
    if deps and not ok:
        detail = f"(after failed {', '.join(deps)}) {detail}"
    if blocked and not ok:
        detail = f"(after {blocked}) {detail}"
    record(CheckOutcome(step.name, ok, t, detail, step.expect, None if ok else v.cause))
    p.say(
        f"check {step.name}: {'PASS' if ok else 'FAIL'} at {t:.1f}s: {_short(detail, 400)}"
        + ("" if ok or not v.cause else f" | likely cause: {_short(v.cause, 300)}")
    )
    return unchanged


def pending_outcomes(scenario: Scenario, done: list[CheckOutcome], why: str) -> list[CheckOutcome]:
    """Rows for the checks that never ran (interrupted, or up failed), so the report always
    lists every check of the scenario."""
    seen = {o.name for o in done}
    rest = [
        CheckOutcome(s.name, False, None, f"not run: {why}", s.expect)
        for s in scenario.steps
        if isinstance(s, CheckStep) and s.name not in seen
    ]
    return [*done, *rest]
