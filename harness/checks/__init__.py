"""Scenario checks: pure functions from an `Observation` (status + events snapshots) to a `Verdict`.

A check never talks to Docker or HTTP. The observer (harness/run/observe.py) polls the
nodes and folds what it saw into an `Observation`; the steps (harness/run/steps.py) call
the check on each one until it holds or its deadline passes. Keeping checks pure is what
lets tests/unit replay recorded status JSON through them, and what lets a failing check
explain itself: the `Verdict` carries the detail (what was seen) and, when it does not
hold, the likely cause in terms of the failure modes the harness exists to expose (no IP
path to a relay, reservation never sent, reservation without addresses, no common relay,
DCUtR defeated by symmetric NAT, sync that never crossed the NAT).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.infra.netstate import Flow, TcpSocket
from harness.model import Network, Node
from node.contract import Connection, Event, Status


@dataclass
class Observation:
    """Everything the checks may look at, as seen by the runner at time `t`.

    `nodes` and `nets` are the model's (harness/model/testnet.py), so a check reads what
    the testnet was built from: a node's role, networks, relay mode, peer id; a network's
    subnet and NAT router. `status` holds each node's /status and `events` its /events, as
    the typed records of node/contract.py. `t` and every event's `ts` are seconds since `up`
    started (harness clock); `marks` are values the scenario flow recorded (heights when a
    node was stopped, who held which reservation when a relay was killed, the reachability
    verdict of harness/model/reach.py).
    """

    t: float
    nodes: dict[str, Node]
    nets: dict[str, Network] = field(default_factory=dict)
    status: dict[str, Status] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # node -> last API error
    events: dict[str, list[Event]] = field(default_factory=dict)
    marks: dict[str, Any] = field(default_factory=dict)
    clock: dict[str, float] = field(default_factory=dict)  # node clock + offset = harness t
    # Evidence from outside the nodes (harness/infra/netstate.py), for nodes with `api:
    # none` and for the NAT routers: each one's TCP table and each router's conntrack
    # flows, read from the kernel; `outside_errors` says why a table could not be read.
    sockets: dict[str, list[TcpSocket]] = field(default_factory=dict)
    flows: dict[str, list[Flow]] = field(default_factory=dict)  # router name -> flows
    outside_errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The observation as JSON: results/<run-id>/observations/ keeps the one each check
        decided on, which tests/unit/test_checks_replay.py replays through the checks."""
        node_keys = (
            "name",
            "role",
            "networks",
            "addresses",
            "validator",
            "relay_client",
            "serve_sync",
            "impl",
            "api",
            "p2p_port",
            "relay_servers",
            "relay_server_addrs",
        )
        return {
            "t": self.t,
            "nodes": {
                name: {**{k: getattr(n, k) for k in node_keys}, "peer_id": n.peer_id}
                for name, n in self.nodes.items()
            },
            "nets": {
                name: {
                    "name": n.name,
                    "private": n.private,
                    "subnet": n.subnet,
                    "nat": n.nat,
                    "router_public_ip": n.router_public_ip,
                }
                for name, n in self.nets.items()
            },
            "status": {name: st.to_json() for name, st in self.status.items()},
            "unreachable": dict(self.unreachable),
            "events": {name: [e.to_json() for e in evs] for name, evs in self.events.items()},
            "marks": json.loads(json.dumps(self.marks, default=str)),
            "clock": dict(self.clock),
            "sockets": {k: [s.to_json() for s in v] for k, v in self.sockets.items()},
            "flows": {k: [f.to_json() for f in v] for k, v in self.flows.items()},
            "outside_errors": dict(self.outside_errors),
        }

    def to_t(self, name: str, node_t: float | None) -> float | None:
        """A node-clock timestamp (status `accepted_at`, `opened_at`) in harness seconds."""
        if node_t is None or name not in self.clock:
            return None
        return float(node_t) + self.clock[name]

    # ---- identities -------------------------------------------------------------------
    def peer_names(self) -> dict[str, str]:
        """peer id -> node name, from the topology (keys rendered up front) and /status."""
        names = {n.peer_id: n.name for n in self.nodes.values() if n.peer_id}
        for name, st in self.status.items():
            if st.peer_id:
                names[st.peer_id] = name
        return names

    def name_of(self, peer: str | None) -> str:
        if not peer:
            return "?"
        return self.peer_names().get(peer, _short(peer))

    def peer_id(self, name: str) -> str | None:
        st = self.status.get(name)
        if st and st.peer_id:
            return st.peer_id
        return self.nodes[name].peer_id if name in self.nodes else None

    # ---- topology ---------------------------------------------------------------------
    def private_nets(self, name: str) -> list[str]:
        node = self.nodes.get(name)
        if node is None:
            return []
        return [n for n in node.networks if n not in self.nets or self.nets[n].private]

    def home(self, name: str) -> str | None:
        """The private network a node lives on (None for public-only nodes)."""
        nets = self.private_nets(name)
        return nets[0] if nets else None

    def only_private(self, name: str) -> bool:
        """True for nodes that live only on one private network (no public interface)."""
        node = self.nodes.get(name)
        return node is not None and len(node.networks) == 1 and bool(self.private_nets(name))

    def validators(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.validator)

    def chain_nodes(self) -> list[str]:
        """Nodes whose chain the checks can read, whatever their implementation: not a node
        with `api: none`, whose height nobody can see (its votes still count: consensus
        shows them), and not one whose /status says `chain: null` (a node that runs no
        chain, e.g. a rust reference node built before it ran one). A node with no status at
        all stays in, so a chain check reports it missing rather than passing."""
        return sorted(
            n.name
            for n in self.nodes.values()
            if n.has_api and (n.name not in self.status or self.status[n.name].chain is not None)
        )

    def api_less(self) -> list[str]:
        """Nodes judged from outside only (topology `api: none`)."""
        return sorted(n.name for n in self.nodes.values() if not n.has_api)

    def clients(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.relay_client)

    def relays(self) -> list[str]:
        return sorted(n.name for n in self.nodes.values() if n.role == "sentry")

    def cross_pairs(self, names: Iterable[str]) -> list[tuple[str, str]]:
        """Pairs (a, b), a < b, living only on two different private networks."""
        only = [n for n in sorted(names) if self.only_private(n)]
        return [
            (a, b)
            for i, a in enumerate(only)
            for b in only[i + 1 :]
            if self.home(a) != self.home(b)
        ]

    def net_of_ip(self, ip: str | None) -> Network | None:
        if not ip:
            return None
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for net in self.nets.values():
            if net.subnet and addr in ipaddress.ip_network(net.subnet, strict=False):
                return net
        return None

    def router_of_ip(self, ip: str | None) -> Network | None:
        """The private network whose NAT router owns this public IP."""
        for net in self.nets.values():
            if ip and net.router_public_ip == ip:
                return net
        return None

    # ---- status / events helpers ------------------------------------------------------
    def status_of(self, name: str) -> Status:
        """`name`'s /status, or an empty one when it has none (down, not polled yet)."""
        return self.status.get(name) or Status()

    def connections(self, name: str, peer_name: str | None = None) -> list[Connection]:
        st = self.status.get(name)
        conns = list(st.connections) if st else []
        if peer_name is None:
            return conns
        pid = self.peer_id(peer_name)
        return [c for c in conns if pid and c.peer == pid]

    def events_of(self, name: str, *types: str) -> list[Event]:
        evs = self.events.get(name) or []
        return [e for e in evs if not types or e.type in types]

    def height(self, name: str) -> int | None:
        st = self.status.get(name)
        h = st.height if st else None
        return int(h) if h is not None else None

    def missing(self, names: Iterable[str]) -> list[str]:
        """Nodes among `names` with no /status right now, with the reason."""
        return [
            f"{n} ({self.unreachable.get(n, 'no status yet')})"
            for n in names
            if n not in self.status
        ]


