"""`sentrynet scenario NAME|FILE`: up a testnet, run the scenario's steps with live progress,
print the summary table, write results/<run-id>/ (and results/latest), tear down.

    sentrynet scenario sentry                       a shipped scenario (scenarios/library/)
    sentrynet scenario path/to/my-bug.yaml          any scenario file
    sentrynet scenario list                         every shipped scenario, one line each
    sentrynet scenario check FILE|NAME [...]        validate without Docker (selectors too)
    sentrynet scenario sentry --list                the steps, resolved, starting nothing

Exit code: 0 when every check passed, 1 when any failed (or the testnet did not come up, or a
file is invalid), 130 on Ctrl-C (the testnet is still torn down, and a report of what ran is
written).
"""

from __future__ import annotations

import argparse
import shutil
import sys

from harness import scenarios
from harness.errors import SentrynetError
from harness.progress import Progress
from harness.run import report, runner
from harness.run.steps import ActionStep, BackgroundStep, CheckStep, Scenario, WaitStep

NAME = "scenario"
HELP = (
    "run a scenario (a name: " + ", ".join(scenarios.SCENARIOS) + "; or a scenario file), "
    "`scenario list`, `scenario check FILE`: checks, report, teardown"
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="NAME|FILE|list|check",
        help="a scenario name or file to run; `list` to list them; `check FILE...` to validate",
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="with `check`: scenario files or names"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the testnet up afterwards, to inspect it"
    )
    parser.add_argument(
        "--name",
        dest="testnet_name",
        help="testnet name (default: <scenario>-<4 hex>, unique per run)",
    )
    parser.add_argument(
        "--results",
        default=report.RESULTS_DIR,
        metavar="DIR",
        help="where results/<run-id>/ and results/latest go (default: %(default)s)",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the scenario's steps and exit, starting nothing"
    )


def describe(sc: Scenario) -> str:
    where = sc.topology if sc.topology.endswith(".yaml") else f"scenarios/{sc.topology}.yaml"
    lines = [f"scenario {sc.name} (topology {where}): {sc.description}"]
    for step in sc.steps:
        if isinstance(step, CheckStep):
            exp = f", expect {step.expect}" if step.expect != "holds" else ""
            lines.append(f"  check  {step.name} (deadline {step.deadline_s:g}s{exp})")
        elif isinstance(step, WaitStep):
            lines.append(f"  wait   {step.what} (deadline {step.deadline_s:g}s)")
        elif isinstance(step, ActionStep):
            lines.append(f"  action {step.what}")
        elif isinstance(step, BackgroundStep):
            inner = "; ".join(a.what for a in step.steps)
            lines.append(f"  background {step.what} every {step.every_s:g}s: {inner}")
    return "\n".join(lines)


def list_all() -> int:
    rows = scenarios.listing()
    width = max((len(n) for n, _, _ in rows), default=0)
    for name, desc, _path in rows:
        print(f"{name:<{width}}  {desc}")
    return 0 if all(not d.startswith("INVALID:") for _, d, _ in rows) else 1


def check_files(targets: list[str]) -> int:
    if not targets:
        raise SentrynetError("scenario check: name at least one scenario file (or name)")
    bad = 0
    for target in targets:
        try:
            sc = scenarios.get(target)
        except SentrynetError as exc:
            bad += 1
            print(f"INVALID {exc}")
            continue
        rows = len(sc.check_names)
        print(f"ok      {sc.source}: scenario {sc.name}, topology {sc.topology}, {rows} checks")
    return 1 if bad else 0


def run(args: argparse.Namespace) -> int:
    if args.target == "list":
        return list_all()
    if args.target == "check":
        return check_files(args.files)
    if args.files:
        raise SentrynetError(
            f"unexpected {' '.join(args.files)}: run one scenario at a time "
            "(`scenario check` takes several)"
        )
    sc = scenarios.get(args.target)
    if args.list:
        print(describe(sc))
        return 0
    progress = Progress()
    progress.say(describe(sc))
    doc, run_dir = runner.run(
        sc, name=args.testnet_name, keep=args.keep, results_root=args.results, progress=progress
    )
    width = shutil.get_terminal_size((140, 20)).columns
    sys.stderr.flush()
    print()
    print(report.summary_table(doc, width=max(100, width)))
    print(f"results: {run_dir}")
    return 0 if doc["passed"] else 1
