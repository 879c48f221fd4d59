"""`sentrynet down [NAME]`: remove every container, network and volume labelled with a testnet.

Works from labels alone (no rendered directory needed), after a failed or interrupted start,
and any number of times: a second `down` reports that nothing was left.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
        "--all",
        action="store_true",
        help="remove every testnet this checkout started (rendered under its .cache/testnets/)",
    )
    parser.add_argument(
        "--any-checkout",
        action="store_true",
        help="with --all: every sentrynet testnet on this machine, whoever started it",
    )


def run(args: argparse.Namespace) -> int:
    if args.all and args.name:
        raise SentrynetError("give a testnet NAME or --all, not both")
    if args.any_checkout and not args.all:
        raise SentrynetError("--any-checkout goes with --all")
    if args.all and args.any_checkout:
        names = docker_ops.testnet_names()
    elif args.all:
        names, others = _ours(docker_ops.testnet_dirs())
        if others:
            print(
                f"left alone (not started from this checkout): {', '.join(others)}; "
                "`sentrynet down NAME` or `down --all --any-checkout` removes them"
            )
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


def _ours(dirs: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """(testnets rendered under this checkout's RUNS_DIR, all the others). A testnet of
    another checkout, or of a pytest run rendering into a temporary directory, belongs to
    whoever started it: `down --all` in one checkout must not tear down another's."""
    from harness.run.setup import RUNS_DIR

    root = RUNS_DIR.resolve()
    ours: list[str] = []
    others: list[str] = []
    for name, wds in sorted(dirs.items()):
        mine = bool(wds) and all(Path(wd).resolve().is_relative_to(root) for wd in wds)
        (ours if mine else others).append(name)
    return ours, others
