"""The rust node's own unit tests (`#[cfg(test)]` in peers/rust/src: wire vectors from
the Python node, sync framing, the consensus rules with proof-of-lock gossip) run in this
tier, since `make test` runs no cargo otherwise. Without cargo: skipped locally, failed in
CI (conftest's `cargo` fixture)."""

from __future__ import annotations

import subprocess

import pytest
from rustnode import cargo_test

pytestmark = pytest.mark.interop

# a cold build of the test binary (libp2p and its dependencies) takes minutes on 2 cores
TIMEOUT_S = 900


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def test_rust_unit_tests_pass(cargo: str) -> None:
    try:
        done = cargo_test(cargo, TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"cargo test --locked did not finish in {TIMEOUT_S} s:\n"
            f"{_text(e.stdout)}\n{_text(e.stderr)}"
        )
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"cargo test --locked failed (rc={done.returncode}):\n{output}"
    assert "test result: ok." in done.stdout, output
