"""`sentrynet scenario NAME`: up a testnet, run the scenario's checks with live progress,
print the summary table, write results/<run-id>/ (and results/latest), tear down.

Exit code: 0 when every check passed, 1 when any failed (or the testnet did not come up),
130 on Ctrl-C (the testnet is still torn down, and a report of what ran is written).
"""

from __future__ import annotations

import argparse
import shutil
import sys

from harness import scenarios
from harness.progress import Progress
from harness.run import report, runner

NAME = "scenario"
HELP = "run a scenario (" + ", ".join(scenarios.SCENARIOS) + "): checks, report, teardown"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(scenarios.SCENARIOS), help="scenario to run")
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


def describe(name: str) -> str:
    from harness.run.steps import ActionStep, CheckStep, WaitStep

    sc = scenarios.get(name)
    lines = [f"scenario {sc.name} (topology scenarios/{sc.topology}.yaml): {sc.description}"]
    for step in sc.steps:
        if isinstance(step, CheckStep):
            exp = f", expect {step.expect}" if step.expect != "holds" else ""
            lines.append(f"  check  {step.name} (deadline {step.deadline_s:g}s{exp})")
        elif isinstance(step, WaitStep):
            lines.append(f"  wait   {step.what} (deadline {step.deadline_s:g}s)")
        elif isinstance(step, ActionStep):
            lines.append(f"  action {step.what}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(describe(args.name))
        return 0
    sc = scenarios.get(args.name)
    progress = Progress()
    progress.say(describe(args.name))
    doc, run_dir = runner.run(
        sc, name=args.testnet_name, keep=args.keep, results_root=args.results, progress=progress
    )
    width = shutil.get_terminal_size((140, 20)).columns
    sys.stderr.flush()
    print()
    print(report.summary_table(doc, width=max(100, width)))
    print(f"results: {run_dir}")
    return 0 if doc["passed"] else 1
