"""Scenario `mixed-relay` (`sentrynet scenario mixed-relay`): the sentry scenario's checks
with both sentries on the rust-libp2p reference node (scenarios/mixed-relay.yaml): our
Python clients behind cone NAT reserve on rust relays found without a peer id, open
circuits through them, hole-punch over those circuits, and the chain runs and syncs across.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "mixed-relay"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_mixed_relay(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)
