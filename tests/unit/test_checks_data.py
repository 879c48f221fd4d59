"""Status/event snapshots shaped like docs/contracts.md section 2 (helpers, no tests).

The layout is scenarios/sentry.yaml: a = node0..node3 (node3 sentry, also public),
b = node4..node7 (node7 sentry, also public), cone NAT routers at 10.0.0.254 / 10.0.0.253.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.checks import Observation
from harness.model import Network, Node

PID = {f"node{i}": f"12D3KooWPeer{i}xxxxxxxxxxxxxxxxxxxx" for i in range(8)}
IP = {
    "node0": "172.20.0.10",
    "node1": "172.20.0.11",
    "node2": "172.20.0.12",
    "node3": "10.0.0.3",
    "node4": "172.21.0.14",
    "node5": "172.21.0.15",
    "node6": "172.21.0.16",
    "node7": "10.0.0.7",
}
ROUTER = {"a": "10.0.0.254", "b": "10.0.0.253"}
ROLES = {
    "node0": "validator",
    "node1": "validator",
    "node2": "full",
    "node3": "sentry",
    "node4": "validator",
    "node5": "validator",
    "node6": "full",
    "node7": "sentry",
}


def nodes() -> dict[str, Node]:
    """The model's nodes, as harness/model/testnet.py builds them for sentry.yaml."""
    out = {}
    for name, role in ROLES.items():
        i = int(name[-1])
        home = "a" if i < 4 else "b"
        private_ip = f"172.{20 if home == 'a' else 21}.0.{10 + i}"
        addresses = {home: private_ip, "public": IP[name]} if role == "sentry" else {home: IP[name]}
        out[name] = Node(
            name=name,
            role=role,
            peer_id=PID[name],
            addresses=addresses,
            control_ip=f"10.250.0.{10 + i}",
            listen_addrs=tuple(f"/ip4/{ip}/tcp/4001" for ip in addresses.values()),
            p2p_port=4001,
            api_url=f"http://10.250.0.{10 + i}:9000",
            relay_mode="both" if role == "sentry" else "client",
            relay_servers=(),
            relay_server_addrs=(),
            persistent_peers=(),
            persistent_peer_addrs=(),
            serve_sync=role != "sentry",
            default_via=None if role == "sentry" else f"172.{20 if home == 'a' else 21}.0.254",
            router=None if role == "sentry" else f"router-{home}",
            container=f"unit-{name}",
        )
    return out


def nets() -> dict[str, Network]:
    def net(name: str, subnet: str, kind: str, router_ip: str | None = None) -> Network:
        nat = "cone" if router_ip else "none"
        return Network(name, subnet, f"unit_{name}", kind, nat, router_public_ip=router_ip)

    return {
        "a": net("a", "172.20.0.0/24", "private", ROUTER["a"]),
        "b": net("b", "172.21.0.0/24", "private", ROUTER["b"]),
        "public": net("public", "10.0.0.0/24", "public"),
    }


def tcp(name: str) -> str:
    return f"/ip4/{IP[name]}/tcp/4001"


def base_status(name: str, height: int = 10) -> dict[str, Any]:
    return {
        "peer_id": PID[name],
        "name": name,
        "role": ROLES[name],
        "started_at": 100.0,
        "uptime_s": 20.0,
        "listen_addrs": [tcp(name)],
        "advertised_addrs": [tcp(name)],
        "reservations": [],
        "relay_candidates": [],
        "connections": [],
        "circuits": [],
        "dcutr": [],
        "chain": {
            "height": height,
            "tip_hash": f"h{height}",
            "sync_state": "synced",
            "sync_peers": [],
        },
        "rejected": {"hop": 0, "stop": 0, "dcutr": 0, "sync": 0, "consensus": 0},
    }


def reserve(st: dict[str, Any], relay: str, addrs: list[str] | None = None) -> None:
    """Give `st` a reservation on `relay`, discovered via identify from an address with no id."""
    st["relay_candidates"].append({"peer": PID[relay], "addr": tcp(relay), "source": "identify"})
    circuit = f"{tcp(relay)}/p2p/{PID[relay]}/p2p-circuit"
    st["reservations"].append(
        {
            "relay": PID[relay],
            "relay_addrs": [tcp(relay)],
            "addrs": [circuit] if addrs is None else addrs,
            "expires_at": 1780000000,
            "accepted_at": 101.0,
        }
    )
    st["advertised_addrs"].append(circuit)


def connect(
    st: dict[str, Any], peer: str, kind: str, relay: str | None = None, remote: str | None = None
) -> None:
    st["connections"].append(
        {
            "peer": PID[peer],
            "remote_addr": remote
            or (f"{tcp(relay)}/p2p/{PID[relay]}/p2p-circuit" if relay else tcp(peer)),
            "kind": kind,
            "direction": "outbound",
            "opened_at": 105.0,
            "relay": PID[relay] if relay else None,
        }
    )


def healthy_statuses() -> dict[str, dict[str, Any]]:
    """Every client reserved on both sentries; nothing else yet."""
    out = {n: base_status(n) for n in ROLES}
    for n in ROLES:
        if ROLES[n] != "sentry":
            for relay in ("node3", "node7"):
                reserve(out[n], relay)
    return out


def obs(
    statuses: dict[str, dict[str, Any]] | None = None,
    events: dict[str, list[dict[str, Any]]] | None = None,
    marks: dict[str, Any] | None = None,
    t: float = 30.0,
) -> Observation:
    st = copy.deepcopy(statuses if statuses is not None else healthy_statuses())
    return Observation(
        t=t,
        nodes=nodes(),
        nets=nets(),
        status=st,
        unreachable={n: "connection refused" for n in ROLES if n not in st},
        events={n: list((events or {}).get(n, [])) for n in ROLES},
        marks=marks or {},
        clock={n: -90.0 for n in st},  # node clock 100.0 == harness t 10.0
    )


def ev(type_: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"seq": 0, "t": ts + 90.0, "ts": ts, "type": type_, "epoch": 0, **fields}