@dataclass(frozen=True)
class Verdict:
    """The outcome of evaluating one check against one observation.

    `since`: harness seconds since `up` when the condition became true according to the
    nodes' own event timestamps (earlier than the poll that noticed it), when known.
    """

    ok: bool
    detail: str
    cause: str | None = None
    since: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.detail
        if not self.ok and self.cause:
            text += f" | likely cause: {self.cause}"
        return text


Check = Callable[[Observation], Verdict]


def ip_of(multiaddr: str | None) -> str | None:
    """The IPv4/IPv6 address of the first transport segment of a multiaddr, if any."""
    if not multiaddr:
        return None
    parts = multiaddr.split("/")
    for i, p in enumerate(parts[:-1]):
        if p in ("ip4", "ip6"):
            return parts[i + 1]
    return None


def tcp_endpoint_of(multiaddr: str | None) -> tuple[str, str] | None:
    """(ip, tcp port) of an /ip4/.../tcp/... multiaddr (as ip_of, with the port), or None."""
    parts = str(multiaddr or "").split("/")
    if len(parts) >= 5 and parts[1] == "ip4" and parts[3] == "tcp":
        return parts[2], parts[4]
    return None


def _short(peer: str) -> str:
    return peer if len(peer) <= 12 else f"{peer[:6]}..{peer[-4:]}"


def earliest(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def latest(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


__all__ = [
    "Check",
    "Event",
    "Observation",
    "Status",
    "Verdict",
    "earliest",
    "ip_of",
    "latest",
]
