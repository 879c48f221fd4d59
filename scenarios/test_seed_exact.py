"""Scenario `seed-exact` (`sentrynet scenario seed-exact` runs the same definition): the seed's
testnet (no NAT routers): consensus works by gossip through the sentries; a cross-network
circuit and cross-network sync are shown impossible, with the reachability reason from
harness/model/reach.py (expected negatives: they pass when shown impossible).

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "seed-exact"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_seed_exact(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
