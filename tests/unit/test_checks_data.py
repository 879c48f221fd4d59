"""Status/event snapshots shaped like docs/contracts.md section 2 (helpers, no tests).

The layout is scenarios/sentry.yaml: a = node0..node3 (node3 sentry, also public),
b = node4..node7 (node7 sentry, also public), cone NAT routers at 10.0.0.254 / 10.0.0.253.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from harness.checks import Observation
from harness.infra.netstate import Flow, TcpSocket
from harness.model import Network, Node
from node.contract import Event, Status

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
        status={n: Status.from_json(doc) for n, doc in st.items()},
        unreachable={n: "connection refused" for n in ROLES if n not in st},
        events={n: [Event.from_json(e) for e in (events or {}).get(n, [])] for n in ROLES},
        marks=marks or {},
        clock={n: -90.0 for n in st},  # node clock 100.0 == harness t 10.0
    )


def ev(type_: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"seq": 0, "t": ts + 90.0, "ts": ts, "type": type_, "epoch": 0, **fields}


# --------------------------------------------------------------------------- recorded runs
# tests/data/replay/<scenario>.json: the observations the checks of one real scenario run
# decided on (results/<run-id>/observations/, written by harness/run/runner.py), trimmed
# to what the checks read. Events are stored once (the last observation's, which extends
# every earlier one); each check keeps how many of them it had seen.

REPLAY_DIR = Path(__file__).resolve().parents[1] / "data" / "replay"
STATUS_KEYS = (
    "peer_id",
    "advertised_addrs",
    "reservations",
    "relay_candidates",
    "connections",
    "circuits",
    "dcutr",
    "chain",
    "rejected",
)
CHAIN_KEYS = ("height", "tip_hash", "sync_state", "sync_peers", "round", "step")
RESERVATION_KEYS = ("relay", "addrs", "accepted_at")
CONNECTION_KEYS = ("peer", "remote_addr", "kind", "transport", "direction", "relay", "opened_at")
DCUTR_KEYS = (
    "peer",
    "role",
    "attempt",
    "outcome",
    "reason",
    "duration_s",
    "addr",
    "rtt_s",
    "at",
    "final",
    "phases",
)
DCUTR_EVENT_KEYS = ("peer", "role", "reason", "duration_s", "addr", "final", "rtt_s")
EVENT_KEYS = {  # the event types the checks read, and the fields they read of each
    "reservation_accepted": ("relay",),
    "reservation_denied": ("relay", "reason"),
    "reservation_expired": ("relay", "reason"),
    "reservation_refreshed": ("relay",),
    "addrs_advertised": ("addrs",),
    "reservation_granted": ("peer", "renewed"),
    "reservation_refused": ("peer", "reason"),
    "connection_opened": ("peer", "kind", "direction", "remote_addr"),
    "connection_closed": ("peer", "kind", "reason"),
    "circuit_opened": ("src", "dst"),
    "circuit_closed": ("src", "dst", "reason"),
    "dcutr_started": DCUTR_EVENT_KEYS,
    "dcutr_succeeded": DCUTR_EVENT_KEYS,
    "dcutr_failed": DCUTR_EVENT_KEYS,
    "block_committed": ("height", "hash", "proposer"),
    "sync_completed": (),
}
EVENT_TYPES = tuple(EVENT_KEYS)


def _pick(doc: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: doc[k] for k in keys if k in doc}


def trim_status(doc: dict[str, Any]) -> dict[str, Any]:
    """A /status document cut to the keys the checks read."""
    out = _pick(doc, STATUS_KEYS)
    # the checks ask only whether a circuit address is advertised, and for hop rejections
    out["advertised_addrs"] = [a for a in out.get("advertised_addrs") or [] if "p2p-circuit" in a]
    out["rejected"] = _pick(out.get("rejected") or {}, ("hop",))
    out["reservations"] = [_pick(r, RESERVATION_KEYS) for r in out.get("reservations") or []]
    out["connections"] = [_pick(c, CONNECTION_KEYS) for c in out.get("connections") or []]
    out["dcutr"] = [_pick(d, DCUTR_KEYS) for d in out.get("dcutr") or []]
    if out.get("chain"):
        out["chain"] = _pick(out["chain"], CHAIN_KEYS)
    return out


def record_run(run_dir: Path) -> dict[str, Any]:
    """The replay document of one results/<run-id>/ folder."""
    report = json.loads((run_dir / "report.json").read_text())
    rows = {c["name"]: c for c in report["checks"]}
    files = sorted((run_dir / "observations").glob("*.json"))
    seen = [(f.stem.split("-", 1)[1], json.loads(f.read_text())) for f in files]
    last = seen[-1][1]
    events = {n: [e for e in evs if e["type"] in EVENT_TYPES] for n, evs in last["events"].items()}
    checks = []
    for name, o in seen:
        upto = {}
        for n, evs in o["events"].items():
            assert evs == last["events"][n][: len(evs)], f"{name}: {n} events are no prefix"
            upto[n] = sum(1 for e in evs if e["type"] in EVENT_TYPES)
        checks.append(
            {
                "name": name,
                "passed": rows[name]["passed"],
                "detail": rows[name]["detail"],
                "t": o["t"],
                "status": {n: trim_status(st) for n, st in o["status"].items()},
                "unreachable": o["unreachable"],
                "marks": o["marks"],
                "clock": o["clock"],
                "events_upto": upto,
                # evidence read from outside (harness/checks/outside.py), where there was any
                **{k: o[k] for k in ("flows", "sockets") if o.get(k)},
            }
        )
    doc = {
        "scenario": report["scenario"],
        "run_id": report.get("run_id"),
        "nodes": last["nodes"],
        "nets": last["nets"],
        "events": {n: [trim_event(e) for e in evs] for n, evs in events.items()},
        "checks": checks,
    }
    # shorter stand-ins, used consistently (details included): a peer id becomes
    # 12D3KooW<name>x, a block hash its first 16 hex digits (details print 10)
    text = json.dumps(doc)
    for name, node in last["nodes"].items():
        if node.get("peer_id"):
            text = text.replace(node["peer_id"], f"12D3KooW{name}x")
    text = re.sub(r"\b([0-9a-f]{16})[0-9a-f]{48}\b", r"\1", text)
    return dict(json.loads(text))


def trim_event(e: dict[str, Any]) -> dict[str, Any]:
    """An event cut to its type, harness time (6 decimals) and the fields checks read."""
    ts = e.get("ts")
    return {
        "type": e["type"],
        "ts": round(ts, 6) if ts is not None else None,
        **_pick(e, EVENT_KEYS[e["type"]]),
    }


def recorded_node(spec: dict[str, Any]) -> Node:
    """The model's Node from what an observation records of it (Observation.to_json keeps
    the attributes the checks read: role, networks, relay_client, serve_sync, peer id)."""
    return Node(
        name=spec["name"],
        role=spec["role"],
        peer_id=spec.get("peer_id") or "",
        addresses=spec.get("addresses") or {net: "" for net in spec["networks"]},
        control_ip="",
        listen_addrs=(),
        p2p_port=spec.get("p2p_port", 4001),
        api_url="",
        relay_mode="client"
        if spec["relay_client"]
        else ("both" if spec["role"] == "sentry" else "off"),
        relay_servers=tuple(spec.get("relay_servers") or ()),
        relay_server_addrs=tuple(spec.get("relay_server_addrs") or ()),
        persistent_peers=(),
        persistent_peer_addrs=(),
        serve_sync=spec["serve_sync"],
        default_via=None,
        router=None,
        container="",
        impl=spec.get("impl", "python"),
        api=spec.get("api", "sentrynet"),
    )


def recorded_network(spec: dict[str, Any]) -> Network:
    """The model's Network from what an observation records of it."""
    return Network(
        spec["name"],
        spec.get("subnet") or "",
        "",
        "private" if spec["private"] else "public",
        spec.get("nat") or "none",
        router_public_ip=spec.get("router_public_ip"),
    )


