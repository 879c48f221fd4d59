"""The rust node image: the rust-libp2p reference node (peers/rust) on the node image's base.

Why it looks like this: as for the node image, nothing is pulled and nothing is downloaded
inside a container (docs/design.md "No registry: images are built here"). The binary is
compiled on the host with `make rust-node` (cargo and the crate registry from the host, the
target dir cached under .cache/rust-target) and only copied into an image FROM the same base
as the node image, which has the iproute2 and iptables netsetup.sh needs. The tag is a hash
of what goes into it (peers/rust sources, Cargo.toml, Cargo.lock, the Dockerfile, the base
image id), so an unchanged tree runs neither cargo nor docker build. Only testnets with an
`impl: rust` node need this image: without cargo everything else works as before.

Entry points for the rest of the harness:
- `rust_image_tag(root)`: the tag the current tree builds to; cheap, never builds.
- `ensure_rust_image(progress)`: build what is missing and return the tag; raises
  `RustToolchainMissing` (saying how to get cargo) when it must build and cargo is missing.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import SentrynetError
from harness.infra.images import (
    BaseMode,
    build_lock,
    docker_build,
    docker_client,
    ensure_base,
    hash_parts,
    image_id,
    local_base,
    log_path,
    prune_images,
    render_template,
    repo_root,
    run_logged,
    system_packages,
    tree_files,
)
from harness.progress import Progress

RUST_REPO = "sentrynet-rust-node"
RUST_KIND = "rust-node"  # the image's sentrynet.image label
RUST_DIR = "peers/rust"
RUST_INPUTS = ("Cargo.toml", "Cargo.lock")  # besides everything under src/
# Where `make rust-node` leaves the binary: the Makefile's RUST_NODE (a unit test checks).
RUST_BINARY = ".cache/rust-target/debug/sentrynet-rust-node"
RUST_BINARY_IN_IMAGE = "/usr/local/bin/sentrynet-rust-node"
DOCKERFILE_TEMPLATE = "rust-node.Dockerfile.j2"
CONTEXT_BINARY = "sentrynet-rust-node"  # the binary's name in the build context
CARGO_HELP = (
    "install the Rust toolchain with rustup (https://rustup.rs; stable, rustc 1.83 or newer): "
    "only the rust node image, for `impl: rust` nodes, needs it"
)


class RustToolchainMissing(SentrynetError):
    """The rust node image has to be built and there is no cargo to build its binary."""


def find_cargo() -> str | None:
    """cargo on PATH, else rustup's default place (a login PATH often lacks ~/.cargo/bin)."""
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    return str(home) if home.is_file() else None


def cargo_missing(tag: str) -> RustToolchainMissing:
    return RustToolchainMissing(
        f"cargo not found (on PATH or in ~/.cargo/bin), so the rust node image {tag} cannot "
        f"be built; {CARGO_HELP}"
    )


# --------------------------------------------------------------------------- plan and tag


def rust_files(root: Path) -> list[tuple[str, bytes]]:
    """The build inputs of the binary: peers/rust/src/**, Cargo.toml and Cargo.lock, sorted."""
    files = tree_files(root, f"{RUST_DIR}/src")
    for name in RUST_INPUTS:
        path = root / RUST_DIR / name
        if not path.is_file():
            raise SentrynetError(f"{path} missing: the rust node image is built from it")
        files.append((f"{RUST_DIR}/{name}", path.read_bytes()))
    if not any(p.endswith(".rs") for p, _ in files):
        raise SentrynetError(f"{root / RUST_DIR / 'src'}: no Rust sources; run from a checkout")
    return sorted(files)


def render_rust_dockerfile(root: Path, base: str) -> str:
    """The rust node Dockerfile for this base, from templates/rust-node.Dockerfile.j2."""
    return render_template(
        root,
        DOCKERFILE_TEMPLATE,
        base=base,
        system_packages=system_packages(base),
        binary=RUST_BINARY_IN_IMAGE,
        context_binary=CONTEXT_BINARY,
    )


