"""bench/idle_profile.py --ab REV: half of each role on another revision's node/, the
ratio of the halves' medians. The CPU figures themselves come from real runs (make bench);
this checks the split, the export and the arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import idle_ratio, report
from bench.idle_profile import AB, _ab_figures, export_node_tree, main


def test_every_second_node_of_a_role_runs_the_revision_swap_gives_the_others() -> None:
    ab = AB("x", Path("/nowhere"))
    assert [ab.runs_rev(i) for i in range(4)] == [False, True, False, True]
    swapped = AB("x", Path("/nowhere"), swap=True)
    assert [swapped.runs_rev(i) for i in range(4)] == [True, False, True, False]


def test_against_runs_the_revision_on_every_node() -> None:
    every = AB("x", Path("/nowhere"), every=True)
    assert [every.runs_rev(i) for i in range(4)] == [True, True, True, True]


def test_medians_per_half_and_the_working_tree_as_a_ratio_of_the_revision() -> None:
    cores = {"v0": 0.04, "v1": 0.05, "v2": 0.04, "v3": 0.06, "f0": 0.03, "f1": 0.03}
    roles = {"validators": ["v0", "v1", "v2", "v3"], "followers": ["f0", "f1"], "none": []}
    got = _ab_figures(AB("HEAD~1 (abc)", Path("/nowhere")), cores, roles)
    assert got["rev_runs"] == ["v1", "v3", "f1"] and got["working_tree_runs"] == ["v0", "v2", "f0"]
    assert got["validators"] == {
        "rev_median": 0.055,
        "working_tree_median": 0.04,
        "working_tree_over_rev": 0.727,
    }
    assert got["followers"]["working_tree_over_rev"] == 1.0
    assert "none" not in got


def test_the_revision_node_package_is_exported_from_git(tmp_path: Path) -> None:
    ab = export_node_tree("HEAD", tmp_path)
    assert (ab.code_dir / "node" / "__main__.py").is_file()
    assert not (ab.code_dir / "harness").exists(), "only node/ runs in a node process"
    assert ab.rev.startswith("HEAD (")
    with pytest.raises(SystemExit, match="--ab no-such-rev: not a git revision here"):
        export_node_tree("no-such-rev", tmp_path)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--ab", "HEAD"], "--ab needs --cpu-only"),
        (["--cpu-only", "--ab-swap"], "--ab-swap needs --ab REV"),
        (["--cpu-only", "--ab", "HEAD", "--nodes", "1"], "--ab needs --nodes 2 or more"),
        (["--against", "HEAD"], "--against needs --cpu-only"),
        (
            ["--cpu-only", "--against", "HEAD", "--ab", "HEAD"],
            "--against needs --cpu-only, without",
        ),
        (["--cpu-only", "--against", "HEAD", "--pairs", "0"], "--pairs must be 1 or more"),
    ],
)
def test_ab_arguments_that_cannot_work_are_errors(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert said in capsys.readouterr().err


def test_the_ratio_target_reads_the_baseline_commit_and_judges_a_quarter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert idle_ratio.baseline_commit() == json.loads(idle_ratio.BASELINE.read_text())["commit"]
    broken = tmp_path / "baseline.json"
    broken.write_text("{}")
    monkeypatch.setattr(idle_ratio, "BASELINE", broken)
    with pytest.raises(RuntimeError, match="no baseline commit"):
        idle_ratio.baseline_commit()

    def verdict(ratio: float | None) -> dict[str, str]:
        res = {
            "target_ratio": idle_ratio.TARGET_RATIO,
            "rev": "fbb2162 (fbb2162)",
            "working_tree_over_rev": ratio,
            "working_tree_median": 0.047,
            "rev_median": 0.19,
            "runs_cpu_cores_median": {"rev": [0.19, 0.2], "working_tree": [0.047, 0.05]},
        }
        (row,) = [x for x in report.targets({"idle_ratio": res}) if "baseline" in x["target"]]
        return row

    met = verdict(0.243)
    assert met["verdict"] == "met"
    assert met["measured"] == "0.243 (0.0470 / 0.1900 cores, fbb2162 (fbb2162), 2 pairs)"
    assert verdict(0.26)["verdict"] == "MISSED"
    assert verdict(None)["verdict"] == "MISSED"
    assert report.headline({"idle_ratio": {"working_tree_over_rev": 0.243}}) == {
        "idle_over_baseline_code": 0.243
    }
