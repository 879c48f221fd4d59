"""Checks on nodes that serve no API (`api: none`): the kernel tables read from outside
(harness/infra/netstate.py parsers) and the verdicts built on them and on the relays'
records (harness/checks/outside.py, relay.py, chain.py). The Docker test that reads real
tables is tests/docker/test_foreign_node.py."""

from __future__ import annotations

import dataclasses
from typing import Any

from test_checks_data import PID, ROUTER, base_status, ev, healthy_statuses, obs

from harness.checks import Observation
from harness.checks import chain as chain_checks
from harness.checks import relay as relay_checks
from harness.checks.outside import direct_through_nats
from harness.infra.netstate import Flow, TcpSocket, parse_conntrack, parse_proc_tcp

# /proc/net/tcp of a node at 172.21.0.15 listening on 4002, with a connection to router-a
PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0F0015AC:0FA2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0F0015AC:0FA2 FE00000A:0FA1 01 00000000:00000000 02:000A1B2C 00000000     0        0 2 2
   2: 0100007F:2328 0100007F:C350 06 00000000:00000000 03:00001770 00000000     0        0 0 3
"""

# router-a's and router-b's conntrack: node0 (172.20.0.10:4001) <-> node5 (172.21.0.15:4002)
CONNTRACK_A = (
    "ipv4     2 tcp      6 431999 ESTABLISHED src=172.20.0.10 dst=10.0.0.253 sport=4001 "
    "dport=4002 src=10.0.0.253 dst=10.0.0.254 sport=4002 dport=4001 [ASSURED] mark=0 zone=0 "
    "use=2\n"
    "ipv4     2 tcp      6 431999 ESTABLISHED src=172.20.0.10 dst=10.0.0.7 sport=4001 "
    "dport=4001 src=10.0.0.7 dst=10.0.0.254 sport=4001 dport=4001 [ASSURED] mark=0 zone=0 "
    "use=2\n"
    "ipv4     2 udp      17 20 src=172.20.0.10 dst=10.0.0.7 sport=5 dport=5 src=10.0.0.7 "
    "dst=10.0.0.254 sport=5 dport=5 mark=0 zone=0 use=2\n"
)
CONNTRACK_B = (
    "ipv4     2 tcp      6 431999 ESTABLISHED src=172.21.0.15 dst=10.0.0.254 sport=4002 "
    "dport=4001 src=10.0.0.254 dst=10.0.0.253 sport=4001 dport=4002 [ASSURED] mark=0 zone=0 "
    "use=2\n"
)


def blind(o: Observation, *names: str) -> Observation:
    """`o` with `names` switched to `api: none`: no status, no events, as the observer
    would have it."""
    nodes = {n: dataclasses.replace(s, api="none") if n in names else s for n, s in o.nodes.items()}
    return dataclasses.replace(
        o,
        nodes=nodes,
        status={n: s for n, s in o.status.items() if n not in names},
        events={n: e for n, e in o.events.items() if n not in names},
        unreachable={n: u for n, u in o.unreachable.items() if n not in names},
    )


def grant(statuses: dict[str, dict[str, Any]], relay: str, client: str) -> None:
    rs = statuses[relay].setdefault("relay_server", {"granted": [], "circuits": []})
    rs["granted"].append({"peer": PID[client], "expires_at": 1780000000, "accepted_at": 102.0})


def test_proc_tcp_rows_parse_to_addresses_ports_and_states() -> None:
    rows = parse_proc_tcp(PROC_TCP)
    assert rows[0] == TcpSocket("172.21.0.15", 4002, "0.0.0.0", 0, "LISTEN")
    assert rows[1] == TcpSocket("172.21.0.15", 4002, "10.0.0.254", 4001, "ESTABLISHED")
    assert rows[2].state == "TIME_WAIT" and rows[2].local_port == 9000
    assert TcpSocket.from_json(rows[1].to_json()) == rows[1]


def test_conntrack_rows_parse_tcp_only_with_their_translation() -> None:
    flows = parse_conntrack(CONNTRACK_A)
    assert len(flows) == 2  # the udp row is not a TCP flow
    f = flows[0]
    assert (f.src, f.sport, f.dst, f.dport, f.state) == (
        "172.20.0.10",
        4001,
        "10.0.0.253",
        4002,
        "ESTABLISHED",
    )
    assert f.translated == ("10.0.0.254", 4001)
    assert Flow.from_json(f.to_json()) == f
    assert parse_conntrack("garbage\nipv4 2 tcp 6 1 ESTABLISHED src=x dst=y\n") == []


def with_tables(o: Observation, a: str = CONNTRACK_A, b: str = CONNTRACK_B) -> Observation:
    return dataclasses.replace(
        o,
        flows={"a": parse_conntrack(a), "b": parse_conntrack(b)},
        sockets={"node5": parse_proc_tcp(PROC_TCP)},
    )


def test_joined_conntrack_flows_are_a_direct_connection_through_both_nats() -> None:
    o = with_tables(blind(obs(), "node5"))
    found = direct_through_nats(o, "node0", "node5")
    assert found and "router-a conntrack 172.20.0.10:4001 -> 10.0.0.253:4002" in found[0]
    assert "router-b conntrack 172.21.0.15:4002 -> 10.0.0.254:4001" in found[0]
    assert any("node5's TCP table 172.21.0.15:4002 -> 10.0.0.254:4001" in f for f in found)
    # node1 has no flow of its own: nothing for the pair node1-node5 but node5's socket,
    # which goes to router-a's public address at node0's port, not node1's
    assert not any("conntrack" in f for f in direct_through_nats(o, "node1", "node5"))


def test_flows_that_do_not_meet_are_no_direct_connection() -> None:
    # router-b's flow goes to another port of router-a: not the mapping router-a made
    other = CONNTRACK_B.replace("dport=4001 src=10.0.0.254", "dport=4009 src=10.0.0.254")
    flows = {"a": parse_conntrack(CONNTRACK_A), "b": parse_conntrack(other)}
    o = dataclasses.replace(blind(obs(), "node5"), flows=flows)
    assert direct_through_nats(o, "node0", "node5") == []


def test_reservation_of_an_api_less_client_comes_from_the_relays_records() -> None:
    statuses = healthy_statuses()
    grant(statuses, "node7", "node5")
    v = relay_checks.reservations(blind(obs(statuses), "node5"))
    assert v.ok, v.detail
    assert "node5->node7 [relay records; node5 has api: none]" in v.detail
    assert v.data["evidence"]["node5"] == "granted in node7's /status relay_server"
    assert v.data["evidence"]["node0"] == "node0's /status"


def test_api_less_client_no_relay_records_fails_naming_why() -> None:
    v = relay_checks.reservations(blind(obs(), "node5"))
    assert not v.ok
    assert "node5: no relay records a reservation for it" in v.detail
    assert v.cause and "api: none" in v.cause and PID["node5"] in v.cause


def relayed_pair(statuses: dict[str, dict[str, Any]], via: str = "node7") -> None:
    """node0 <-> node5 through `via`, as the relay's /status lists it."""
    statuses[via]["circuits"].append(
        {"src": PID["node0"], "dst": PID["node5"], "bytes": 10, "opened_at": 103.0}
    )


