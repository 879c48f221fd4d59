"""Scenario `symmetric-nat` (`sentrynet scenario symmetric-nat` runs the same definition):
symmetric NAT: DCUtR fails with a recorded reason, traffic stays relayed, and node4's sync still
crosses the NAT through the relay.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "symmetric-nat"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_symmetric_nat(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
