"""The rust node reads our node.toml and key file as our node does: the same bad configs
exit 2 naming the same key, and the same key file gives the same peer id both ways."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from rustnode import REPO, start_rust

from testkit.procs import NodeProcs, render_toml

pytestmark = pytest.mark.interop

GOLDEN = REPO / "tests" / "golden" / "sentry" / "nodes" / "node0"

BASE: dict[str, dict[str, Any]] = {
    "node": {"name": "n", "role": "full", "key_file": "node.key"},
    "p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/4001"]},
    "api": {"listen": "127.0.0.1:9000"},
}

# (what to change, the dotted key both nodes must name)
BAD = [
    ({"relay": {"mode": "clinet"}}, "relay.mode"),
    ({"p2p": {"listen_adrs": []}}, "p2p.listen_adrs"),
    ({"p2p": {"listen_addrs": ["/ip4/0.0.0.0/tcp/4001"]}}, "p2p.listen_addrs[0]"),
    ({"node": {"role": "king"}}, "node.role"),
    ({"relay": {"max_reservations": 0}}, "relay.max_reservations"),
    ({"relay": {"relay_servers": ["not-a-multiaddr"]}}, "relay.relay_servers[0]"),
    ({"api": {"listen": "nope"}}, "api.listen"),
    ({"dcutr": {"enabled": "yes"}}, "dcutr.enabled"),
    ({"gossip": {"x": 1}}, "gossip"),
    ({"p2p": {"ping_interval_s": float("nan")}}, "p2p.ping_interval_s"),
    ({"p2p": {"max_connections": 8, "low_watermark": 9}}, "p2p.low_watermark"),
]


def bad_config(tmp_path: Path, change: dict[str, dict[str, Any]]) -> Path:
    doc = {k: dict(v) for k, v in BASE.items()}
    for section, values in change.items():
        doc.setdefault(section, {}).update(values)
    path = tmp_path / "node.toml"
    path.write_text(render_toml(doc))
    return path


def first_error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("config error: "))


@pytest.mark.parametrize(("change", "key"), BAD, ids=[k for _, k in BAD])
def test_bad_config_exits_2_naming_the_key_like_ours(
    rust_node: Path, tmp_path: Path, change: dict[str, dict[str, Any]], key: str
) -> None:
    path = bad_config(tmp_path, change)
    rust = subprocess.run(
        [str(rust_node), "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    ours = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert (rust.returncode, ours.returncode) == (2, 2), (rust.stderr, ours.stderr)
    rust_line, our_line = first_error_line(rust.stderr), first_error_line(ours.stderr)
    assert rust_line.startswith(f"config error: {key}:"), rust_line
    assert our_line.startswith(f"config error: {key}:"), our_line
    assert not (tmp_path / "node.key").exists(), "a bad config must not create a key"


def test_golden_key_gives_the_peer_id_render_derived(rust_node: Path, tmp_path: Path) -> None:
    """The harness derives peer ids from the keys it renders; the rust node must agree."""
    want = tomllib.loads((GOLDEN / "node.toml").read_text())["chain"]["validator_ids"]["node0"]
    key = tmp_path / "golden.key"
    shutil.copy(GOLDEN / "node.key", key)
    with NodeProcs(tmp_path) as procs:
        node = start_rust(procs, rust_node, "node0", node={"key_file": str(key)})
        assert node.peer_id == want


def test_key_created_by_rust_is_read_by_our_node(rust_node: Path, tmp_path: Path) -> None:
    key = tmp_path / "shared.key"
    with NodeProcs(tmp_path) as procs:
        rust = start_rust(procs, rust_node, "rust", node={"key_file": str(key)})
        rust_id = rust.peer_id
        assert rust.stop() == 0, "SIGTERM is a clean exit"
        assert key.stat().st_mode & 0o777 == 0o600
        ours = procs.start("ours", node={"key_file": str(key)})
        assert ours.peer_id == rust_id


def test_taken_p2p_port_exits_1_naming_the_listen_addr(rust_node: Path, tmp_path: Path) -> None:
    """A node that cannot listen says so and stops; it never reports ready without it."""
    with NodeProcs(tmp_path) as procs, socket.socket() as taken:
        node = procs.write_config("rust")
        taken.bind((node.ip, node.p2p_port))
        taken.listen()
        done = subprocess.run(
            [str(rust_node), "--config", str(node.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1, done.stderr
        assert f"p2p.listen_addrs[0]: cannot listen on {node.p2p_addr}" in done.stderr
        assert "in use" in done.stderr
