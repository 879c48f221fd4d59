"""Every scenario file in scenarios/library/ is a test module's worth of tests: one test per
check row and implementation, `test_<scenario>[<impl>-<check>]` (e.g.
`test_relay_failover[python-failover]`, `test_relay_limits[rust-reservations]`). The
implementations are the file's `impls:` (default [python]): the same file with the
topology's unpinned nodes on that implementation, as `sentrynet scenario NAME --impl IMPL`
runs it; a file with `engines: [compose, swarm]` runs each of them on both engines too
(`test_<scenario>[python-swarm-<check>]`: the data networks as overlays of a single-node
Docker Swarm, as `sentrynet scenario NAME --engine swarm` runs it). Drop a file in
scenarios/library/ and pytest runs it.

Each (scenario, impl, engine) runs once, on its own testnet, when its first test asks for
the report; the previous testnet is torn down first (harness/pytest_plugin.py
`scenario_report`). The tests of one testnet are one class, `Test_<scenario>_<impl>`
(`..._<engine>` off compose), so that `make test`'s `pytest -n 2 --dist loadscope` hands a
testnet's checks to one worker and two testnets run side by side (pytest-xdist's
`xdist_group` marks are not used: with pytest 9.2 they stopped grouping, silently). A
variant that does not load is one failing test, `test_<scenario>[<impl>-load]`, with the
field and the fix; the others still run. A variant whose testnet has rust nodes needs cargo
for the rust node image: without it the tests skip locally and fail with CI=true
(`require_rust_image`).
A file with `tested_by: OTHER` (hairpin: port-forward-sentry) has its checks judged in
OTHER's run, which holds every one of them: one testnet instead of two, one class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness import scenarios
from harness.errors import SentrynetError
from harness.model.testnet import DEFAULT_ENGINE
from harness.pytest_plugin import assert_check, require_rust_image

pytestmark = [pytest.mark.docker, pytest.mark.scenario]


@dataclass(frozen=True)
class JudgedIn:
    """The run a check is judged in: scenario `host` (a file's own name, or its
    `tested_by:`) with its unpinned nodes on `impl`, its data networks on `engine`."""

    host: str
    impl: str
    engine: str

    @property
    def class_name(self) -> str:
        tail = "" if self.engine == DEFAULT_ENGINE else f"_{self.engine}"
        return f"Test_{self.host}_{self.impl}{tail}".replace("-", "_")


def variants(name: str) -> dict[JudgedIn, list[Any]]:
    """pytest params (impl, engine, check, problem, needs_rust) of scenario `name` by the
    testnet they are judged in: one per check row of each implementation in its `impls:` on
    each engine in its `engines:`, id `<impl>-<check>` (compose) or
    `<impl>-<engine>-<check>`; a variant that does not load is one param `<impl>-load`
    carrying the error, in a testnet of its own name."""
    try:
        first = scenarios.get(name)
    except SentrynetError as exc:
        impl = scenarios.DEFAULT_IMPL
        load = pytest.param(impl, DEFAULT_ENGINE, "load", str(exc), False, id=f"{impl}-load")
        return {JudgedIn(name, impl, DEFAULT_ENGINE): [load]}
    out: dict[JudgedIn, list[Any]] = {}
    for i, impl in enumerate(first.impls):
        try:
            sc = scenarios.get(name, impl, f"impls[{i}]")
        except SentrynetError as exc:
            load = pytest.param(impl, DEFAULT_ENGINE, "load", str(exc), False, id=f"{impl}-load")
            out.setdefault(JudgedIn(name, impl, DEFAULT_ENGINE), []).append(load)
            continue
        rust = "rust" in sc.node_impls.values()
        for engine in first.engines:
            tag = impl if engine == DEFAULT_ENGINE else f"{impl}-{engine}"
            out.setdefault(JudgedIn(sc.tested_by or name, impl, engine), []).extend(
                pytest.param(impl, engine, c, None, rust, id=f"{tag}-{c}") for c in sc.check_names
            )
    return out


def _test_for(name: str, host: str, params: list[Any]) -> Callable[..., None]:
    @pytest.mark.parametrize(("impl", "engine", "check", "problem", "needs_rust"), params)
    def test(
        self: object,
        scenario_report: Callable[..., dict[str, Any]],
        impl: str,
        engine: str,
        check: str,
        problem: str | None,
        needs_rust: bool,
    ) -> None:
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        if needs_rust:
            require_rust_image()
        # a file `tested_by:` another is judged in that one's run (one testnet for both)
        assert_check(scenario_report(host, impl, engine), check)

    test.__name__ = test.__qualname__ = "test_" + name.replace("-", "_")
    test.__doc__ = f"scenario {name} ({scenarios.SCENARIOS[name]})"
    setattr(test, "scenario", name)  # noqa: B010 (mypy knows no such attribute of a function)
    return test


def scenario_classes() -> dict[str, type]:
    """One class per testnet, holding the tests of every scenario file judged in it, in
    library order."""
    members: dict[JudgedIn, dict[str, Any]] = {}
    for name in scenarios.SCENARIOS:
        for testnet, params in variants(name).items():
            test = _test_for(name, testnet.host, params)
            members.setdefault(testnet, {})[test.__name__] = test
    return {
        t.class_name: type(t.class_name, (), {"__doc__": f"checks judged in {t}", **tests})
        for t, tests in members.items()
    }


globals().update(scenario_classes())
