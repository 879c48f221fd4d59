"""`sentrynet graph --out FILE.svg|png|dot`: the live connection graph of a running testnet."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.run import graph
from harness.run.testnet import RunningTestnet

NAME = "graph"
HELP = "draw the live connection graph (networks as clusters; direct solid, relayed dashed)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output file: .svg (no dependency), .png (Graphviz), .dot"
    )
    parser.add_argument(
        "-t", "--testnet", help="testnet name (default: the only one running on this machine)"
    )


def run(args: argparse.Namespace) -> int:
    running = RunningTestnet.find(args.testnet)
    snap = running.snapshot()
    g = graph.build_graph(snap, running.testnet)
    out = Path(args.out)
    graph.write(g, out)
    kinds = {
        k: sum(1 for e in g.edges if e.kind == k) for k in ("direct", "relayed", "reservation")
    }
    print(
        f"wrote {out}: {len(snap.nodes)} nodes ({len(g.down)} not answering), "
        + ", ".join(f"{v} {k}" for k, v in kinds.items())
    )
    return 0
