"""Every scenario file in scenarios/library/ is a test module's worth of tests: one test per
check row, `test_<scenario>[<check>]` (e.g. `test_relay_failover[failover]`). Drop a file
in scenarios/library/ and pytest runs it; `sentrynet scenario NAME` runs the same file.

Each scenario runs once, on its own testnet, when its first test asks for the report; the
testnet of the previous scenario is torn down first (harness/pytest_plugin.py
`scenario_report`). A file that does not load is one failing test, `test_<scenario>[load]`,
with the field and the fix; the other scenarios still run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.errors import SentrynetError
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]


def _test_for(name: str) -> Callable[..., None]:
    try:
        checks = scenarios.get(name).check_names
        problem = None
    except SentrynetError as exc:
        checks, problem = ["load"], str(exc)

    @pytest.mark.parametrize("check", checks)
    def test(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        assert_check(scenario_report(name), check)

    test.__name__ = test.__qualname__ = "test_" + name.replace("-", "_")
    test.__doc__ = f"scenario {name} ({scenarios.SCENARIOS[name]})"
    return test


for _name in scenarios.SCENARIOS:
    _test = _test_for(_name)
    globals()[_test.__name__] = _test
