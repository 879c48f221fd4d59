"""Interop tier (`-m interop`): the rust-libp2p reference node and our Python node.

The session builds the rust node once with `make rust-node`. Without cargo the tests skip
locally (the reason is shown by -ra) but FAIL with CI=true: CI has cargo, so a missing
one there is a broken CI. A build that fails always fails the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "node"))

from netns import nat_lab
from rustnode import RUST_NODE, build, find_cargo, in_ci

__all__ = ["cargo", "nat_lab", "rust_node"]


@pytest.fixture(scope="session")
def cargo() -> str:
    """cargo's path; skips without it locally, fails without it in CI."""
    found = find_cargo()
    if found is None:
        reason = (
            "cargo not found on PATH or in ~/.cargo/bin: install the Rust toolchain with "
            "rustup to run the interop tier"
        )
        if in_ci():
            pytest.fail(f"{reason} (CI=true: interop tests must run, they may not skip)")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def rust_node(cargo: str) -> Path:
    """Path of the freshly built rust node binary."""
    done = build()
    if done.returncode != 0 or not RUST_NODE.exists():
        pytest.fail(f"make rust-node failed (rc={done.returncode}):\n{done.stderr[-6000:]}")
    return RUST_NODE
