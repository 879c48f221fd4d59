"""The registry of py-libp2p internals node/overrides relies on (node/overrides/upstream.py):
every one is present in the installed release, and a missing one or another release is
named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.overrides.upstream import (
    INTERNALS,
    PINNED_VERSION,
    Internal,
    UpstreamMismatch,
    check,
    missing,
)

REPO = Path(__file__).resolve().parents[2]


def test_installed_libp2p_has_every_internal_the_overrides_use() -> None:
    check()  # raises UpstreamMismatch naming what is missing
    assert all(missing(i) is None for i in INTERNALS)


def test_pinned_version_is_the_one_pyproject_pins() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"libp2p=={PINNED_VERSION}"' in pyproject


def test_a_missing_internal_is_named_with_its_module_and_user() -> None:
    gone = Internal("libp2p.host.basic_host", "BasicHost", "_no_such_thing", "node/x.py")
    with pytest.raises(UpstreamMismatch) as err:
        check([gone], installed=PINNED_VERSION)
    msg = str(err.value)
    assert "libp2p.host.basic_host.BasicHost has no attribute _no_such_thing" in msg
    assert "node/x.py" in msg


def test_another_release_is_refused() -> None:
    with pytest.raises(UpstreamMismatch, match=r"py-libp2p 0\.9\.0 is installed"):
        check([], installed="0.9.0")


def test_missing_module_and_class_are_named() -> None:
    assert "cannot be imported" in (missing(Internal("libp2p.nope", "X", "y", "u")) or "")
    assert "has no class Nope" in (
        missing(Internal("libp2p.host.basic_host", "Nope", "y", "u")) or ""
    )


def test_every_override_module_is_in_the_registry() -> None:
    """Each module of node/overrides reaches into upstream: it lists what it reaches for."""
    used_by = {Path(i.used_by).name for i in INTERNALS}
    modules = {p.name for p in (REPO / "node" / "overrides").glob("*.py")}
    assert modules - {"__init__.py", "upstream.py"} <= used_by
