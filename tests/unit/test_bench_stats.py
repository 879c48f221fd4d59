"""bench/stats.py: the arithmetic every benchmark figure goes through."""

from __future__ import annotations

import math

import pytest

from bench import stats


def test_median_odd_even_and_unsorted() -> None:
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5


def test_p95_interpolates_between_closest_ranks() -> None:
    xs = list(range(1, 21))  # 1..20: rank 0.95 * 19 = 18.05 -> 19 + 0.05
    assert stats.p95(xs) == pytest.approx(19.05)
    assert stats.p95([7.0]) == 7.0
    assert stats.quantile([1, 2], 0.0) == 1 and stats.quantile([1, 2], 1.0) == 2


def test_none_and_non_finite_values_are_ignored() -> None:
    assert stats.median([None, 1.0, math.nan, 3.0, math.inf]) == 2.0
    assert stats.median([]) is None
    assert stats.p95([None]) is None


def test_quantile_rejects_q_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        stats.quantile([1.0], 1.5)


def test_summary_fields_and_empty() -> None:
    s = stats.summary([0.5, 1.5, 1.0, 2.0])
    assert s == {"n": 4, "median": 1.25, "p95": 1.925, "min": 0.5, "max": 2.0, "mean": 1.25}
    assert stats.summary([])["n"] == 0 and stats.summary([])["median"] is None


def test_ratio_and_success_ratio() -> None:
    assert stats.ratio(50.0, 100.0) == 0.5
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 2.0) is None
    assert stats.success_ratio(3, 4) == 0.75
    assert stats.success_ratio(0, 0) is None
    with pytest.raises(ValueError):
        stats.success_ratio(5, 4)


def test_linear_fit_recovers_a_line() -> None:
    fit = stats.linear_fit([0, 1, 4, 9], [10.0, 10.5, 12.0, 14.5])
    assert fit["slope"] == pytest.approx(0.5)
    assert fit["intercept"] == pytest.approx(10.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert stats.linear_fit([1, 1], [2, 3])["slope"] is None
    with pytest.raises(ValueError):
        stats.linear_fit([1, 2], [1])


def test_growth_exponent_linear_and_quadratic() -> None:
    xs = [8, 16, 32, 64]
    assert stats.growth_exponent(xs, [2.0 * x for x in xs]) == pytest.approx(1.0)
    assert stats.growth_exponent(xs, [0.1 * x * x for x in xs]) == pytest.approx(2.0)
    assert stats.growth_exponent([8], [1.0]) is None


def test_idle_profile_groups_functions_by_subsystem() -> None:
    """cProfile's file names, grouped by the rule py-spy's frames use (bench/stacks.py)."""
    from bench.stacks import path_group

    site = "/opt/venv/lib/python3.11/site-packages"
    assert path_group(f"{site}/libp2p/pubsub/gossipsub.py") == "libp2p.pubsub"
    assert path_group(f"{site}/libp2p/abc.py") == "libp2p.abc"
    assert path_group(f"{site}/trio/_core/_run.py") == "trio"
    assert path_group("/work/main/node/chain/service.py") == "node.chain"
    assert path_group(f"{site}/base58/__init__.py") == "base58"
    assert path_group("~") == "builtins"
    assert path_group("/usr/lib/python3.11/logging/__init__.py") == "stdlib"


def test_scale_counts_consensus_running_only_if_the_top_grew_and_nobody_trails() -> None:
    from bench.scale import chain_progress

    ok = chain_progress({"a": 10, "b": 9}, {"a": 18, "b": 15})
    assert ok["running"] and ok["blocks_in_window"] == 8 and ok["behind"] == []
    stalled = chain_progress({"a": 10, "b": 10}, {"a": 10, "b": 10})
    assert not stalled["running"] and stalled["blocks_in_window"] == 0
    trailing = chain_progress({"a": 10, "b": 2}, {"a": 18, "b": 3})
    assert not trailing["running"] and trailing["behind"] == ["b"]
    unread = chain_progress({"a": 10, "b": None}, {"a": 18, "b": None})
    assert not unread["running"] and unread["behind"] == ["b"]
    assert chain_progress({"a": None}, {"a": None})["height_after"] is None
