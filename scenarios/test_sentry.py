"""Scenario `sentry` (`sentrynet scenario sentry` runs the same definition): cone NAT both sides:
reservations on relays discovered via identify, a relayed circuit A<->B, its DCUtR upgrade to
direct, consensus across networks, a wiped node4 syncing history from a peer behind the other
NAT, no forks.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "sentry"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_sentry(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
