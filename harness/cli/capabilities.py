"""`sentrynet capabilities`: which link conditions and NAT behaviours this machine can apply.

Runs each mechanism once in a throwaway container of the node image (harness/run/
capabilities.py) and prints, per condition, what works here: latency by netem or by the
NFQUEUE delayer, loss, the NAT presets' mapping and filtering, mapping timeouts. Exit 1
when a condition the topology format offers cannot be applied at all on this machine.
(Not `check`: that name is `analyse`'s old one, kept as its alias.)
"""

from __future__ import annotations

import argparse

from harness.infra import images
from harness.progress import Progress
from harness.run import capabilities

NAME = "capabilities"
HELP = "what this machine's kernel can apply: latency, loss, NAT presets, mapping timeouts"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    image = images.ensure_node_image(Progress())
    conds = capabilities.probe(image)
    print(capabilities.to_json(conds) if args.json else capabilities.render(conds))
    gaps = capabilities.missing(conds)
    if gaps and not args.json:
        print(f"cannot be applied on this machine: {', '.join(gaps)}")
    return 1 if gaps else 0
