"""Entry point: `python -m node --config FILE` and `sentrynet-node --config FILE`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentrynet-node", description=__doc__)
    parser.add_argument("--config", required=True, help="node TOML config (docs/contracts.md)")
    args = parser.parse_args(argv)
    from node.app import run

    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
