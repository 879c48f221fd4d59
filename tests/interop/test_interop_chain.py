"""Our chain across implementations: rust validators beside Python ones, and block sync
/sentrynet/sync/1.0.0 both ways, on loopback with real processes.

Agreement is checked on every node's own store, every height (testkit.chain: the rust
node's chain.jsonl is read and its blocks hashed by the Python code). Waits are polls with
deadlines (wait_for / wait_until).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rustnode import launch_rust, start_rust

from node.chain.block import ValidatorSet
from testkit.chain import (
    chain,
    chain_section,
    check_agreement,
    height,
    make_key,
    store_hashes,
    validator_configs,
)
from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until
from testkit.sync_probe import check_answers, send_bad_sync_requests

pytestmark = pytest.mark.interop

INTERVAL = 0.3


def data_dirs(nodes: list[NodeProc]) -> dict[str, str]:
    return {n.name: n.config["node"]["data_dir"] for n in nodes}


def events_of(node: NodeProc, kind: str) -> list[dict[str, Any]]:
    return [e for e in node.events() if e["type"] == kind]


def mixed_validators(
    procs: NodeProcs, rust_node: Path
) -> tuple[list[NodeProc], list[NodeProc], dict[str, str]]:
    """Two Python (py0, py1) and two rust (rs0, rs1) validators in a full mesh, without
    peer exchange (both implementations speak it: with it, a late node one validator
    knows would be learnt and dialled by all of them)."""
    nodes, ids = validator_configs(procs, ["py0", "rs0", "py1", "rs1"], INTERVAL, False)
    py = [n for n in nodes if n.name.startswith("py")]
    rs = [n for n in nodes if n.name.startswith("rs")]
    for node in py:
        procs.launch(node, wait_ready=False)
    for node in rs:
        launch_rust(node, rust_node, wait_ready=False)
    for node in nodes:
        wait_for(node, lambda s: s.get("ready"), "ready node", 30)
    return py, rs, ids


def follower_sections(peers: list[NodeProc], ids: dict[str, str]) -> dict[str, Any]:
    return {
        "node": {"role": "full"},
        "p2p": {"persistent_peers": [f"{p.p2p_addr}/p2p/{ids[p.name]}" for p in peers]},
        "chain": chain_section(ids, INTERVAL),
    }


def test_python_and_rust_validators_commit_and_agree(rust_node: Path, tmp_path: Path) -> None:
    """(a) 2 Python + 2 rust validators: 4 of 4, quorum 3, so no block is decided without a
    rust vote; every proposer takes its turn (rotation), all agree at every height."""
    with NodeProcs(tmp_path) as procs:
        py, rs, ids = mixed_validators(procs, rust_node)
        vals = py + rs
        for v in vals:
            wait_for(v, lambda s: height(s) >= 8, "height >= 8 with mixed validators", 120)
        for v in rs:
            st = chain(v.status())
            assert st["voting"] and st["validators"] == 4 and st["error"] is None, st
        committed = events_of(rs[0], "block_committed")
        proposers = {e["proposer"] for e in committed}
        assert {ids["rs0"], ids["rs1"]} & proposers and {ids["py0"], ids["py1"]} & proposers, (
            committed
        )
        assert all(e["via"] in ("consensus", "gossip") for e in committed)
        nodes, heights = check_agreement(data_dirs(vals))
        assert nodes == 4 and heights >= 8
        common = min(height(v.status()) for v in vals)
        print(f"mixed validators agree on {heights} heights; common tip {common}")
        for v in vals:
            assert v.status()["rejected"]["consensus"] == 0, v.name


def test_rust_full_node_syncs_from_python_validators(rust_node: Path, tmp_path: Path) -> None:
    """(b) A rust full node started late catches up from Python validators over
    /sentrynet/sync/1.0.0, then follows gossip."""
    with NodeProcs(tmp_path) as procs:
        vals, ids = validator_configs(procs, ["v0", "v1", "v2", "v3"], INTERVAL)
        for v in vals:
            procs.launch(v, wait_ready=False)
        for v in vals:
            wait_for(v, lambda s: height(s) >= 20, "python validators at height 20", 120)
        late = start_rust(procs, rust_node, "rlate", **follower_sections(vals, ids))
        target = max(height(v.status()) for v in vals)
        wait_for(late, lambda s: height(s) >= target, f"rust node synced to {target}", 60)
        done = wait_until(lambda: events_of(late, "sync_completed"), "sync_completed", 30)[0]
        assert done["from_height"] == 1 and done["to_height"] >= target - 1, done
        assert set(done["peers"]) <= set(ids.values()) and done["peers"], done
        st = chain(late.status())
        assert st["sync_peers"] and sum(p["blocks"] for p in st["sync_peers"]) >= target - 1, st
        assert not st["voting"]
        # synced blocks are not announced one by one; followed ones are. Blocks decided
        # while the session runs may arrive by gossip meanwhile and are announced (the
        # session skips them), so a few announced heights may fall inside its range.
        wait_for(late, lambda s: chain(s)["commits"] >= 3, "rust node follows gossip", 30)
        followed = [(e["height"], e.get("via")) for e in events_of(late, "block_committed")]
        heights = [h for h, _ in followed]
        assert len(heights) == len(set(heights)), followed
        in_session = [h for h in heights if h <= done["to_height"]]
        span = done["to_height"] - done["from_height"] + 1
        assert len(in_session) < span / 4, (done, followed[:8])
        check_agreement(data_dirs([*vals, late]))


def test_python_full_node_syncs_from_rust_node(rust_node: Path, tmp_path: Path) -> None:
    """(c) A Python full node started late whose only peer is a rust node (serve_sync) syncs
    the chain from it."""
    with NodeProcs(tmp_path) as procs:
        py, rs, ids = mixed_validators(procs, rust_node)
        for v in py + rs:
            wait_for(v, lambda s: height(s) >= 20, "mixed validators at height 20", 120)
        sections = follower_sections([rs[0]], ids)
        sections["p2p"]["discovery"] = False  # rs0 answers px: keep it the only peer
        late = procs.start("plate", **sections)
        target = height(rs[0].status())
        wait_for(late, lambda s: height(s) >= target, f"python node synced to {target}", 60)
        done = wait_until(lambda: events_of(late, "sync_completed"), "sync_completed", 30)[0]
        assert done["peers"] == [ids["rs0"]], done
        assert done["from_height"] == 1 and done["to_height"] >= target - 1, done
        served = chain(late.status())["sync_peers"]
        assert [p["peer"] for p in served] == [ids["rs0"]], served
        check_agreement(data_dirs([*py, *rs, late]))


def test_rust_rejects_malformed_sync_requests_and_keeps_serving(
    rust_node: Path, tmp_path: Path
) -> None:
    """(d) Malformed requests to the rust node's sync server get error answers, are counted
    in rejected.sync (message_rejected events), and the node keeps serving and committing."""
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("rsolo")
        ids = {"rsolo": make_key(node.config["node"]["key_file"])}
        node = start_rust(
            procs, rust_node, "rsolo", node={"role": "validator"}, chain=chain_section(ids, 0.2)
        )
        wait_for(node, lambda s: height(s) >= 3, "solo rust validator commits", 60)
        vset = ValidatorSet(list(ids.items()))
        check_answers(send_bad_sync_requests(node, ids["rsolo"]), vset)
        st = node.status()
        assert st["rejected"]["sync"] >= 5, st["rejected"]
        reasons = [e["reason"] for e in events_of(node, "message_rejected")]
        assert reasons.count("malformed") >= 4 and reasons.count("bad_frame") >= 1, reasons
        h = height(st)
        wait_for(node, lambda s: height(s) >= h + 3, "commits after the bad requests", 30)


def test_rust_validator_restart_keeps_its_chain(rust_node: Path, tmp_path: Path) -> None:
    """The rust node's store (data_dir/chain.jsonl) survives a restart: same blocks, and
    the validator commits on top of them."""
    with NodeProcs(tmp_path) as procs:
        node = procs.write_config("rkeep")
        ids = {"rkeep": make_key(node.config["node"]["key_file"])}
        node = start_rust(
            procs, rust_node, "rkeep", node={"role": "validator"}, chain=chain_section(ids, 0.2)
        )
        wait_for(node, lambda s: height(s) >= 4, "solo rust validator commits", 60)
        node.stop()
        before = store_hashes(node.config["node"]["data_dir"])
        assert len(before) >= 4
        launch_rust(node, rust_node)
        st = wait_for(node, lambda s: s if height(s) >= max(before) + 2 else None, "more", 60)
        assert chain(st)["error"] is None
        after = store_hashes(node.config["node"]["data_dir"])
        assert {h: after[h] for h in before} == before
