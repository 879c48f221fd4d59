"""Fixtures for node tests. `nat_lab`: a network-namespace NAT lab (tests/node/netns.py).

Tests using it are marked `netns`. Without root they skip locally (reason shown by -ra)
but FAIL with CI=true: CI runs as root, so a missing lab there is a broken CI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netns import NatLab, netns_available


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def nat_lab(tmp_path: Path) -> Iterator[NatLab]:
    reason = netns_available()
    if reason is not None:
        if in_ci():
            pytest.fail(f"{reason} (CI=true: netns tests must run, they may not skip)")
        pytest.skip(reason)
    lab = NatLab(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.cleanup()
