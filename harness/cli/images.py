"""`sentrynet images build|tag|ship`: the node image, built offline and tagged by content hash,
the rust node image (peers/rust) where cargo is available, and both shipped to another
Docker engine (a host of a multi-host swarm) without a registry."""

from __future__ import annotations

import argparse

from harness.infra import images, rust_image
from harness.progress import Progress

NAME = "images"
HELP = "build the node images (no-op when up to date) or print a tag"
RUST_CHOICES = ("auto", "yes", "no")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", metavar="ACTION")
    sub.required = True
    build = sub.add_parser(
        "build",
        help="build base image, wheelhouse, node image and rust node image as needed; print "
        "the tags",
        description="Base: python:3.11-slim-bookworm when present or pullable, else a "
        "debootstrap base (needs root). Wheels are built on the host and installed offline. "
        "The rust node image (for `impl: rust` nodes) is built on the same base from a binary "
        "that `make rust-node` compiles on the host with cargo.",
    )
    build.add_argument(
        "--base",
        choices=images.BASE_MODES,
        default="auto",
        help="base image choice (default: auto)",
    )
    build.add_argument(
        "--rust",
        choices=RUST_CHOICES,
        default="auto",
        help="the rust node image: auto builds it where cargo is available and otherwise says "
        "how to get cargo and skips it; yes fails without cargo; no skips it (default: auto)",
    )
    build.add_argument("--no-prune", action="store_true", help="keep old images")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the tags")
    tag = sub.add_parser("tag", help="print the tag the current tree builds to (never builds)")
    tag.add_argument("--base", choices=images.BASE_MODES, default="auto")
    tag.add_argument("--rust", action="store_true", help="the rust node image's tag instead")
    ship = sub.add_parser(
        "ship",
        help="copy the images of the current tree to another Docker engine (docker save | load "
        "over the APIs; nothing is sent when it has them already)",
        description="For the hosts of a multi-host swarm (docs/multi-host.md): no registry is "
        "needed. The node image is shipped, and the rust node image when it is built here.",
    )
    ship.add_argument(
        "--to",
        required=True,
        action="append",
        metavar="URL",
        help="the other engine's API: unix:///path, tcp://host:2376 or ssh://user@host; repeatable",
    )


def run(args: argparse.Namespace) -> int:
    if args.images_command == "ship":
        return run_ship(args.to)
    if args.images_command == "tag":
        tag_of = rust_image.rust_image_tag if args.rust else images.node_image_tag
        print(tag_of(mode=args.base))
        return 0
    progress = Progress(quiet=args.quiet)
    prune = not args.no_prune
    print(images.ensure_node_image(progress, mode=args.base, prune=prune))
    if args.rust == "no":
        return 0
    try:
        print(rust_image.ensure_rust_image(progress, mode=args.base, prune=prune))
    except rust_image.RustToolchainMissing as exc:
        if args.rust == "yes":
            raise
        progress.say(f"rust node image skipped: {exc}")
    return 0


def run_ship(urls: list[str]) -> int:
    """Ship the current tree's images (built here) to each engine in `urls`."""
    from harness.infra import docker as docker_ops
    from harness.infra import ship

    progress = Progress()
    clients = {url: docker_ops.engine_answering(url, "--to ") for url in urls}  # all, first
    refs = [images.node_image_tag()]
    rust_tag = rust_image.rust_image_tag()
    if docker_ops.client().images.list(name=rust_tag):
        refs.append(rust_tag)
    for url, client in clients.items():
        for ref in refs:
            print(ship.ship(ref, client, progress, engine=url).describe(url))
    return 0
