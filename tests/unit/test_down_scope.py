"""`sentrynet down --all` removes the testnets this checkout started, not another
checkout's or a pytest run's (issue 16); `--any-checkout` removes every one."""

from __future__ import annotations

from pathlib import Path

from harness.cli.down import _ours
from harness.run.setup import RUNS_DIR


def test_only_testnets_rendered_under_this_checkout_are_ours(tmp_path: Path) -> None:
    dirs = {
        "mine": {str(RUNS_DIR / "mine")},
        "pytest-run": {str(tmp_path / "t123-mini")},
        "other-checkout": {"/somewhere/else/.cache/testnets/other-checkout"},
        "orphan-networks": set(),  # nothing says who started it: left alone
        "mixed": {str(RUNS_DIR / "mixed"), "/elsewhere/mixed"},
    }
    ours, others = _ours(dirs)
    assert ours == ["mine"]
    assert others == ["mixed", "orphan-networks", "other-checkout", "pytest-run"]
