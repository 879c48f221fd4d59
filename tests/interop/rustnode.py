"""Start the rust-libp2p reference node (peers/rust) beside our Python nodes in a test.

The config is written by the same `NodeProcs.write_config` the Python nodes use (own
127.0.0.x address, free ports, node.toml in tmp), so both implementations read one
format; only the command differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from node.testing import NodeProc, NodeProcs, wait_for

REPO = Path(__file__).resolve().parents[2]
RUST_NODE = REPO / ".cache" / "rust-target" / "debug" / "sentrynet-rust-node"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def find_cargo() -> str | None:
    """cargo on PATH, else rustup's default place (a login PATH often lacks it)."""
    found = shutil.which("cargo")
    if found:
        return found
    home = Path.home() / ".cargo" / "bin" / "cargo"
    return str(home) if home.exists() else None


def build() -> subprocess.CompletedProcess[str]:
    """`make rust-node`: cargo's own incremental build, a second when nothing changed."""
    return subprocess.run(
        ["make", "--no-print-directory", "rust-node"],
        cwd=REPO,
        capture_output=True,
        text=True,
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


def start_rust(
    procs: NodeProcs, binary: Path, name: str, *, wait_ready: bool = True, **sections: Any
) -> NodeProc:
    """Write `name`'s config (sections as for NodeProcs.start) and run the rust node on it."""
    return launch_rust(procs.write_config(name, **sections), binary, wait_ready)
