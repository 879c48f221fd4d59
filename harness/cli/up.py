"""`sentrynet up TOPOLOGY`: render, build the image if needed, start, wait until ready, audit.

On failure, Ctrl-C or SIGTERM everything is removed again (unless --keep-on-failure).
"""

from __future__ import annotations

import argparse
import json

from harness.cli._options import (
    add_engine_option,
    add_host_option,
    add_subnet_option,
    parse_hosts,
)
from harness.model.testnet import parse_subnet_overrides
from harness.progress import Progress
from harness.run import start

NAME = "up"
HELP = "start a testnet from a topology (render, image, compose up, wait ready, safety checks)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topology", help="topology YAML (e.g. scenarios/sentry.yaml) or a rendered directory"
    )
    parser.add_argument(
        "--name", help="testnet name (Compose project, labels); default: the topology's name"
    )
    add_subnet_option(parser)
    add_engine_option(parser)
    add_host_option(parser)
    parser.add_argument(
        "--out", help="render directory (default: .cache/testnets/NAME in the checkout)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=start.READY_DEADLINE_S,
        metavar="S",
        help="seconds to wait for every node's /status (default: %(default)g)",
    )
    parser.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="leave a testnet that failed to start running, to inspect it",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the running testnet as JSON on success"
    )


def run(args: argparse.Namespace) -> int:
    running = start.up(
        args.topology,
        name=args.name,
        subnets=parse_subnet_overrides(args.subnet),
        out=args.out,
        progress=Progress(),
        ready_deadline_s=args.ready_timeout,
        keep_on_failure=args.keep_on_failure,
        engine=args.engine,
        hosts=parse_hosts(args.host),
    )
    tn = running.testnet
    if args.json:
        print(
            json.dumps(
                {
                    "name": tn.name,
                    "run_dir": str(running.run_dir),
                    "timings": running.timings,
                    "nodes": {n.name: n.api_url for n in tn.nodes},
                },
                indent=2,
            )
        )
        return 0
    print(f"testnet {tn.name} up ({running.run_dir})")
    for n in tn.nodes:
        nets = " ".join(f"{k}={v}" for k, v in n.addresses.items())
        print(f"  {n.name:<10} {n.role:<9} {nets:<36} api {n.api_url}")
    for r in tn.routers:
        print(f"  {r.name:<10} router    {r.nat} NAT {r.private_ip} -> {r.public_ip}")
    print(f"next: sentrynet status -t {tn.name}; sentrynet down {tn.name}")
    return 0
