"""`sentrynet scenario NAME|FILE`: up a testnet, run the scenario's steps with live progress,
print the summary table, write results/<run-id>/ (and results/latest), tear down.

    sentrynet scenario sentry                       a shipped scenario (scenarios/library/)
    sentrynet scenario path/to/my-bug.yaml          any scenario file
    sentrynet scenario relay-limits --impl rust     the same file, its topology's unpinned
                                                    nodes on the rust-libp2p reference node
    sentrynet scenario list                         every shipped scenario, one line each
    sentrynet scenario check FILE|NAME [...]        validate without Docker (selectors too),
                                                    on each implementation the file declares
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
from harness.cli._options import add_engine_option, add_host_option, parse_hosts
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
    add_engine_option(parser)
    add_host_option(parser)
    parser.add_argument(
        "--impl",
        default=None,
        metavar="IMPL",
        help="run the topology's nodes that pin no `impl:`/`image:` on IMPL: "
        + ", ".join(scenarios.IMPL_VARIANTS)
        + " (IMPL:clients only the relay clients, IMPL:relays only the relays; default "
        "python, the file as written); with `check`: only this one instead of the file's "
        "`impls:`",
    )


def describe(sc: Scenario) -> str:
    where = sc.topology if sc.topology.endswith(".yaml") else f"scenarios/{sc.topology}.yaml"
    lines = [f"scenario {sc.name} (topology {where}): {sc.description}"]
    if sc.impl != scenarios.DEFAULT_IMPL:
        kept = [n for n in sc.node_impls if n not in sc.switched]
        lines.append(
            f"  impl {sc.impl}: {', '.join(sc.switched) or 'no node'} switched"
            + (
                "; kept (pinned or out of scope): "
                + ", ".join(f"{n} ({sc.node_impls[n]})" for n in kept)
                if kept
                else ""
            )
        )
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
    """One line per shipped scenario: name, the implementations `make test` runs it with
    (its `impls:`), description."""
    rows = scenarios.listing()
    width = max((len(n) for n, *_ in rows), default=0)
    shown = ["[" + ", ".join(i) + "]" if i else "[?]" for *_, i in rows]
    iwidth = max((len(x) for x in shown), default=0)
    for (name, desc, _path, _impls), impls in zip(rows, shown, strict=True):
        print(f"{name:<{width}}  {impls:<{iwidth}}  {desc}")
    return 0 if all(not d.startswith("INVALID:") for _, d, *_ in rows) else 1


def check_files(targets: list[str], impl: str | None = None) -> int:
    """Validate each file on `impl`, or on every implementation its `impls:` declares."""
    if not targets:
        raise SentrynetError("scenario check: name at least one scenario file (or name)")
    bad = 0
    for target in targets:
        try:
            first = scenarios.get(target, impl or scenarios.DEFAULT_IMPL)
            variants = [first]
            if impl is None:
                for i, other in enumerate(first.impls):
                    if other != first.impl:
                        variants.append(scenarios.get(target, other, f"impls[{i}]"))
        except SentrynetError as exc:
            bad += 1
            print(f"INVALID {exc}")
            continue
        rows = len(first.check_names)
        on = ", ".join(v.impl for v in variants)
        print(
            f"ok      {first.source}: scenario {first.name}, topology {first.topology}, "
            f"{rows} checks, on {on}"
        )
    return 1 if bad else 0


def run(args: argparse.Namespace) -> int:
    if args.target == "list":
        return list_all()
    if args.target == "check":
        return check_files(args.files, args.impl)
    if args.files:
        raise SentrynetError(
            f"unexpected {' '.join(args.files)}: run one scenario at a time "
            "(`scenario check` takes several)"
        )
    sc = scenarios.get(args.target, args.impl or scenarios.DEFAULT_IMPL)
    if args.list:
        print(describe(sc))
        return 0
    progress = Progress()
    progress.say(describe(sc))
    doc, run_dir = runner.run(
        sc,
        name=args.testnet_name,
        keep=args.keep,
        results_root=args.results,
        progress=progress,
        engine=args.engine,
        hosts=parse_hosts(args.host),
    )
    width = shutil.get_terminal_size((140, 20)).columns
    sys.stderr.flush()
    print()
    print(report.summary_table(doc, width=max(100, width)))
    print(f"results: {run_dir}")
    return 0 if doc["passed"] else 1