@dataclass(frozen=True)
class RustImagePlan:
    """What the rust node image is made of, and the tag that follows from it."""

    root: Path
    base: str
    base_id: str
    dockerfile: str
    files: list[tuple[str, bytes]]

    @property
    def digest(self) -> str:
        parts = [("base", self.base_id.encode()), ("dockerfile", self.dockerfile.encode())]
        for path, data in sorted(self.files):
            parts += [("path", path.encode()), ("file", data)]
        return hash_parts(parts)

    @property
    def tag(self) -> str:
        return rust_tag(self.digest)


def rust_tag(digest: str) -> str:
    return f"{RUST_REPO}:{digest}"


def plan_rust_image(root: Path, base: str, base_id: str) -> RustImagePlan:
    return RustImagePlan(
        root=root,
        base=base,
        base_id=base_id,
        dockerfile=render_rust_dockerfile(root, base),
        files=rust_files(root),
    )


def rust_image_tag(root: Path | None = None, client: Any = None, mode: BaseMode = "auto") -> str:
    """The tag the current tree builds to. Cheap: inspects local images, never builds."""
    base, base_id = local_base(client or docker_client(), mode, "rust node")
    return plan_rust_image(root or repo_root(), base, base_id).tag


# --------------------------------------------------------------------------- build


def build_rust_binary(root: Path, cargo: str, progress: Progress) -> Path:
    """`make rust-node` on the host: cargo's own incremental build (seconds when warm)."""
    if shutil.which("make") is None:
        raise SentrynetError("make not found: install it (apt-get install make)")
    log = log_path(root, "rust-node-build.log")
    with progress.step(f"make rust-node (cargo {cargo}, log {log})"):
        run_logged(
            ["make", "--no-print-directory", "-C", str(root), "rust-node", f"CARGO={cargo}"],
            log,
            "make rust-node",
            hint="a cold build fetches crates from the registry on the host (libp2p 0.56 "
            "needs rustc 1.83 or newer: `rustup update stable`)",
        )
    binary = root / RUST_BINARY
    if not binary.is_file():
        raise SentrynetError(f"make rust-node succeeded but {binary} is missing")
    return binary


def build_rust_image(client: Any, plan: RustImagePlan, binary: Path, progress: Progress) -> None:
    """Assemble a context (Dockerfile, the binary) and `docker build` it, never pulling."""
    log = log_path(plan.root, f"rust-node-image-{plan.digest}.log")
    ctx_parent = plan.root / ".cache" / "build"
    ctx_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rust-node-", dir=ctx_parent) as ctx_dir:
        ctx = Path(ctx_dir)
        (ctx / "Dockerfile").write_text(plan.dockerfile)
        shutil.copy2(binary, ctx / CONTEXT_BINARY)
        docker_build(client, ctx, plan.tag, plan.digest, plan.base, log, progress)


def ensure_rust_image(
    progress: Progress | None = None,
    root: Path | None = None,
    mode: BaseMode = "auto",
    prune: bool = True,
) -> str:
    """Build the rust node image if the current tree's tag is missing; return the tag.

    cargo is looked for only when something has to be built, so an image built earlier
    serves a machine without a Rust toolchain."""
    progress = progress or Progress()
    root = root or repo_root()
    client = docker_client()
    with build_lock(progress):
        choice = ensure_base(client, root, progress, mode, say=False)
        base_id = image_id(client, choice.ref)
        if base_id is None:
            raise SentrynetError(f"base image {choice.ref} missing after it was made")
        plan = plan_rust_image(root, choice.ref, base_id)
        if image_id(client, plan.tag) is not None:
            progress.say(f"{plan.tag} is up to date")
            return plan.tag
        cargo = find_cargo()
        if cargo is None:
            raise cargo_missing(plan.tag)
        binary = build_rust_binary(root, cargo, progress)
        build_rust_image(client, plan, binary, progress)
        progress.say(f"built {plan.tag}")
        if prune:
            prune_images(client, RUST_REPO, RUST_KIND, plan.tag, progress)
        return plan.tag
