"""The rust node image without Docker: its inputs, content hash / tag, Dockerfile, and how a
machine without cargo is told what to do."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from harness.infra import images, rust_image
from harness.infra.rust_image import RUST_DIR, plan_rust_image

REPO = Path(__file__).resolve().parents[2]
BASE = images.DEBOOTSTRAP_BASE


def fake_repo(tmp_path: Path) -> Path:
    """templates/ and a peers/rust crate with nested sources, a README and a target dir."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    crate = tmp_path / RUST_DIR
    (crate / "src" / "node").mkdir(parents=True)
    (crate / "src" / "main.rs").write_text("fn main() {}\n")
    (crate / "src" / "node" / "relays.rs").write_text("pub fn r() {}\n")
    (crate / "Cargo.toml").write_text('[package]\nname = "x"\n')
    (crate / "Cargo.lock").write_text("version = 4\n")
    (crate / "README.md").write_text("docs\n")
    (crate / "target").mkdir()
    (crate / "target" / "junk").write_text("build output\n")
    return tmp_path


def tag(root: Path, base: str = BASE, base_id: str = "sha256:1") -> str:
    return plan_rust_image(root, base, base_id).tag


def test_inputs_are_sources_and_cargo_files_only(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    assert [p for p, _ in rust_image.rust_files(root)] == [
        "peers/rust/Cargo.lock",
        "peers/rust/Cargo.toml",
        "peers/rust/src/main.rs",
        "peers/rust/src/node/relays.rs",
    ]


def test_the_real_crate_is_hashed() -> None:
    paths = [p for p, _ in rust_image.rust_files(REPO)]
    assert {"peers/rust/Cargo.lock", "peers/rust/Cargo.toml", "peers/rust/src/main.rs"} <= set(
        paths
    )


def test_tag_follows_sources_lock_dockerfile_and_base(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    first = tag(root)
    assert re.fullmatch(r"sentrynet-rust-node:[0-9a-f]{12}", first)
    assert tag(root) == first
    (root / RUST_DIR / "README.md").write_text("other docs\n")
    (root / RUST_DIR / "target" / "junk").write_text("other output\n")
    assert tag(root) == first, "docs and build output do not rebuild the image"

    seen = {first, tag(root, base_id="sha256:2"), tag(root, base=images.PYTHON_BASE)}
    assert len(seen) == 3
    for change in (
        lambda: (root / RUST_DIR / "src" / "node" / "relays.rs").write_text("pub fn s() {}\n"),
        lambda: (root / RUST_DIR / "Cargo.lock").write_text("version = 4\n# bumped\n"),
        lambda: (root / RUST_DIR / "Cargo.toml").write_text('[package]\nname = "y"\n'),
        lambda: (root / "templates" / rust_image.DOCKERFILE_TEMPLATE).write_text("FROM x\n"),
    ):
        change()
        now = tag(root)
        assert now not in seen
        seen.add(now)


def test_missing_lock_is_a_clear_error(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    (root / RUST_DIR / "Cargo.lock").unlink()
    with pytest.raises(images.SentrynetError, match=r"Cargo\.lock missing"):
        rust_image.rust_files(root)


def test_dockerfile_on_the_debootstrap_base_copies_the_binary_offline() -> None:
    text = rust_image.render_rust_dockerfile(REPO, BASE)
    assert f"\nFROM {BASE}\n" in text
    assert "apt-get" not in text and "cargo" not in text
    assert f"COPY sentrynet-rust-node {rust_image.RUST_BINARY_IN_IMAGE}" in text
    assert "sentrynet.image=rust-node" in text
    assert f'CMD ["{rust_image.RUST_BINARY_IN_IMAGE}", "--config", "/config/node.toml"]' in text


def test_dockerfile_on_the_python_base_adds_the_router_tools() -> None:
    text = rust_image.render_rust_dockerfile(REPO, images.PYTHON_BASE)
    assert f"\nFROM {images.PYTHON_BASE}\n" in text
    assert "apt-get install -y --no-install-recommends iproute2 iptables nftables procps" in text


def test_makefile_builds_the_binary_where_the_image_takes_it() -> None:
    make = (REPO / "Makefile").read_text()
    target = re.search(r"^RUST_TARGET := \$\(CURDIR\)/(.+)$", make, re.M)
    node = re.search(r"^RUST_NODE := \$\(RUST_TARGET\)/(.+)$", make, re.M)
    assert target and node
    assert f"{target.group(1)}/{node.group(1)}" == rust_image.RUST_BINARY


def test_no_cargo_is_found_where_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert rust_image.find_cargo() is None

    rustup = tmp_path / "home" / ".cargo" / "bin"
    rustup.mkdir(parents=True)
    (rustup / "cargo").write_text("#!/bin/sh\n")
    assert rust_image.find_cargo() == str(rustup / "cargo")

    (tmp_path / "bin").mkdir()
    on_path = tmp_path / "bin" / "cargo"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert rust_image.find_cargo() == str(on_path)


def test_missing_cargo_says_how_to_get_it() -> None:
    err = rust_image.cargo_missing("sentrynet-rust-node:0123456789ab")
    assert isinstance(err, images.SentrynetError)
    text = str(err)
    assert "cargo not found" in text and "sentrynet-rust-node:0123456789ab" in text
    assert "rustup" in text and "impl: rust" in text
    assert "\n" not in text and os.linesep not in text


def test_prune_keeps_to_its_own_repository() -> None:
    pairs: list[tuple[list[str], float | None]] = [
        ([f"{rust_image.RUST_REPO}:old{i}", f"{images.NODE_REPO}:x{i}"], 0.0)
        for i in range(images.KEEP_OLD_IMAGES + 1)
    ]
    doomed = images.prune_candidates(pairs, "none:current", 10.0**9, rust_image.RUST_REPO)
    assert doomed == [f"{rust_image.RUST_REPO}:old{images.KEEP_OLD_IMAGES}"]
