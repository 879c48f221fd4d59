"""The machine's load beside a run's timings (harness/infra/load.py): parsed from the
kernel's text, judged per core, said by `up` and under a scenario's table."""

from __future__ import annotations

from pathlib import Path

from harness.infra.load import SATURATED_PER_CORE, MachineLoad, machine_load, parse_loadavg
from harness.run import report


def test_loadavg_is_parsed_and_judged_per_core() -> None:
    busy = parse_loadavg("81.33 39.84 16.03 68/1469 32112\n", cores=2)
    assert (busy.load1, busy.load5, busy.load15) == (81.33, 39.84, 16.03)
    assert busy.per_core > SATURATED_PER_CORE and busy.saturated
    warning = busy.warning()
    assert warning is not None and "load average 81.33 on 2 core(s)" in warning
    assert "SENTRYNET_DEADLINE_SCALE" in warning
    # 32 nodes on 2 cores ran at 25-28 and got ready: no warning
    calm = parse_loadavg("27.86 28.25 25.35 20/900 1", cores=2)
    assert not calm.saturated and calm.warning() is None
    assert calm.to_json() == {"cores": 2, "loadavg": [27.86, 28.25, 25.35]}


def test_machine_load_reads_this_machine_or_says_none(tmp_path: Path) -> None:
    now = machine_load()
    assert now is not None and now.cores >= 1 and now.load1 >= 0
    assert machine_load(tmp_path / "absent") is None
    (tmp_path / "bad").write_text("not numbers")
    assert machine_load(tmp_path / "bad") is None


def test_the_summary_says_when_the_machine_was_saturated() -> None:
    busy = MachineLoad(2, 81.3, 40.0, 16.0)
    doc = {
        "scenario": "s",
        "passed": False,
        "checks": [{"name": "reservations", "passed": False, "seconds": 120, "detail": "x"}],
        "machine": {"at_ready": busy.to_json(), "at_end": None, "saturated": True},
    }
    text = report.summary_table(doc)
    assert "machine saturated: load average 81.3 at ready on 2 core(s)" in text
    doc["machine"] = {"at_ready": MachineLoad(2, 3.0, 3.0, 3.0).to_json(), "saturated": False}
    assert "saturated" not in report.summary_table(doc)
