"""`sentrynet graph --out FILE.svg|png|dot`: the live connection graph of a running testnet."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.model.testnet import Testnet
from harness.run import graph
from harness.run import start as lifecycle

NAME = "graph"
HELP = "draw the live connection graph (networks as clusters; direct solid, relayed dashed)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output file: .svg (no dependency), .png (Graphviz), .dot"
    )
    parser.add_argument(
        "-t", "--testnet", help="testnet name (default: the only one running on this machine)"
    )


def layout(testnet: Testnet) -> tuple[list[graph.NetBox], list[graph.RouterBox]]:
    nets = [graph.NetBox(n.name, n.kind == "public", n.subnet) for n in testnet.networks]
    routers = [graph.RouterBox(r.name, r.network, r.public_network, r.nat) for r in testnet.routers]
    return nets, routers


def run(args: argparse.Namespace) -> int:
    testnet, _ = lifecycle.find_testnet(args.testnet)
    snap = lifecycle.snapshot(testnet)
    nets, routers = layout(testnet)
    g = graph.build_graph(snap, nets, routers)
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
