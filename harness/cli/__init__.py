"""The `sentrynet` command line.

Each subcommand is a module in harness/cli/ exposing NAME, HELP, register(parser) and
run(args) -> exit code (and optionally ALIASES, other names it answers to). The CLI finds
them by listing this package, so adding a command never means editing this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from harness.errors import SentrynetError
from harness.run import cleanup


def command_modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        found.append(importlib.import_module(f"{__name__}.{info.name}"))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentrynet",
        description="Docker sentry testnet harness for libp2p NAT traversal "
        "(circuit relay v2 reservations, relayed circuits, DCUtR, cross-network sync).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        aliases = list(getattr(module, "ALIASES", ()))
        cmd = sub.add_parser(
            module.NAME, aliases=aliases, help=module.HELP, description=module.HELP
        )
        module.register(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # SIGTERM (a CI job's timeout, `kill`) unwinds like Ctrl-C in every command, so an
        # image build removes its half-made rootfs and a testnet is torn down
        with cleanup.sigterm_as_interrupt():
            return int(args._run(args))
    except SentrynetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
