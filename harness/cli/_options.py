"""Options that several commands share (not a command: the leading underscore)."""

from __future__ import annotations

import argparse


def add_subnet_option(parser: argparse.ArgumentParser) -> None:
    """--subnet NET=CIDR, parsed by harness.model.testnet.parse_subnet_overrides."""
    parser.add_argument(
        "--subnet",
        action="append",
        default=[],
        metavar="NET=CIDR",
        help="move a network (or `control`) to another subnet of the same size; repeatable. "
        "With --name this runs a second copy of a topology side by side",
    )
