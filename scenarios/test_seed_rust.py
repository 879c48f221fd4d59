"""Scenario `seed-rust` (`sentrynet scenario seed-rust`): the seed's question asked of
rust-libp2p 0.56: validators on the rust reference node behind cone NAT, relays configured
without peer id; reservations, circuits, DCUtR rust<->rust and rust<->python, consensus,
cross-network sync of a wiped rust validator, and the report's conclusion paragraph.

The scenario runs once, on one testnet, in the first test; each check is its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness import scenarios
from harness.pytest_plugin import assert_check

pytestmark = [pytest.mark.docker, pytest.mark.scenario]
SCENARIO = "seed-rust"


@pytest.mark.parametrize("check", scenarios.get(SCENARIO).check_names)
def test_seed_rust(scenario_report: Callable[[str], dict[str, Any]], check: str) -> None:
    assert_check(scenario_report(SCENARIO), check)


def test_seed_rust_report_concludes_against_the_seed(
    scenario_report: Callable[[str], dict[str, Any]],
) -> None:
    doc = scenario_report(SCENARIO)
    conclusion = doc.get("conclusion") or ""
    assert conclusion.startswith("The seed (a rust-libp2p 0.56 relay integration) concluded")
    if doc["passed"]:
        assert "This run shows the opposite" in conclusion
