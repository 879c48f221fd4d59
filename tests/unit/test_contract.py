"""node/contract.py: the typed /status and /events records read back exactly what the node
serves (docs/contracts.md section 2), so the node and the harness share one shape."""

from __future__ import annotations

from typing import Any

from node.contract import Event, Status

PEER = "12D3KooWPeer0xxxxxxxxxxxxxxxxxxxx"
RELAY = "12D3KooWPeer3xxxxxxxxxxxxxxxxxxxx"

FULL: dict[str, Any] = {
    "name": "node0",
    "role": "validator",
    "started_at": 12.5,
    "uptime_s": 3.2,
    "peer_id": PEER,
    "listen_addrs": ["/ip4/172.20.0.10/tcp/4001"],
    "advertised_addrs": [f"/ip4/10.0.0.3/tcp/4001/p2p/{RELAY}/p2p-circuit"],
    "observed_addrs": ["/ip4/10.0.0.254/tcp/4001"],
    "reservations": [
        {
            "relay": RELAY,
            "relay_addrs": ["/ip4/10.0.0.3/tcp/4001"],
            "addrs": [f"/ip4/10.0.0.3/tcp/4001/p2p/{RELAY}/p2p-circuit"],
            "expires_at": 1780000000,
            "accepted_at": 13.1,
        }
    ],
    "relay_candidates": [{"peer": RELAY, "addr": "/ip4/10.0.0.3/tcp/4001", "source": "config"}],
    "connections": [
        {
            "peer": RELAY,
            "remote_addr": "/ip4/10.0.0.3/tcp/4001",
            "kind": "direct",
            "transport": "tcp",
            "direction": "outbound",
            "opened_at": 14.0,
            "relay": None,
            "rtt_s": 0.002,
            "rtt_median_s": 0.002,
            "pings_ok": 12,
            "ping_failures": 0,
        }
    ],
    "circuits": [{"id": 1, "src": PEER, "dst": RELAY, "bytes": 1234, "opened_at": 15.0}],
    "dcutr": [
        {
            "peer": RELAY,
            "role": "initiator",
            "attempt": 1,
            "outcome": "failed",
            "reason": "timeout",
            "detail": "no direct connection",
            "duration_s": 0.4,
            "addr": None,
            "rtt_s": 0.3,
            "at": 16.0,
            "final": False,
            "phases": {"stream": 0.1},
        }
    ],
    "chain": {
        "height": 12,
        "tip_hash": "ab12",
        "sync_state": "synced",
        "sync_peers": [
            {
                "peer": RELAY,
                "kind": "relayed",
                "blocks": 40,
                "bytes": 9000,
                "from_height": 1,
                "to_height": 40,
            }
        ],
        "voting": True,
        "round": 0,
        "step": "propose",
        "validators": 4,
        "best_peer_height": 12,
        "peer_heights": {RELAY: 12},
        "mesh_peers": [RELAY],
        "topic_peers": [RELAY],
        "heard": {"proposal": ["node1"], "prevote": ["node0", "node1"], "precommit": []},
        "serve_sync": True,
        "commits": 12,
        "error": None,
    },
    "rejected": {"hop": 0, "stop": 0, "dcutr": 0, "sync": 0, "consensus": 0, "px": 0},
    "handler_errors": {},
    "ready": True,
    "peers_known": [
        {"peer": RELAY, "source": "persistent", "addrs": [], "failures": 0, "last_error": None}
    ],
    "pubsub_peers": [RELAY],
    "relay_server": {
        "granted": [{"peer": PEER, "expires_at": 1780000000, "accepted_at": 13.0}],
        "circuits": [],
    },
    "liveness": {
        "interval_s": 5.0,
        "timeout_s": 10.0,
        "failures": 3,
        "watching": 1,
        "closed": 0,
        "skipped": 4,
    },
}


def test_a_full_status_reads_back_unchanged() -> None:
    st = Status.from_json(FULL)
    assert st.to_json() == FULL
    assert st.height == 12
    assert st.connections[0].kind == "direct"
    assert st.chain is not None and st.chain.sync_peers[0].blocks == 40
    assert st.dcutr[0].final is False


def test_keys_outside_the_contract_are_kept_and_missing_ones_default() -> None:
    st = Status.from_json({"peer_id": PEER, "newservice": {"x": 1}})
    assert st.extra == {"newservice": {"x": 1}}
    assert st.to_json()["newservice"] == {"x": 1}
    assert st.connections == () and st.chain is None and st.height is None


def test_an_event_keeps_exactly_its_own_fields() -> None:
    doc = {"seq": 4, "t": 13.1, "type": "circuit_closed", "src": PEER, "dst": RELAY}
    doc |= {"side": "target", "reason": "closed", "bytes": None}
    e = Event.from_json(doc)
    assert e.to_json() == doc  # bytes stays null, fields of other types stay absent
    assert e.reason == "closed" and e.peer is None
    seen = e.with_harness_time(3.5, 1)
    assert seen.to_json() == {**doc, "ts": 3.5, "epoch": 1}
    assert Event.from_json(seen.to_json()) == seen