def test_dcutr_between_two_api_less_nodes_from_relay_records_and_conntrack() -> None:
    statuses = healthy_statuses()
    relayed_pair(statuses)
    still_relayed = with_tables(blind(obs(statuses), "node0", "node5"))
    v = relay_checks.dcutr_upgrade(still_relayed)
    assert not v.ok and "node7 relays a circuit node0<->node5" in v.detail

    statuses = healthy_statuses()
    events = {"node7": [ev("circuit_opened", 12.0, src=PID["node0"], dst=PID["node5"])]}
    punched = with_tables(blind(obs(statuses, events), "node0", "node5"))
    v = relay_checks.dcutr_upgrade(punched)
    assert v.ok, v.detail
    assert "both api: none" in v.detail and "hole-punched" in v.detail
    assert "router-a conntrack" in v.detail

    no_tables = blind(obs(statuses, events), "node0", "node5")
    assert not relay_checks.dcutr_upgrade(no_tables).ok


def test_dcutr_with_one_api_less_end_names_the_outside_evidence_too() -> None:
    statuses = healthy_statuses()
    connect_direct = {
        "peer": PID["node5"],
        "remote_addr": f"/ip4/{ROUTER['b']}/tcp/4002",
        "kind": "direct",
        "direction": "outbound",
        "opened_at": 106.0,
        "relay": None,
    }
    statuses["node0"]["connections"].append(connect_direct)
    statuses["node0"]["dcutr"].append(
        {"peer": PID["node5"], "outcome": "succeeded", "role": "initiator", "at": 106.0}
    )
    events = {"node7": [ev("circuit_opened", 12.0, src=PID["node0"], dst=PID["node5"])]}
    v = relay_checks.dcutr_upgrade(with_tables(blind(obs(statuses, events), "node5")))
    assert v.ok, v.detail
    assert "node0 reaches node5 at /ip4/10.0.0.253/tcp/4002 (router of b)" in v.detail
    assert "[outside: router-a conntrack" in v.detail


def test_consensus_reads_the_validators_it_can_and_says_which_it_cannot() -> None:
    statuses = {n: base_status(n, height=10) for n in healthy_statuses()}
    events = {
        v: [
            ev("block_committed", 1.0, height=9, hash="h9", proposer=PID["node0"]),
            ev("block_committed", 2.0, height=10, hash="h10", proposer=PID["node5"]),
        ]
        for v in ("node0", "node1", "node4")
    }
    o = blind(obs(statuses, events), "node5")
    v = chain_checks.consensus(5)(o)
    assert v.ok, v.detail
    assert "node5: not readable" in v.detail
    assert "node5" in v.detail.split("proposed from")[1]
