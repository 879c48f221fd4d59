"""Replay real scenario runs through the checks: every check, given the observation it
decided on in a recorded run (tests/data/replay/, see test_checks_data.record_run), gives
the verdict it gave then. This is what keeps the checks and the typed /status contract
(node/contract.py) honest against what real nodes report, not only hand-made snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_checks_data import REPLAY_DIR, replayed

from harness import scenarios
from harness.run.steps import CheckStep
from node.contract import Status

RECORDED = sorted(REPLAY_DIR.glob("*.json"))


def test_every_scenario_is_recorded() -> None:
    assert sorted(p.stem for p in RECORDED) == sorted(scenarios.SCENARIOS)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_each_check_gives_its_recorded_verdict(path: Path) -> None:
    doc = json.loads(path.read_text())
    steps = {s.name: s for s in scenarios.get(doc["scenario"]).steps if isinstance(s, CheckStep)}
    assert [rec["name"] for rec, _ in replayed(doc)] == list(steps)
    for rec, obs in replayed(doc):
        verdict = steps[rec["name"]].check(obs)
        # a row the flow never reached is failed whatever the check says; its detail
        # still carries the verdict ("not reached: ...; seen now: <detail>")
        if not rec["detail"].startswith("not reached:"):
            assert verdict.ok == rec["passed"], (rec["name"], str(verdict))
        assert verdict.detail in rec["detail"], (rec["name"], verdict.detail, rec["detail"])


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_status_reads_back_through_the_contract(path: Path) -> None:
    doc = json.loads(path.read_text())
    for rec in doc["checks"]:
        for name, st in rec["status"].items():
            once = Status.from_json(st)
            assert Status.from_json(once.to_json()) == once, name
            assert once.peer_id, name