def replayed(doc: dict[str, Any]) -> list[tuple[dict[str, Any], Observation]]:
    """Each recorded check with the Observation it decided on, rebuilt from `doc`."""
    infos = {n: recorded_node(spec) for n, spec in doc["nodes"].items()}
    net_infos = {n: recorded_network(spec) for n, spec in doc["nets"].items()}
    events = {n: [Event.from_json(e) for e in evs] for n, evs in doc["events"].items()}
    out = []
    for rec in doc["checks"]:
        o = Observation(
            t=rec["t"],
            nodes=infos,
            nets=net_infos,
            status={n: Status.from_json(st) for n, st in rec["status"].items()},
            unreachable=dict(rec["unreachable"]),
            events={n: events[n][:k] for n, k in rec["events_upto"].items()},
            marks=copy.deepcopy(rec["marks"]),
            clock=dict(rec["clock"]),
            flows={
                net: [Flow.from_json(f) for f in fs] for net, fs in rec.get("flows", {}).items()
            },
            sockets={
                n: [TcpSocket.from_json(s) for s in ss] for n, ss in rec.get("sockets", {}).items()
            },
        )
        out.append((rec, o))
    return out


if __name__ == "__main__":
    # record: .venv/bin/python tests/unit/test_checks_data.py results/<run-id> ...
    REPLAY_DIR.mkdir(parents=True, exist_ok=True)
    for arg in sys.argv[1:]:
        doc = record_run(Path(arg))
        path = REPLAY_DIR / f"{doc['scenario']}.json"
        path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{path}: {path.stat().st_size} bytes, {len(doc['checks'])} checks")
