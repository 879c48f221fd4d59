"""Rendering an `impl: rust` node: the sentry testnet with full node node6 (behind router b)
on the rust reference node. Only its image and command change; it keeps the mounts, key,
labels, networks and control-network API of a Python node, and nothing else changes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import SentrynetError
from harness.infra.render import render
from harness.infra.rust_image import RUST_BINARY_IN_IMAGE
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology
from harness.run.setup import rendered_images
from testkit.topology import with_impl

REPO = Path(__file__).resolve().parents[2]
SENTRY = REPO / "scenarios" / "sentry.yaml"
IMAGE = "sentrynet-node:golden"
RUST_IMAGE = "sentrynet-rust-node:golden"


def render_both(tmp_path: Path) -> tuple[Testnet, Path, Path]:
    """The rust variant and plain sentry.yaml, rendered under the same testnet name."""
    topo = load_topology(with_impl(SENTRY, tmp_path, {"node6": "rust"}))
    tn = build_testnet(topo, name="sentry")
    render(tn, tmp_path / "rust", IMAGE, rust_image=RUST_IMAGE)
    render(build_testnet(load_topology(SENTRY), name="sentry"), tmp_path / "py", IMAGE)
    return tn, tmp_path / "rust", tmp_path / "py"


def services(out: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((out / "docker-compose.yml").read_text())["services"])


def test_the_rust_node_runs_the_rust_binary_from_the_rust_image(tmp_path: Path) -> None:
    _, rust, py = render_both(tmp_path)
    got, plain = services(rust)["node6"], services(py)["node6"]
    assert got["image"] == RUST_IMAGE
    assert got["command"] == [
        "/bin/sh",
        "-c",
        f"/bin/sh /config/netsetup.sh && exec {RUST_BINARY_IN_IMAGE} --config /config/node.toml",
    ]
    same = {k: v for k, v in got.items() if k not in ("image", "command")}
    assert same == {k: v for k, v in plain.items() if k not in ("image", "command")}
    assert "./nodes/node6:/config:ro" in got["volumes"] and "data-node6:/data" in got["volumes"]


def test_everything_else_renders_as_for_python(tmp_path: Path) -> None:
    tn, rust, py = render_both(tmp_path)
    ours, plain = services(rust), services(py)
    assert ours.keys() == plain.keys()
    for name in ours.keys() - {"node6"}:
        assert ours[name] == plain[name], name

    def text(path: Path, source: str) -> bytes:  # the "generated from <topology>" line aside
        return path.read_bytes().replace(source.encode(), b"SOURCE")

    for sub in ("nodes", "routers"):
        for path in sorted((py / sub).rglob("*")):
            if path.is_file():
                mine = text(rust / path.relative_to(py), tn.source)
                assert mine == text(path, str(SENTRY)), path
    # node6's config is the same too: the rust node runs the chain and serves block sync
    a = tomllib.loads((rust / "nodes/node6/node.toml").read_text())
    assert a["chain"]["serve_sync"] is True


def test_testnet_json_records_each_nodes_impl(tmp_path: Path) -> None:
    _, rust, _ = render_both(tmp_path)
    loaded = Testnet.load(rust)
    assert {n.name: n.impl for n in loaded.nodes} == {
        f"node{i}": "rust" if i == 6 else "python" for i in range(8)
    }
    assert rendered_images(rust, loaded) == (IMAGE, RUST_IMAGE)


def test_a_plain_testnet_runs_no_rust_image(tmp_path: Path) -> None:
    _, _, py = render_both(tmp_path)
    assert rendered_images(py, Testnet.load(py)) == (IMAGE, None)


def test_a_rust_node_without_a_rust_image_is_refused(tmp_path: Path) -> None:
    topo = load_topology(with_impl(SENTRY, tmp_path, {"node2": "rust", "node6": "rust"}))
    with pytest.raises(SentrynetError, match=r"node2, node6 have `impl: rust`.*images build"):
        render(build_testnet(topo), tmp_path / "out", IMAGE)
    assert not (tmp_path / "out").exists()
