"""Start the rust-libp2p reference node (peers/rust) beside our Python nodes in a test.

The config is written by the same `NodeProcs.write_config` the Python nodes use (own
127.0.0.x address, free ports, node.toml in tmp), so both implementations read one
format; only the command differs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from harness.infra.rust_image import RUST_BINARY, find_cargo
from testkit.procs import NodeProc, NodeProcs, free_port, render_toml, wait_for

REPO = Path(__file__).resolve().parents[2]
RUST_NODE = REPO / RUST_BINARY
__all__ = ["RUST_NODE", "build", "cargo_test", "find_cargo", "in_ci", "start_rust"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def build() -> subprocess.CompletedProcess[str]:
    """`make rust-node`: cargo's own incremental build, a second when nothing changed."""
    return subprocess.run(
        ["make", "--no-print-directory", "rust-node"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def cargo_test(cargo: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`cargo test --locked` for the rust node crate, in the target dir `make rust-node`
    uses (.cache/rust-target, so only the crate itself is compiled again), niced as the
    Makefile does; CARGO_JOBS from the environment as there."""
    jobs = os.environ.get("CARGO_JOBS", "")
    cmd = ["nice", "-n", "10", cargo, "test", "--locked", *(["-j", jobs] if jobs else [])]
    return subprocess.run(
        cmd,
        cwd=REPO / "peers" / "rust",
        env={**os.environ, "CARGO_TARGET_DIR": str(REPO / ".cache" / "rust-target")},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def launch_rust(node: NodeProc, binary: Path, wait_ready: bool = True) -> NodeProc:
    logf = open(node.log_path, "ab")  # noqa: SIM115 (owned by the process)
    node.proc = subprocess.Popen(
        [str(binary), "--config", str(node.config_path)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=str(REPO),
    )
    logf.close()
    if wait_ready:
        wait_for(node, lambda s: s.get("ready") and s.get("peer_id"), "ready rust node", 30)
    return node


def move_to_localhost(node: NodeProc) -> NodeProc:
    """Put a written node on 127.0.0.1 (fresh ports), p2p and API.

    rust-libp2p dials from its listen port on a socket bound to 0.0.0.0, so the kernel
    picks the source IP: 127.0.0.1 for any loopback peer. Peers then observe it at
    127.0.0.1:<port>, and its DCUtR offers only observed addresses. On its own 127.0.0.x
    that address has no listener, so a rust node that is to be hole-punched to on
    loopback listens on 127.0.0.1. (On a Docker network the source IP is the node's own.)
    """
    node.ip = "127.0.0.1"
    node.p2p_port = free_port(node.ip)
    node.api_port = free_port(node.ip)
    while node.api_port == node.p2p_port:
        node.api_port = free_port(node.ip)
    node.config["p2p"]["listen_addrs"] = [node.p2p_addr]
    node.config["api"]["listen"] = f"{node.ip}:{node.api_port}"
    node.config_path.write_text(render_toml(node.config))
    return node


def start_rust(
    procs: NodeProcs,
    binary: Path,
    name: str,
    *,
    wait_ready: bool = True,
    localhost: bool = False,
    **sections: Any,
) -> NodeProc:
    """Write `name`'s config (sections as for NodeProcs.start) and run the rust node on it;
    `localhost`: on 127.0.0.1 (see move_to_localhost)."""
    node = procs.write_config(name, **sections)
    if localhost:
        move_to_localhost(node)
    return launch_rust(node, binary, wait_ready)
