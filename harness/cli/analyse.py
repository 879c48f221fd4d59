"""`sentrynet analyse TOPOLOGY`: from the model alone, which node reaches which relay over IP,
and whether a direct dial, a relayed circuit or a hole punch between two nodes is possible,
with the reason (harness/model/reach.py). Nothing is started."""

from __future__ import annotations

import argparse
import json

from harness.errors import SentrynetError
from harness.model.reach import analyse, format_report
from harness.model.topology import load_topology

NAME = "analyse"
ALIASES = ("check",)  # its name before "check" came to mean a scenario check only
HELP = "show, from the topology alone, who reaches which relay and which circuits/hole punches work"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topology", help="topology YAML, e.g. scenarios/seed-exact.yaml")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--pair", nargs=2, metavar=("A", "B"), help="only the verdict for nodes A and B"
    )


def run(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    only = None
    if args.pair:
        names = [n.name for n in topo.nodes]
        for n in args.pair:
            if n not in names:
                raise SentrynetError(
                    f"--pair: {n!r} is not a node of {args.topology}; known: {', '.join(names)}"
                )
        only = (args.pair[0], args.pair[1])
    report = analyse(topo, only)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, topo))
    return 0
