"""bench/report.py, bench/plot.py, bench/topogen.py and the event arithmetic of the
measurements, on fixed inputs (no Docker, no timing assertions)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from bench import holepunch, plot, report, reservation, scale, topogen
from harness.checks import Observation
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import TopologyError
from node.contract import Event, Status


def _testnet(doc: dict[str, Any], tmp_path: Path) -> Testnet:
    return build_testnet(topogen.write(doc, tmp_path / "t.yaml"))


def _obs(tn: Testnet, nodes: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> Observation:
    """What bench.live.collect reads: per node its /status and /events JSON, typed."""
    return Observation(
        t=0.0,
        nodes={n.name: n for n in tn.nodes},
        status={name: Status.from_json(st) for name, (st, _) in nodes.items()},
        events={name: [Event.from_json(e) for e in evs] for name, (_, evs) in nodes.items()},
    )


# --------------------------------------------------------------------------- topologies


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_scale_topologies_validate(n: int, tmp_path: Path) -> None:
    p = topogen.networks_for(n)
    topo = topogen.write(topogen.scale(n, p), tmp_path / "s.yaml")
    assert len(topo.nodes) == n
    assert len([x for x in topo.networks if not x.public]) == p
    assert len(topo.validators) == topogen.VALIDATORS
    sentries = [x for x in topo.nodes if x.role == "sentry"]
    assert len(sentries) == p and all("public" in s.addresses for s in sentries)


@pytest.mark.parametrize("n", [8, 64, 128])
def test_a_sentry_has_room_for_every_client_that_reserves_on_it_twice_over(n: int) -> None:
    doc = topogen.scale(n, topogen.networks_for(n))
    for name, node in doc["nodes"].items():
        if node["role"] != "sentry":
            continue
        served = [
            c
            for c, x in doc["nodes"].items()
            if x["role"] != "sentry" and name in x["relay_servers"]
        ]
        budget = node["config"]["p2p"]["max_connections"]
        assert budget >= max(topogen.DEFAULT_BUDGET, 2 * len(served)), (name, len(served))


def test_networks_for_scale_points() -> None:
    assert [topogen.networks_for(n) for n in (8, 16, 32, 64, 128)] == [2, 2, 4, 8, 8]


def test_scale_rejects_too_few_nodes() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        topogen.scale(3, 2)


def test_pairs_and_sync_topologies_validate(tmp_path: Path) -> None:
    t = topogen.write(topogen.pairs(3, "symmetric", dcutr=False), tmp_path / "p.yaml")
    assert {n.name for n in t.nodes} == {"relay", "a0", "a1", "a2", "b0", "b1", "b2"}
    assert t.node("a0").config == {"dcutr": {"enabled": False}}
    assert t.network("a").nat == "symmetric"
    s = topogen.write(topogen.sync(), tmp_path / "s.yaml")
    assert s.network("b").nat == "symmetric" and s.node("sync-relay").addresses.keys() == {"b"}
    assert s.node("relay").serve_sync is False  # else sync-relay syncs from it directly


def test_write_reports_invalid_topology(tmp_path: Path) -> None:
    doc = topogen.pairs(1, "cone")
    doc["networks"]["a"]["nat"] = "coen"
    with pytest.raises(TopologyError, match="did you mean 'cone'"):
        topogen.write(doc, tmp_path / "bad.yaml")


# --------------------------------------------------------------------------- event arithmetic


def test_reservation_samples_from_events(tmp_path: Path) -> None:
    tn = _testnet(topogen.pairs(1, "cone"), tmp_path)
    relay = tn.node("relay").peer_id
    data = {
        "a0": (
            {"started_at": 100.0},
            [
                {"t": 100.4, "type": "connection_opened", "peer": relay},
                {"t": 100.6, "type": "relay_discovered", "peer": relay},
                {
                    "t": 100.9,
                    "type": "reservation_denied",
                    "relay": relay,
                    "reason": "no answer within 5s",
                },
                {
                    "t": 101.1,
                    "type": "reservation_denied",
                    "relay": relay,
                    "reason": "no answer within 10s",
                },
                {
                    "t": 101.2,
                    "type": "reservation_denied",
                    "relay": relay,
                    "reason": "StreamReset: x",
                },
                {"t": 101.5, "type": "reservation_accepted", "relay": relay},
                {"t": 109.0, "type": "reservation_denied", "relay": relay, "reason": "later"},
            ],
        ),
        "b0": ({"started_at": 50.0}, []),
    }
    rows = reservation.samples(_obs(tn, data))
    by = {r["node"]: r for r in rows}
    assert by["a0"]["denied_before"] == 3
    assert by["a0"]["denied_reasons"] == {"no answer within Ns": 2, "StreamReset": 1}
    summary = reservation.summarize(rows)
    assert summary["denied_reasons_before_first"] == {"no answer within Ns": 2, "StreamReset": 1}
    assert (
        "by reason: no answer within Ns 2, StreamReset 1"
        in report.where_time_goes({"reservation": summary})[0]
    )
    assert by["a0"]["first_reservation_s"] == pytest.approx(1.5)
    assert by["a0"]["connect_s"] == pytest.approx(0.4)
    assert by["a0"]["relay_discovered_s"] == pytest.approx(0.6)
    assert "error" in by["b0"]
    s = reservation.summarize(rows)
    assert s["first_reservation_s"]["n"] == 1 and s["without_reservation"] == ["b0"]


def test_last_needed_reservation_counts_distinct_relays(tmp_path: Path) -> None:
    tn = _testnet(topogen.scale(8, 2), tmp_path)
    data: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for n in tn.nodes:
        evs = [
            {"t": 10.0, "type": "reservation_accepted", "relay": "r1"},
            {"t": 11.0, "type": "reservation_accepted", "relay": "r1"},  # a refresh
        ]
        if n.role != "sentry":  # clients need two relays, sentries one
            evs.append({"t": 12.5, "type": "reservation_accepted", "relay": "r2"})
        data[n.name] = ({"started_at": 1.0}, evs)
    obs = _obs(tn, data)
    t, missing = scale.last_needed_reservation(obs)
    assert (t, missing) == (12.5, [])
    obs.events["n00"].pop()
    assert scale.last_needed_reservation(obs)[1] == ["n00"]


def test_holepunch_pair_samples(tmp_path: Path) -> None:
    tn = _testnet(topogen.pairs(2, "cone"), tmp_path)
    pid = {n.name: n.peer_id for n in tn.nodes}

    def rec(peer: str, at: float, outcome: str, **kw: Any) -> dict[str, Any]:
        return {"peer": pid[peer], "role": "initiator", "at": at, "outcome": outcome, **kw}

    data = {
        "a0": (
            {
                "dcutr": [
                    rec(
                        "b0",
                        10.2,
                        "failed",
                        reason="timeout",
                        rtt_s=0.05,
                        final=False,
                        duration_s=5.0,
                        detail="no direct connection within 5.0s",
                        phases={"stream": 0.01, "dial": 0.1},
                        attempt=1,
                    ),
                    rec("b0", 16.0, "succeeded", duration_s=0.3, rtt_s=0.04, attempt=2),
                    rec("b1", 10.1, "failed", reason="timeout", rtt_s=0.05, final=True),
                ]
            },
            [
                {"t": 10.0, "type": "connection_opened", "peer": pid["b0"], "kind": "relayed"},
                {"t": 16.3, "type": "dcutr_succeeded", "peer": pid["b0"]},
            ],
        ),
        "b0": (
            {
                "dcutr": [
                    rec("a1", 5.0, "started"),
                    {"peer": pid["a0"], "role": "responder", "at": 10.3, "outcome": "failed"},
                ]
            },
            [],
        ),
    }
    rows = holepunch.pair_samples(_obs(tn, data))
    by = {(r["initiator"], r["peer"]): r for r in rows}
    ok = by[("a0", "b0")]
    assert ok["outcome"] == "succeeded" and ok["attempts"] == 2
    assert ok["upgrade_s"] == pytest.approx(6.3)
    assert ok["first_attempt_after_s"] == pytest.approx(0.2)
    assert ok["failed_attempts"] == [
        {
            "attempt": 1,
            "reason": "timeout",
            "duration_s": 5.0,
            "phases": {"stream": 0.01, "dial": 0.1},
            "detail": "no direct connection within 5.0s",
        }
    ]
    assert ok["target_s"] == pytest.approx(1.12) and ok["target_met"] is False
    assert [(x["node"], x["role"], x["at_s"]) for x in ok["sessions"]] == [
        ("a0", "initiator", pytest.approx(0.2)),
        ("b0", "responder", pytest.approx(0.3)),
        ("a0", "initiator", pytest.approx(6.0)),
    ]
    assert by[("a0", "b1")]["outcome"] == "failed"
    assert [x["node"] for x in by[("a0", "b1")]["sessions"]] == ["a0"]
    assert by[("b0", "a1")]["outcome"] == "pending"
    s = holepunch.summarize(rows)
    assert s["pairs"] == 3 and s["succeeded"] == 1
    assert s["dcutr_success_ratio"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["failure_reasons"] == {"timeout": 1, "(none yet)": 1}
    assert s["target_met"] == "0/1"


# --------------------------------------------------------------------------- report


def _results() -> dict[str, Any]:
    return {
        "reservation": {
            "first_reservation_s": {"n": 6, "median": 0.8, "p95": 2.5},
            "phases_s": {
                "start_to_relay_connection": {"median": 0.2},
                "start_to_relay_discovered": {"median": 0.3},
            },
        },
        "holepunch": {
            "cone": {
                "pairs": 4,
                "succeeded": 4,
                "dcutr_success_ratio": 1.0,
                "target_met": "4/4",
                "dcutr_upgrade_s": {"n": 4, "median": 0.4, "p95": 0.6},
                "runs": [{"samples": [{"upgrade_s": 0.4, "punch_s": 0.2}]}],
            },
            "symmetric": {"pairs": 4, "succeeded": 0, "dcutr_success_ratio": 0.0},
        },
        "sync": {
            "sync_direct_blocks_per_s": {"n": 1, "median": 400.0, "p95": 400.0},
            "sync_relayed_blocks_per_s": {"n": 1, "median": 100.0, "p95": 100.0},
            "relayed_over_direct": 0.25,
        },
        "scale": {
            "curve": [{"nodes": 8, "ready_s": {"n": 1, "median": 30.0, "p95": 30.0}}],
            "points": [
                {
                    "nodes": 8,
                    "private_networks": 2,
                    "ready_s": 30.0,
                    "phases_s": {
                        "compose_up_to_all_reservations": 30.0,
                        "compose_up_to_all_apis": 20.0,
                        "compose_up_to_last_node_started": 15.0,
                    },
                },
                {"nodes": 64, "private_networks": 8, "error": "timed out waiting"},
            ],
        },
        "warm": {"testnet_sentry_warm_s": {"n": 1, "median": 75.0, "p95": 75.0}, "runs": []},
    }


def test_targets_verdicts() -> None:
    t = {x["target"].split(" ")[0]: x for x in report.targets(_results())}
    assert t["warm"]["verdict"] == "MISSED"
    assert t["first"]["verdict"] == "MISSED"  # p95 2.5 s > 2 s
    assert t["DCUtR"]["verdict"] == "met"
    assert t["relayed"]["verdict"] == "MISSED"  # 0.25 < 0.5
    assert t["64"]["verdict"] == "MISSED" and "timed out" in t["64"]["measured"]
    assert {x["verdict"] for x in report.targets({})} == {"not measured"}


def test_markdown_has_figures_targets_and_notes() -> None:
    res = _results()
    doc = {
        "run_id": "r1",
        "headline": report.headline(res),
        "targets": report.targets(res),
        "notes": report.where_time_goes(res),
        "machine": {"before": {"nproc": 2, "loadavg": [1.0, 1.0, 1.0]}},
    }
    md = report.markdown(doc)
    assert "| first_reservation_s | 0.8 | 2.5 | 6 | s | node monotonic |" in md
    assert "| relayed / direct sync | 0.25 |" in md
    assert "| ready_s, 8 nodes | 30 | 30 | 1 | s |" in md
    assert "MISSED" in md and "Where the time goes:" in md
    assert "scale 64 nodes: timed out waiting" in md
    assert "CPU probe" not in md  # not measured: nothing said
    doc["machine"]["before"]["cpu_probe_s"] = 0.42
    assert "2 cores (CPU probe 0.42 CPU-s, lower is faster" in report.markdown(doc)


def test_cpu_probe_is_process_time_of_a_fixed_loop() -> None:
    """The probe runs the same loop each time and reports a positive CPU time; the
    median of rounds, so one round slowed by a neighbour does not make the figure."""
    from bench import live

    probe = live.cpu_probe_s(rounds=1)
    assert 0 < probe < 30
    assert "cpu_probe_s" not in live.machine_state()  # only asked for before a run


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", data[8:16])
    assert tag == b"IHDR"
    body = data[12 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(body) == crc
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_plots_write_valid_pngs(tmp_path: Path) -> None:
    names = report.plots({"results": _results()}, tmp_path, "r1")
    assert names == ["r1-scale.png", "r1-holepunch.png"]
    for n in names:
        assert _png_size((tmp_path / n).read_bytes()) == (720, 440)


def test_plots_of_degenerate_data_keep_the_requested_size(tmp_path: Path) -> None:
    """No series, or one whose values are all equal, still make a PNG of the asked size."""
    line = plot.line_chart(tmp_path / "l.png", [], "empty", "x", "y", size=(400, 300))
    hist = plot.histogram(tmp_path / "h.png", [("zeros", [0.0, 0.0])], "flat", "x", size=(400, 300))
    for path in (line, hist):
        assert _png_size(path.read_bytes()) == (400, 300)


def test_write_results_files(tmp_path: Path) -> None:
    res = _results()
    doc = {"run_id": "r2", "results": res, "headline": report.headline(res), "targets": []}
    paths = report.write(doc, tmp_path, "r2")
    assert {p.name for p in paths} == {"r2.json", "r2.md", "latest.json", "latest.md"}
    assert (tmp_path / "latest.md").read_text() == (tmp_path / "r2.md").read_text()


def test_reservation_pooled_from_other_testnets() -> None:
    res = {
        "scale": {
            "points": [
                {"nodes": 8, "reservation_samples": [{"node": "n0", "first_reservation_s": 1.0}]}
            ]
        },
        "holepunch": {
            "cone": {"runs": [{"reservations": [{"node": "a0", "first_reservation_s": 3.0}]}]}
        },
    }
    pooled = reservation.pooled(res)
    assert pooled is not None
    assert pooled["first_reservation_s"]["n"] == 2
    assert pooled["first_reservation_s"]["median"] == 2.0
    assert {r["source"] for r in pooled["samples"]} == {"scale8", "pairs-cone"}
    assert reservation.pooled({}) is None


def test_idle_target_reads_the_median_per_node_and_names_each_role() -> None:
    from bench import idle

    rows = [
        {"node": "v0", "role": "validator", "cores": 0.02},
        {"node": "v1", "role": "validator", "cores": 0.03},
        {"node": "s0", "role": "sentry", "cores": 0.05},
    ]
    res = {"idle": {**idle.summarize(rows), "runs": [{}]}}
    (t,) = [x for x in report.targets(res) if x["target"].startswith("idle")]
    assert t["verdict"] == "met" and "0.030 cores" in t["measured"]
    assert "sentry 0.050" in t["measured"] and "validator 0.025" in t["measured"]
    rows.append({"node": "s1", "role": "sentry", "cores": 0.07})
    (t,) = [
        x for x in report.targets({"idle": idle.summarize(rows)}) if x["target"].startswith("idle")
    ]
    assert t["verdict"] == "MISSED"
    (t,) = [
        x
        for x in report.targets({"idle": {"runs": [{"error": "consensus stalled"}]}})
        if x["target"].startswith("idle")
    ]
    assert t["verdict"] == "MISSED" and "consensus stalled" in t["measured"]


def test_scale_summary_keeps_the_compose_curve_and_gives_engine_ratios() -> None:
    """--engines compose,swarm: the headline curve stays compose's; each other engine gets
    its curve and, per size, its medians over compose's (ready_s, compose up -> APIs)."""
    pts = [
        {"nodes": 8, "engine": "compose", "ready_s": 10.0, "up_to_api_s": 5.0, "prepare_s": 1.0},
        {"nodes": 8, "engine": "compose", "ready_s": 12.0, "up_to_api_s": 7.0, "prepare_s": 1.0},
        {"nodes": 8, "engine": "swarm", "ready_s": 13.2, "up_to_api_s": 6.0, "prepare_s": 2.0},
        {"nodes": 8, "engine": "swarm", "ready_s": 11.0, "up_to_api_s": 6.0, "prepare_s": 2.0},
    ]
    out = scale.summarize(pts)
    assert [c["nodes"] for c in out["curve"]] == [8]
    assert out["curve"][0]["ready_s"]["median"] == 11.0  # compose only
    assert out["points"] == pts
    (row,) = out["over_compose"]["swarm"]
    assert row["ready_s"] == {"median": 12.1, "compose_median": 11.0}
    assert row["ready_s_ratio"] == 1.1
    assert row["up_to_api_s_ratio"] == 1.0 and row["prepare_s_ratio"] == 2.0
    assert set(out["engines"]) == {"compose", "swarm"}
    assert "over_compose" not in scale.summarize(pts[:2])  # one engine: as before


def test_a_bench_timeout_names_a_saturated_machine() -> None:
    from bench.live import with_load
    from harness.infra.load import parse_loadavg
    from harness.wait import WaitTimeout

    exc = WaitTimeout("reservations", 888.0, "8/128 clients", "a relay unreachable", 275, 889.8)
    busy = with_load(exc, parse_loadavg("76.25 77.6 60.1 3/900 1", cores=2))
    assert "this machine is saturated (load average 76.25 on 2 core(s)" in str(busy)
    assert "else a relay unreachable" in str(busy) and "8/128 clients" in str(busy)
    assert with_load(exc, parse_loadavg("1.5 1.2 1.0 3/900 1", cores=2)) is exc
    assert with_load(exc, None) is exc
