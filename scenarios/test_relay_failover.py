"""Scenario `relay-failover` (`sentrynet scenario relay-failover` runs the same definition): kill
sentry node3: its clients hold reservations on the other relay within the deadline; restart it:
they reserve on it again.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "relay-failover"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_relay_failover(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
