"""`sentrynet logs NODE`: a node's (or router's) container log, one event per line."""

from __future__ import annotations

import argparse
import sys

from harness.infra import docker as docker_ops
from harness.run.testnet import resolve_name

NAME = "logs"
HELP = "print a node's or router's log (container output; -f to follow)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", help="node or router name from the topology (e.g. node0, router-a)")
    parser.add_argument(
        "-t", "--testnet", help="testnet name (default: the only one running on this machine)"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.add_argument("-n", "--tail", type=int, help="only the last N lines")


def run(args: argparse.Namespace) -> int:
    container = docker_ops.node_container(resolve_name(args.testnet), args.node)
    tail = args.tail if args.tail is not None else "all"
    if args.follow:
        for chunk in container.logs(stream=True, follow=True, tail=tail):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        return 0
    sys.stdout.write(container.logs(tail=tail).decode(errors="replace"))
    return 0
