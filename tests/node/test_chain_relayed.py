"""Sync whose only path is a relayed circuit, in a real NAT lab (network namespaces).

    network A (behind symmetric NAT r1): validators v0..v3  --+
                                                              +-- public: relay (sentry)
    network B (behind symmetric NAT r2): late full node     --+

This is the seed's testnet with the missing piece in place: the late node in network B has
no IP path to any validator (their addresses are private addresses of network A, and both
routers drop unsolicited inbound packets), so it can only reach them through circuits on
the relay, where the validators hold reservations. The relay is a sentry with serve_sync
off, so every synced block must come over a circuit from a validator. The path is blocked
by the lab's routers, not by a flag in the node. DCUtR is off so that a lucky hole punch
cannot turn this into a direct-sync test, and peer exchange is off so that the late node's
paths to the validators are exactly the circuits it dials (validators would otherwise also
dial it back through the relay: two circuits per pair, twice the gossip through the relay).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from testkit.chain import chain, chain_section, check_agreement, height, make_key
from testkit.procs import NodeProc, wait_for, wait_until

pytestmark = [pytest.mark.loopback, pytest.mark.netns]

INTERVAL = 1.0  # the default; every gossip byte to the late node crosses the relay
DISCOVERY = False  # see the module docstring
T = 180  # generous: six py-libp2p processes on a small, shared CI machine


def test_late_node_syncs_through_relayed_circuits_only(nat_lab: Any) -> None:
    lab = nat_lab
    r1 = lab.add_router("r1", symmetric=True)
    r2 = lab.add_router("r2", symmetric=True)
    relay_host = lab.add_public_host("relay")
    val_hosts = [lab.add_private_host(f"v{i}", r1) for i in range(4)]
    late_host = lab.add_private_host("late", r2)

    ids = {h.name: make_key(lab.workdir / h.name / "node.key") for h in val_hosts}
    relay_id = make_key(lab.workdir / "relay" / "node.key")
    late_id = make_key(lab.workdir / "late" / "node.key")
    relay_addr = f"/ip4/{relay_host.ip}/tcp/4001/p2p/{relay_id}"
    val_addrs = {h.name: f"/ip4/{h.ip}/tcp/4001/p2p/{ids[h.name]}" for h in val_hosts}
    chain_cfg = chain_section(ids, INTERVAL)

    relay = lab.start_node(
        relay_host,
        node={"role": "sentry"},
        relay={"enabled": True, "mode": "server"},
        dcutr={"enabled": False},
        chain={**chain_cfg, "serve_sync": False},
    )
    vals: list[NodeProc] = []
    for h in val_hosts:
        vals.append(
            lab.start_node(
                h,
                wait_ready=False,
                node={"role": "validator"},
                p2p={
                    "persistent_peers": [relay_addr]
                    + [a for n, a in val_addrs.items() if n != h.name],
                    "discovery": DISCOVERY,
                },
                relay={"enabled": True, "mode": "client", "relay_servers": [relay_addr]},
                dcutr={"enabled": False},
                chain=chain_cfg,
            )
        )
    for v in vals:
        wait_for(v, lambda s: s.get("ready"), "ready validator", 60)
    for v in vals:
        wait_for(v, lambda s: s["reservations"], "a reservation on the relay", T)
    for v in vals:
        wait_for(v, lambda s: height(s) >= 10, "validators commit 10 blocks", T)
    wait_for(relay, lambda s: height(s) >= 5, "the sentry follows by gossip", T)

    late = lab.start_node(
        late_host,
        node={"role": "full"},
        p2p={"persistent_peers": [relay_addr, *val_addrs.values()], "discovery": DISCOVERY},
        relay={"enabled": True, "mode": "client", "relay_servers": [relay_addr]},
        dcutr={"enabled": False},
        chain=chain_cfg,
    )
    target = max(height(v.status()) for v in vals)

    def caught_up_over_circuits(s: dict[str, Any]) -> bool:
        c = chain(s)
        return height(s) >= target and any(p["kind"] == "relayed" for p in c["sync_peers"])

    try:
        wait_for(late, caught_up_over_circuits, f"catch-up to {target} over circuits", T)
    except AssertionError:
        print(lab.describe())
        for v in vals:
            print(v.name, json.dumps(v.last_status and v.last_status.get("chain")))
        raise
    st = late.status()
    sync_peers = chain(st)["sync_peers"]
    # every block came over a circuit from a validator: no direct path, relay serves none
    assert sync_peers and all(p["kind"] == "relayed" for p in sync_peers), sync_peers
    assert {p["peer"] for p in sync_peers} <= set(ids.values()), sync_peers
    assert sum(p["blocks"] for p in sync_peers) >= target - 1
    assert late.metric("sentrynet_blocks_synced_total", kind="relayed") >= target - 1
    assert late.metric("sentrynet_blocks_synced_total", kind="direct") == 0
    to_validators = [c for c in st["connections"] if c["peer"] in ids.values()]
    assert to_validators and all(c["kind"] == "relayed" for c in to_validators), to_validators
    # a session emits sync_completed when it ends, which can be after the catch-up seen
    # above (a request to a slow peer still running): wait for the event, do not read once
    sync_done = wait_until(
        lambda: [e for e in late.events() if e["type"] == "sync_completed"],
        "sync_completed event on the late node",
        T,
        interval=0.5,
    )
    assert sync_done[0]["from_height"] == 1, sync_done
    assert late_id == st["peer_id"]
    print(
        "late node synced over circuits:",
        ", ".join(f"{p['peer'][-8:]} {p['blocks']} blocks {p['bytes']} B" for p in sync_peers),
        f"in {sync_done[0].get('duration_s')} s",
    )
    # then it keeps up by gossip through the sentry
    h = height(st)
    wait_for(late, lambda s: height(s) >= h + 3, "the late node follows new blocks", T)
    nodes = [*vals, relay, late]
    check_agreement({n.name: lab.workdir / n.name / "data" for n in nodes})
