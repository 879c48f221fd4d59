"""Every scenario file in scenarios/library/ is a test module's worth of tests: one test per
check row and implementation, `test_<scenario>[<impl>-<check>]` (e.g.
`test_relay_failover[python-failover]`, `test_relay_limits[rust-reservations]`). The
implementations are the file's `impls:` (default [python]): the same file with the
topology's unpinned nodes on that implementation, as `sentrynet scenario NAME --impl IMPL`
runs it; a file with `engines: [compose, swarm]` runs each of them on both engines too
(`test_<scenario>[python-swarm-<check>]`: the data networks as overlays of a single-node
Docker Swarm, as `sentrynet scenario NAME --engine swarm` runs it). Drop a file in
scenarios/library/ and pytest runs it.

Each (scenario, impl) runs once, on its own testnet, when its first test asks for the
report; the previous testnet is torn down first (harness/pytest_plugin.py
`scenario_report`). A variant that does not load is one failing test,
`test_<scenario>[<impl>-load]`, with the field and the fix; the others still run. A variant
whose testnet has rust nodes needs cargo for the rust node image: without it the tests skip
locally and fail with CI=true (`require_rust_image`).
A file with `tested_by: OTHER` (hairpin: port-forward-sentry) has its checks judged in
OTHER's run, which holds every one of them: one testnet instead of two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.errors import SentrynetError
from harness.model.testnet import DEFAULT_ENGINE
from harness.pytest_plugin import assert_check, require_rust_image

pytestmark = [pytest.mark.docker, pytest.mark.scenario]


def variants(name: str) -> list[Any]:
    """pytest params (impl, engine, check, problem, needs_rust) of scenario `name`: one per
    check row of each implementation in its `impls:` on each engine in its `engines:`, id
    `<impl>-<check>` (compose) or `<impl>-<engine>-<check>`; a variant that does not load is
    one param `<impl>-load` carrying the error."""
    try:
        first = scenarios.get(name)
    except SentrynetError as exc:
        return [
            pytest.param(
                scenarios.DEFAULT_IMPL, DEFAULT_ENGINE, "load", str(exc), False, id="python-load"
            )
        ]
    out = []
    for i, impl in enumerate(first.impls):
        try:
            sc = scenarios.get(name, impl, f"impls[{i}]")
        except SentrynetError as exc:
            out.append(
                pytest.param(impl, DEFAULT_ENGINE, "load", str(exc), False, id=f"{impl}-load")
            )
            continue
        rust = "rust" in sc.node_impls.values()
        for engine in first.engines:
            tag = impl if engine == DEFAULT_ENGINE else f"{impl}-{engine}"
            out += [
                pytest.param(impl, engine, c, None, rust, id=f"{tag}-{c}") for c in sc.check_names
            ]
    return out


def _test_for(name: str) -> Callable[..., None]:
    @pytest.mark.parametrize(("impl", "engine", "check", "problem", "needs_rust"), variants(name))
    def test(
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
        host = scenarios.get(name, impl).tested_by or name
        assert_check(scenario_report(host, impl, engine), check)

    test.__name__ = test.__qualname__ = "test_" + name.replace("-", "_")
    test.__doc__ = f"scenario {name} ({scenarios.SCENARIOS[name]})"
    return test


for _name in scenarios.SCENARIOS:
    _test = _test_for(_name)
    globals()[_test.__name__] = _test
