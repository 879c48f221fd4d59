"""`sentrynet capabilities`'s reading of probe results (the probing itself: tests/docker)."""

from __future__ import annotations

from harness.run import capabilities

ALL_OK = {name: (True, "") for name in capabilities.PROBES}


def test_netem_missing_but_the_delayer_works_is_latency_available() -> None:
    results = {**ALL_OK, "netem": (False, "Error: Specified qdisc kind is unknown.")}
    conds = capabilities.conditions(results, (True, ""))
    assert capabilities.missing(conds) == []
    table = capabilities.render(conds)
    assert "tc netem: no (Error: Specified qdisc kind is unknown.)" in table
    assert "NFQUEUE delayer: works" in table


def test_no_latency_at_all_and_no_timeouts_are_named_missing() -> None:
    results = {**ALL_OK, "netem": (False, "unknown"), "nfqueue": (False, "no queue")}
    conds = capabilities.conditions(results, (False, "the engine refused sysctl"))
    assert capabilities.missing(conds) == [
        "latency, jitter (latency_ms, jitter_ms, perturb latency)",
        "mapping_timeout_s",
    ]


def test_a_kernel_without_tbf_is_named_missing_rate() -> None:
    results = {**ALL_OK, "tbf": (False, "Error: Specified qdisc kind is unknown.")}
    conds = capabilities.conditions(results, (True, ""))
    assert capabilities.missing(conds) == ["rate (rate_kbit, perturb rate)"]
    assert "tc tbf: no (Error: Specified qdisc kind is unknown.)" in capabilities.render(conds)
