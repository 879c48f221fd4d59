"""`sentrynet status [--json]`: per node role, height, reservations, connections by kind,
circuits and DCUtR outcomes."""

from __future__ import annotations

import argparse

from harness.run.testnet import RunningTestnet

NAME = "status"
HELP = "per-node status of a running testnet (table, or --json for scripts)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t", "--testnet", help="testnet name (default: the only one running on this machine)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--timeout", type=float, default=2.0, metavar="S", help="per-node API timeout"
    )


def run(args: argparse.Namespace) -> int:
    snap = RunningTestnet.find(args.testnet).snapshot(args.timeout)
    print(snap.to_json() if args.json else snap.table())
    return 0 if not any(n.down for n in snap.nodes) else 1
