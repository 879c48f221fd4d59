"""report.json / junit.xml / results folder, and the summary table."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.run import report
from harness.run.steps import CheckOutcome


def _outcomes() -> list[CheckOutcome]:
    return [
        CheckOutcome("reservations", True, 3.21, "all 6 clients hold reservations"),
        CheckOutcome(
            "relayed_circuit",
            False,
            93.0,
            "no relayed connection between validators",
            cause="no common relay: node0 holds [node3], node4 holds [node7]",
        ),
        CheckOutcome("cross_network_sync", True, 40.0, "impossible, as expected", "impossible"),
    ]


def test_report_shape_and_verdict() -> None:
    doc = report.build_report("sentry", _outcomes(), testnet="sentry-ab12", error=None)
    assert doc["scenario"] == "sentry" and doc["passed"] is False
    assert [c["name"] for c in doc["checks"]] == [
        "reservations",
        "relayed_circuit",
        "cross_network_sync",
    ]
    first = doc["checks"][0]
    assert set(first) == {"name", "passed", "seconds", "detail"}
    assert first["seconds"] == 3.21
    assert doc["checks"][1]["likely_cause"].startswith("no common relay")
    assert doc["checks"][2]["expect"] == "impossible"
    assert "error" not in doc


def test_report_passes_only_with_checks_and_no_error() -> None:
    ok = [CheckOutcome("a", True, 1.0, "x")]
    assert report.build_report("s", ok)["passed"] is True
    assert report.build_report("s", [])["passed"] is False
    assert report.build_report("s", ok, error="up failed")["passed"] is False


def test_junit_xml_one_case_per_check() -> None:
    doc = report.build_report("sentry", _outcomes(), duration_s=120.0)
    root = ET.fromstring(report.junit_xml(doc))
    assert root.tag == "testsuite"
    assert root.get("tests") == "3" and root.get("failures") == "1"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "reservations",
        "relayed_circuit",
        "cross_network_sync",
    ]
    fail = cases[1].find("failure")
    assert fail is not None and "likely cause: no common relay" in (fail.text or "")
    out = cases[2].find("system-out")
    assert out is not None and (out.text or "").startswith("expected impossible")


def test_junit_records_run_error() -> None:
    doc = report.build_report("sentry", [], error="up failed: compose")
    root = ET.fromstring(report.junit_xml(doc))
    assert root.get("errors") == "1"
    assert root.find("testcase/error") is not None


def test_results_dir_and_latest_symlink(tmp_path: Path) -> None:
    first = report.new_run_dir(tmp_path, "sentry")
    second = report.new_run_dir(tmp_path, "sentry")
    assert first != second and first.is_dir() and second.is_dir()
    latest = tmp_path / "latest"
    assert latest.is_symlink() and latest.resolve() == second.resolve()
    assert not Path(str(latest.readlink())).is_absolute()
    doc = report.build_report("sentry", _outcomes())
    report.write_results(second, doc)
    assert json.loads((latest / "report.json").read_text())["scenario"] == "sentry"
    assert (latest / "junit.xml").read_text().startswith("<?xml")


def test_save_artifacts_never_raises(tmp_path: Path) -> None:
    def read_log(name: str) -> str:
        if name == "node1":
            raise RuntimeError("container gone")
        return f"log of {name}\n"

    def graph(run_dir: Path) -> list[str]:
        (run_dir / "graph.svg").write_text("<svg/>")
        return ["graph.svg"]

    got = report.save_artifacts(
        tmp_path,
        statuses={"node0": {"peer_id": "x"}, "node1": None},
        status_errors={"node1": "connection refused"},
        events={"node0": [{"seq": 0, "type": "block_committed"}]},
        logs=["node0", "node1"],
        read_log=read_log,
        graph=graph,
    )
    assert "logs/node0.log" in got["written"] and "graph.svg" in got["written"]
    assert any("node1" in e and "container gone" in e for e in got["errors"])
    assert json.loads((tmp_path / "status/node1.json").read_text()) == {
        "error": "connection refused"
    }
    assert (tmp_path / "events/node0.jsonl").read_text().count("\n") == 1


def test_summary_table() -> None:
    doc = report.build_report("sentry", _outcomes())
    text = report.summary_table(doc, width=120)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["check", "result", "seconds", "detail"]
    assert any(
        line.startswith("reservations") and "PASS" in line and "3.2" in line for line in lines
    )
    fail = next(i for i, line in enumerate(lines) if "FAIL" in line)
    assert "likely cause: no common relay" in lines[fail + 1]
    assert any("PASS (impossible)" in line for line in lines)
    assert lines[-1] == "scenario sentry: FAILED (2/3 checks)"
    assert all(len(line) <= 120 for line in lines)


def test_assert_check_fails_with_seen_and_cause() -> None:
    import pytest

    from harness.pytest_plugin import assert_check

    doc = report.build_report("sentry", _outcomes())
    doc["results_dir"] = "results/x"
    assert_check(doc, "reservations")
    with pytest.raises(pytest.fail.Exception) as info:
        assert_check(doc, "relayed_circuit")
    text = str(info.value)
    assert "sentry/relayed_circuit failed after 93.0s" in text
    assert "likely cause: no common relay" in text and "results: results/x" in text
    with pytest.raises(pytest.fail.Exception, match="no check 'nope'"):
        assert_check(doc, "nope")


def test_finish_without_a_testnet_writes_every_check(tmp_path: Path) -> None:
    import io

    from harness import scenarios
    from harness.progress import Progress
    from harness.run import runner
    from harness.run.steps import pending_outcomes

    sc = scenarios.get("seed-exact")
    rows = pending_outcomes(sc, [], "the testnet did not come up: boom")
    doc, run_dir = runner.write_report(
        sc, None, rows, results_root=tmp_path, progress=Progress(stream=io.StringIO()), error="boom"
    )
    assert doc["passed"] is False and doc["error"] == "boom"
    assert [c["name"] for c in doc["checks"]] == sc.check_names
    saved = json.loads((tmp_path / "latest" / "report.json").read_text())
    assert saved["checks"][2]["expect"] == "impossible"
    assert (run_dir / "junit.xml").exists()


def test_the_suite_name_says_the_implementation_and_the_engine() -> None:
    """A run on the swarm engine or on another implementation is told apart in junit and
    in the summary line (a CI page lists sentry and sentry[swarm] side by side)."""
    for extra, tag in (
        ({}, ""),
        ({"engine": "compose"}, ""),
        ({"engine": "swarm"}, "[swarm]"),
        ({"impl": "rust", "engine": "swarm"}, "[rust,swarm]"),
        ({"impl": "rust"}, "[rust]"),
    ):
        doc = report.build_report("sentry", _outcomes(), **extra)
        root = ET.fromstring(report.junit_xml(doc))
        assert root.get("name") == f"sentrynet.scenario.sentry{tag}", extra
        assert f"scenario sentry{tag}: FAILED" in report.summary_table(doc), extra


def test_a_testnet_run_twice_in_one_xdist_session_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """claim_run: under pytest-xdist a testnet claimed by one worker fails a second claim
    (a scheduler that split one testnet's checks), and another run of the session, or a
    run outside xdist, claims freely."""
    import tempfile

    from harness.pytest_plugin import claim_run

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)
    claim_run("sentry", "python", "compose")
    claim_run("sentry", "python", "compose")  # no xdist: nothing to share a run with
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run1")
    claim_run("sentry", "python", "compose")
    claim_run("sentry", "rust", "compose")
    with pytest.raises(pytest.fail.Exception, match="already ran on another xdist worker"):
        claim_run("sentry", "python", "compose")
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run2")
    claim_run("sentry", "python", "compose")
