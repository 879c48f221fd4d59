"""bench/side_by_side.py and the `impl` parameters it added to the bench modules, on fixed
inputs (no Docker, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import holepunch, side_by_side, sync, topogen
from harness.checks import Observation
from harness.model.testnet import build_testnet
from node.chain import codec
from node.chain.block import Block, CommitCert
from node.contract import Status

# --------------------------------------------------------------------------- topologies


def test_pairs_with_mixed_impls_validate(tmp_path: Path) -> None:
    doc = topogen.pairs(4, "cone", client_impls=side_by_side.split_impls(4))
    t = topogen.write(doc, tmp_path / "p.yaml")
    impl = {n.name: n.impl for n in t.nodes}
    assert impl == {
        "relay": "python",
        "a0": "rust",
        "a1": "rust",
        "a2": "python",
        "a3": "python",
        "b0": "rust",
        "b1": "rust",
        "b2": "python",
        "b3": "python",
    }
    # "python" is the default: left out of the document, as a hand-written topology would
    assert "impl" not in doc["nodes"]["a2"] and doc["nodes"]["a0"]["impl"] == "rust"


def test_pairs_and_sync_with_a_rust_relay_validate(tmp_path: Path) -> None:
    t = topogen.write(topogen.pairs(2, "cone", dcutr=False, relay_impl="rust"), tmp_path / "p.yaml")
    assert t.node("relay").impl == "rust" and t.node("a0").impl == "python"
    s = topogen.write(topogen.sync("rust"), tmp_path / "s.yaml")
    assert [n.name for n in s.nodes if n.impl == "rust"] == ["relay"]
    assert topogen.sync() == topogen.sync("python")


def test_pairs_rejects_a_wrong_impl_list() -> None:
    with pytest.raises(ValueError, match="2 entries for k=3"):
        topogen.pairs(3, "cone", client_impls=("rust", "python"))


def test_with_impls_checks_names_and_values() -> None:
    nodes: dict[str, Any] = {"x": {"role": "full", "impl": "rust"}}
    assert topogen.with_impls(nodes, {"x": "python"}) == {"x": {"role": "full"}}
    with pytest.raises(ValueError, match="impl 'go'"):
        topogen.with_impls(nodes, {"x": "go"})
    with pytest.raises(KeyError):
        topogen.with_impls(nodes, {"y": "rust"})


def test_split_impls() -> None:
    assert side_by_side.split_impls(2) == ("rust", "python")
    assert side_by_side.split_impls(4) == ("rust", "rust", "python", "python")
    for bad in (0, 1, 3):
        with pytest.raises(ValueError):
            side_by_side.split_impls(bad)


def test_expected_pairs_per_kind() -> None:
    assert side_by_side.expected_pairs(side_by_side.split_impls(4)) == {
        "python-python": 4,
        "rust-rust": 4,
        "python-rust": 8,
    }
    assert sum(side_by_side.expected_pairs(("rust", "python")).values()) == 4


def test_pairs_summary_counts_pairs_never_attempted() -> None:
    run = {"run": 0, "samples": [_pair("rust-rust", 0.2)], "reservations": [_resv("rust", 1.0)]}
    s = side_by_side.pairs_summary([run, {**run, "run": 1}], ("rust", "python"))
    assert s["dcutr"]["rust-rust"]["pairs"] == 2 and s["dcutr"]["rust-rust"]["pairs_expected"] == 2
    assert s["dcutr"]["python-rust"]["pairs"] == 0
    assert s["dcutr"]["python-rust"]["pairs_expected"] == 4
    assert s["reservation"]["rust"]["first_reservation_s"]["n"] == 2


def test_pair_kind_is_order_free() -> None:
    assert holepunch.pair_kind("rust", "python") == "python-rust"
    assert holepunch.pair_kind("python", "rust") == "python-rust"
    assert holepunch.pair_kind("rust", "rust") == "rust-rust"


# --------------------------------------------------------------------------- the rust store


def test_jsonl_store_is_the_rust_store_format(tmp_path: Path) -> None:
    tn = build_testnet(topogen.write(topogen.sync(), tmp_path / "s.yaml"))
    sync.build_chain(tn, 3, tmp_path)
    lines = (tmp_path / sync.RUST_STORE).read_bytes().splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert set(first) == {"chain_id"} and len(first["chain_id"]) == 64
    prev = None
    for h, line in enumerate(lines[1:], start=1):
        obj = json.loads(line)
        assert codec.encode(obj) == line  # canonical, byte for byte
        block, cert = Block.from_obj(obj["block"]), CommitCert.from_obj(obj["commit"])
        assert block.height == cert.height == h and cert.block_hash == block.hash
        assert prev is None or block.prev_hash == prev
        prev = block.hash


def test_jsonl_store_of_no_blocks() -> None:
    assert sync.jsonl_store(b"\x01" * 32, []) == b'{"chain_id":"' + b"01" * 32 + b'"}\n'


# --------------------------------------------------------------------------- comparison


def _resv(impl: str, s: float) -> dict[str, Any]:
    return {"node": f"{impl}{s}", "impl": impl, "first_reservation_s": s, "connect_s": s - 0.1}


def _pair(kind: str, up: float | None) -> dict[str, Any]:
    return {
        "initiator": "a",
        "peer": "b",
        "kind": kind,
        "outcome": "succeeded" if up is not None else "failed",
        "upgrade_s": up,
        "reasons": [] if up is not None else ["timeout"],
        "attempts": 1,
    }


def _results() -> dict[str, Any]:
    resv = [_resv("python", 0.4), _resv("python", 0.6), _resv("rust", 0.2), _resv("rust", 0.3)]
    resv.append({"node": "late", "impl": "rust", "error": "no reservation_accepted event"})
    pairs = [_pair("python-python", 0.5), _pair("rust-rust", 0.25), _pair("rust-rust", 0.35)]
    pairs += [_pair("python-rust", 0.6), _pair("python-rust", None)]

    def sync_of(relayed: float) -> dict[str, Any]:
        return {
            "sync_relayed_blocks_per_s": {"n": 1, "median": relayed, "p95": relayed},
            "sync_direct_blocks_per_s": {"n": 1, "median": 3000.0, "p95": 3000.0},
        }

    def cost(slope: float) -> dict[str, Any]:
        return {
            "cpu_cores_per_circuit": slope,
            "cpu_cores_at_zero": 0.02,
            "cpu_fit_r2": 0.9,
            "mem_mib_per_circuit": 0.1,
            "mem_mib_at_zero": 70.0,
            "mem_fit_r2": 0.5,
            "windows": 4,
        }

    return {
        "pairs": {
            "reservation": side_by_side.reservation_by_impl(resv),
            "dcutr": side_by_side.dcutr_by_kind(pairs),
        },
        "sync": {"python": sync_of(2500.0), "rust": sync_of(2000.0)},
        "relay_cost": {"python": cost(0.03), "rust": cost(0.01)},
    }


def test_reservation_and_dcutr_split_by_impl() -> None:
    r = _results()["pairs"]
    assert r["reservation"]["python"]["first_reservation_s"]["median"] == pytest.approx(0.5)
    assert r["reservation"]["rust"]["first_reservation_s"]["n"] == 2
    assert r["reservation"]["rust"]["without_reservation"] == ["late"]
    after = r["reservation"]["rust"]["connected_to_reservation_s"]
    assert after["n"] == 2 and after["median"] == pytest.approx(0.1)
    d = r["dcutr"]
    assert d["rust-rust"]["dcutr_upgrade_s"]["median"] == pytest.approx(0.3)
    assert (d["python-rust"]["pairs"], d["python-rust"]["succeeded"]) == (2, 1)
    assert d["python-python"]["dcutr_success_ratio"] == 1.0


def test_comparison_rows_are_ours_over_rust() -> None:
    rows = {r["figure"]: r for r in side_by_side.comparison(_results())}
    resv = rows["first reservation (node start -> reservation_accepted)"]
    assert resv["ratio"] == pytest.approx(0.5 / 0.25)
    assert resv["python"]["n"] == 2 and resv["rust"]["spread"] == "p95 0.295, range 0.2-0.3"
    assert (
        rows["the relay's process started after the client's (context, not a cost)"]["ratio"]
        is None
    )
    pp = rows["DCUtR upgrade, python-python vs rust-rust pairs"]
    assert pp["ratio"] == pytest.approx(0.5 / 0.3, abs=1e-3)
    assert pp["python"]["spread"] == "1 sample"
    note = rows["DCUtR upgrade, python-rust vs rust-rust pairs"]["note"]
    assert "python-rust 1/2/?, rust-rust 2/2/?" in note
    assert rows["relayed sync through the relay (DCUtR off)"]["ratio"] == 1.25
    cpu = rows["relay CPU per open circuit"]
    assert cpu["ratio"] == 3.0 and cpu["python"]["n"] == 4
    assert cpu["python"]["spread"] == "least squares, r^2 0.90"


def test_comparison_leaves_out_what_was_not_measured() -> None:
    assert side_by_side.comparison({}) == []
    only_ours = {"sync": {"python": {"sync_relayed_blocks_per_s": {"n": 1, "median": 1.0}}}}
    assert side_by_side.comparison(only_ours) == []
    empty = side_by_side.row("x", "s", {"n": 0, "median": None}, {"n": 1, "median": 2.0}, "c")
    assert empty["ratio"] is None and empty["python"]["spread"] == ""


def test_markdown_and_write(tmp_path: Path) -> None:
    doc = {
        "run_id": "T1",
        "commit": "abc",
        "results": _results(),
        "errors": {"sync": "boom"},
        "machine": {"before": {"loadavg": [1.5, 1.0, 0.5]}},
    }
    doc["comparison"] = side_by_side.comparison(doc["results"])
    md = side_by_side.markdown(doc)
    assert "| relay CPU per open circuit (cores) | 0.03 (4) | 0.01 (4) | 3 |" in md
    assert "load before 1.5/1/0.5, after ?" in md and "- sync: boom" in md
    paths = side_by_side.write(doc, tmp_path)
    assert {p.name for p in paths} == {
        "side-by-side-T1.json",
        "side-by-side-T1.md",
        "side-by-side-latest.json",
        "side-by-side-latest.md",
    }
    assert json.loads((tmp_path / "side-by-side-T1.json").read_text())["run_id"] == "T1"


def test_render_rebuilds_the_table(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    results = _results()
    run = {"run": 0, "samples": [_pair("rust-rust", 0.2)], "reservations": [_resv("rust", 1.0)]}
    results["pairs"].update(runs=[run], client_impls_per_side=["rust", "python"])
    src.write_text(json.dumps({"run_id": "T2", "results": results, "errors": {}}))
    assert side_by_side.main(["--render", str(src), "--out", str(tmp_path / "o")]) == 0
    again = json.loads((tmp_path / "o" / "side-by-side-T2.json").read_text())
    assert len(again["comparison"]) == 3 + 2 + 2 + 4
    assert again["results"]["pairs"]["dcutr"]["rust-rust"]["pairs_expected"] == 1


def test_parse_args_rejects_odd_pairs() -> None:
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--pairs", "3"])


def test_without_attempt_names_pairs_and_their_connections(tmp_path: Path) -> None:
    tn = build_testnet(topogen.write(topogen.pairs(2, "cone"), tmp_path / "p.yaml"))
    pid = {n.name: n.peer_id for n in tn.nodes}

    def st(conns: list[tuple[str, str]]) -> dict[str, Any]:
        return {"connections": [{"peer": pid[p], "kind": k} for p, k in conns]}

    obs = Observation(
        t=0.0,
        nodes={n.name: n for n in tn.nodes},
        status={
            "a0": Status.from_json(st([("b1", "direct")])),
            "a1": Status.from_json(st([])),
            "b0": Status.from_json(st([])),
            "b1": Status.from_json(st([("a0", "direct"), ("a0", "relayed")])),
        },
    )
    rows = [{"initiator": "b0", "peer": "a0"}, {"initiator": "a1", "peer": "b1"}]
    got = holepunch.without_attempt(obs, rows)
    assert got == [
        {"a": "a0", "b": "b1", "a_sees": ["direct"], "b_sees": ["direct", "relayed"]},
        {"a": "a1", "b": "b0", "a_sees": [], "b_sees": []},
    ]
