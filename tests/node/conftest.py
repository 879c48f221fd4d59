"""Fixtures for node tests. `nat_lab`: a network-namespace NAT lab (tests/node/netns.py).

Tests using it are marked `netns`. Without root they skip locally (reason shown by -ra)
but FAIL with CI=true: CI runs as root, so a missing lab there is a broken CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from netns import nat_lab

__all__ = ["nat_lab"]
