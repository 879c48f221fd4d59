"""`sentrynet images build|tag`: the node image, built offline and tagged by content hash."""

from __future__ import annotations

import argparse

from harness.infra import images
from harness.progress import Progress

NAME = "images"
HELP = "build the node image (no-op when up to date) or print its tag"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", metavar="ACTION")
    sub.required = True
    build = sub.add_parser(
        "build",
        help="build base image, wheelhouse and node image as needed; print the node image tag",
        description="Base: python:3.11-slim-bookworm when present or pullable, else a "
        "debootstrap base (needs root). Wheels are built on the host and installed offline.",
    )
    build.add_argument(
        "--base",
        choices=images.BASE_MODES,
        default="auto",
        help="base image choice (default: auto)",
    )
    build.add_argument("--no-prune", action="store_true", help="keep old sentrynet-node images")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the tag")
    tag = sub.add_parser("tag", help="print the tag the current tree builds to (never builds)")
    tag.add_argument("--base", choices=images.BASE_MODES, default="auto")


def run(args: argparse.Namespace) -> int:
    if args.images_command == "tag":
        print(images.node_image_tag(mode=args.base))
        return 0
    progress = Progress(quiet=args.quiet)
    tag = images.ensure_node_image(progress, mode=args.base, prune=not args.no_prune)
    print(tag)
    return 0
