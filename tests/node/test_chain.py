"""The chain workload on real node processes over loopback.

Four validators commit blocks over gossip; a node started late catches up by sync and
then follows gossip; a restarted validator keeps its store, one restarted with an empty
store catches up by sync; no two nodes ever hold different blocks at one height (checked
on every node's sqlite store, every height).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from testkit.chain import (
    chain,
    chain_section,
    check_agreement,
    height,
    validator_configs,
)
from testkit.procs import NodeProc, NodeProcs, wait_for, wait_until

pytestmark = pytest.mark.loopback

INTERVAL = 0.3


def start_validators(
    procs: NodeProcs, n: int = 4, interval: float = INTERVAL, names: list[str] | None = None
) -> tuple[list[NodeProc], dict[str, str]]:
    """Write configs (for addresses), create keys (for peer ids), then start n validators
    in a full mesh of persistent peers."""
    nodes, ids = validator_configs(procs, names or [f"v{i}" for i in range(n)], interval)
    for node in nodes:
        procs.launch(node, wait_ready=False)
    for node in nodes:
        wait_for(node, lambda s: s.get("ready"), "ready node", 30)
    return nodes, ids


def start_follower(
    procs: NodeProcs,
    name: str,
    peers: list[NodeProc],
    ids: dict[str, str],
    role: str = "full",
    **extra: dict[str, Any],
) -> NodeProc:
    sections: dict[str, dict[str, Any]] = {
        "node": {"role": role},
        "p2p": {"persistent_peers": [f"{p.p2p_addr}/p2p/{ids[p.name]}" for p in peers]},
        "chain": chain_section(ids, INTERVAL),
    }
    for key, vals in extra.items():
        sections.setdefault(key, {}).update(vals)
    return procs.start(name, **sections)


def min_height(nodes: list[NodeProc]) -> int:
    return min(height(n.status()) for n in nodes)


def wait_height(nodes: list[NodeProc], target: int, timeout: float = 60) -> None:
    for node in nodes:
        wait_for(node, lambda s: height(s) >= target, f"chain height >= {target}", timeout)


def data_dirs(nodes: list[NodeProc]) -> dict[str, str]:
    return {n.name: n.config["node"]["data_dir"] for n in nodes}


def sync_events(node: NodeProc) -> list[dict[str, Any]]:
    return [e for e in node.events() if e["type"] == "sync_completed"]


def test_validators_commit_late_node_syncs_then_follows(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        vals, ids = start_validators(procs)
        wait_height(vals, 3, timeout=90)
        h0, t0 = min_height(vals), time.monotonic()
        wait_height(vals, h0 + 15, timeout=90)
        rate = (min_height(vals) - h0) / (time.monotonic() - t0)
        print(f"4 validators on loopback, block_interval {INTERVAL}s: {rate:.2f} blocks/s")
        for v in vals:
            st = v.status()
            assert chain(st)["voting"], st
            assert v.metric("sentrynet_chain_height") >= h0 + 15

        late = start_follower(procs, "late", vals, ids)
        target = max(height(v.status()) for v in vals)
        wait_for(late, lambda s: height(s) >= target, f"catch up to {target} by sync", 60)
        wait_until(lambda: sync_events(late), "sync_completed event on the late node", 30)
        st = late.status()
        peers = chain(st)["sync_peers"]
        assert peers and all(p["kind"] == "direct" for p in peers), json.dumps(chain(st))
        # the ranges were spread: more than one validator served blocks (16 per request)
        assert len({p["peer"] for p in peers}) >= 2, json.dumps(chain(st))
        assert sum(p["blocks"] for p in peers) >= target - 1
        assert late.metric("sentrynet_blocks_synced_total", kind="direct") >= target - 1
        ev = sync_events(late)[0]
        assert ev["from_height"] == 1 and ev["to_height"] >= target - 1 and ev["peers"], ev
        # then it follows gossip: blocks committed by consensus, not by sync
        wait_for(late, lambda s: chain(s)["commits"] >= 3, "blocks followed through gossip", 30)
        assert not chain(late.status())["voting"]
        nodes, heights = check_agreement(data_dirs([*vals, late]))
        print(f"agreement: {nodes} stores, {heights} heights compared")


def test_restart_keeps_store_and_empty_store_catches_up(tmp_path: Path) -> None:
    with NodeProcs(tmp_path) as procs:
        vals, _ids = start_validators(procs)
        wait_height(vals, 8, timeout=90)
        v3 = vals[3]
        v3.stop()
        kept = max(check_agreement(data_dirs([v3]))[1], 0)
        assert kept >= 8
        procs.launch(v3)
        # right after start the store is there, before any sync could have run
        st = v3.status()
        assert height(st) >= kept, json.dumps(chain(st))
        wait_for(v3, lambda s: chain(s)["commits"] >= 3, "restarted validator commits again", 60)

        # a validator restarted with an EMPTY store: catches up by sync, then votes again
        v2 = vals[2]
        v2.stop()
        shutil.rmtree(v2.config["node"]["data_dir"])
        procs.launch(v2)
        target = max(height(v.status()) for v in vals if v is not v2)
        wait_for(v2, lambda s: height(s) >= target, f"empty-store validator at {target}", 60)
        wait_until(lambda: sync_events(v2), "sync_completed on the wiped validator", 30)
        wait_for(v2, lambda s: chain(s)["commits"] >= 3, "wiped validator follows consensus", 60)
        # the chain still moves with everyone
        h = min_height(vals)
        wait_height(vals, h + 5, timeout=60)
        check_agreement(data_dirs(vals))


def test_frozen_peer_does_not_stall_sync(tmp_path: Path) -> None:
    """A validator frozen with SIGSTOP (connections open, nothing answered: the worst kind of
    slow peer) while a late node syncs: the late node still catches up from the others,
    and the chain goes on with three of four validators."""
    with NodeProcs(tmp_path) as procs:
        vals, ids = start_validators(procs)
        # 20 heights to catch up on: node/chain/sync.spread_chunk gives each of the four
        # validators a chunk in the first round, so the frozen one is asked for its share
        wait_height(vals, 20, timeout=180)
        frozen = vals[3]
        late = start_follower(procs, "late", vals, ids)
        wait_for(
            late,
            lambda s: {c["peer"] for c in s["connections"]} >= set(ids.values()),
            "connections to all four validators",
            30,
        )
        assert frozen.proc is not None
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            target = max(height(v.status()) for v in vals[:3])
            wait_for(late, lambda s: height(s) >= target, f"catch-up to {target}", 90)
            served = {p["peer"] for p in chain(late.status())["sync_peers"] if p["blocks"]}
            assert served and ids["v3"] not in served, served
            h = min_height(vals[:3])
            wait_height(vals[:3], h + 3, timeout=90)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        check_agreement(data_dirs([*vals, late]))


def _polls(node: NodeProc) -> tuple[float, float]:
    return (
        node.metric("sentrynet_sync_polls_total", scope="all"),
        node.metric("sentrynet_sync_polls_total", scope="sample"),
    )


def test_a_stalled_chain_with_nobody_ahead_polls_the_sample_not_every_peer(
    tmp_path: Path,
) -> None:
    """Two of four validators stop: the chain stalls (no quorum) and no peer is ahead.
    After one poll of every peer has found nobody ahead at this height, the routine polls
    ask the sample only. Before, every poll asked every peer while the chain stood (no
    commit within STALL_S), which at 64 nodes on 2 cores, where a block took 15 s, had
    every node asking every peer every 2 s."""
    with NodeProcs(tmp_path) as procs:
        vals, _ = start_validators(procs)
        wait_height(vals, 2, timeout=60)
        for v in vals[2:]:
            assert v.proc is not None
            v.proc.terminate()
            v.proc.wait()
        live = vals[0]
        # the stall begins: wait for a poll of every peer to see nobody ahead
        h = height(live.status())
        wait_until(lambda: _polls(live)[0] > 0 and height(live.status()) == h, "a full poll", 30)
        all0, sample0 = _polls(live)
        wait_until(lambda: _polls(live)[1] >= sample0 + 6, "six routine polls", 60)
        all1, _ = _polls(live)
        assert height(live.status()) == h, "the chain went on without a quorum"
        assert all1 - all0 <= 1, f"{all1 - all0:g} polls of every peer during the stall"
