"""Scenario `partition-heal` (`sentrynet scenario partition-heal` runs the same definition):
partition network a from b (and a's sentry from the public network), heal: every node converges
on one chain, no forks.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "partition-heal"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_partition_heal(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
