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


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """--engine compose|swarm (harness/model/testnet.py ENGINES, docs/multi-host.md)."""
    from harness.model.testnet import DEFAULT_ENGINE, ENGINES

    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help=f"where the data networks live (default {DEFAULT_ENGINE}: local bridges; swarm: "
        "overlay networks of a Docker Swarm, initialised on loopback and left again when this "
        "engine is in none)",
    )


def add_host_option(parser: argparse.ArgumentParser) -> None:
    """--host NAME=URL: the engine of a host a topology `placement:` names."""
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the Docker engine of host NAME (topology `placement: NAME` on a private network), "
        "e.g. h2=ssh://user@h2; repeatable; needs --engine swarm on a manager of a swarm that "
        "host joined (docs/multi-host.md)",
    )


def parse_hosts(items: list[str]) -> dict[str, str]:
    """`--host NAME=URL` items as a dict, or an error naming the bad one."""
    from harness.errors import SentrynetError

    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or "://" not in url:
            raise SentrynetError(
                f"--host {item!r}: expected NAME=URL with the engine's API, e.g. "
                "h2=ssh://user@h2 or h2=tcp://10.1.0.2:2376"
            )
        out[name] = url
    return out
