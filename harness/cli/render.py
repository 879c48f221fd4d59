"""`sentrynet render TOPOLOGY --out DIR`: write docker-compose.yml, testnet.json and every
node's config, key and setup script (harness/infra/render.py). Deterministic output."""

from __future__ import annotations

import argparse

from harness.cli._options import add_engine_option, add_subnet_option
from harness.infra.render import REPO_ROOT, render
from harness.model.testnet import DEFAULT_ENGINE, build_testnet, parse_subnet_overrides
from harness.model.topology import load_topology

NAME = "render"
HELP = "render a topology into docker-compose.yml + per-node configs (deterministic)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topology", help="topology YAML, e.g. scenarios/sentry.yaml")
    parser.add_argument("--out", required=True, help="output directory (created; re-rendered)")
    parser.add_argument(
        "--name", help="testnet name (Compose project, labels, keys); default: the topology's"
    )
    add_subnet_option(parser)
    add_engine_option(parser)
    parser.add_argument(
        "--image", help="node image tag; default: the tag of the current tree (sentrynet images)"
    )
    parser.add_argument(
        "--rust-image",
        help="rust node image tag, for `impl: rust` nodes; default: the tag of the current tree",
    )


def run(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    testnet = build_testnet(
        topo, args.name, parse_subnet_overrides(args.subnet), args.engine or DEFAULT_ENGINE
    )
    image = args.image
    if not image:
        from harness.infra.images import node_image_tag  # imported late: talks to Docker

        image = node_image_tag(REPO_ROOT)
    rust_image = args.rust_image
    if testnet.rust_nodes and not rust_image:
        from harness.infra.rust_image import rust_image_tag  # imported late: talks to Docker

        rust_image = rust_image_tag(REPO_ROOT)
    files = render(testnet, args.out, image, rust_image=rust_image)
    images = image + (f", rust image {rust_image}" if testnet.rust_nodes else "")
    print(
        f"rendered testnet {testnet.name} ({len(testnet.nodes)} nodes, "
        f"{len(testnet.routers)} routers, image {images}) into {args.out}: {len(files)} files"
    )
    for warning in testnet.warnings:
        print(f"warning: {warning}")
    return 0
