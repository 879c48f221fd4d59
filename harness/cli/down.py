"""`sentrynet down [NAME]`: remove every container, network and volume labelled with a testnet.

Works from labels alone (no rendered directory needed), after a failed or interrupted start,
and any number of times: a second `down` reports that nothing was left.
"""

from __future__ import annotations

import argparse

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.run import cleanup

NAME = "down"
HELP = "remove a testnet (everything labelled sentrynet.testnet=NAME); idempotent"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", nargs="?", help="testnet name (default: the only one on this machine)"
    )
    parser.add_argument(
        "--all", action="store_true", help="remove every sentrynet testnet on this machine"
    )


def run(args: argparse.Namespace) -> int:
    if args.all and args.name:
        raise SentrynetError("give a testnet NAME or --all, not both")
    if args.all:
        names = docker_ops.testnet_names()
    elif args.name:
        names = [args.name]
    else:
        found = docker_ops.testnet_names()
        if len(found) > 1:
            raise SentrynetError(
                f"several testnets are up ({', '.join(found)}); name one, or use --all"
            )
        names = found
    if not names:
        print("nothing to remove: no sentrynet testnet on this machine")
        return 0
    failed = False
    for name in names:
        removed = cleanup.down(name)
        print(cleanup.describe_removed(name, removed))
        failed = failed or bool(removed.errors)
    return 1 if failed else 0
