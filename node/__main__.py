"""Entry point: `python -m node --config FILE` and `sentrynet-node --config FILE`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentrynet-node", description=__doc__)
    parser.add_argument("--config", required=True, help="node TOML config (docs/contracts.md)")
    args = parser.parse_args(argv)
    # Check the config before py-libp2p is imported (node.app imports it; that alone takes
    # tens of seconds on a loaded machine): a bad config must exit 2 at once.
    # node.config imports multiaddr but not libp2p.
    from node.config import ConfigError, load_config

    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from node.app import run

    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
