"""Reading nodes over their HTTP API (docs/contracts.md section 2), over the control network only.

`NodeClient` is one node's API (`RunningTestnet.client(name)` hands one out);
`TestnetStatus` is a snapshot of every node at one moment, the input of `sentrynet status`,
`sentrynet graph`, the post-up audit and the scenarios.
The harness never reads a node any other way: if it is not in /status or /events, the
harness does not know it. What it reads is typed by node/contract.py (`Status`, `Event`),
the records the node builds its JSON from.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from harness.errors import SentrynetError
from harness.model import Node, Testnet
from node.contract import Circuit, Connection, DcutrAttempt, Event, Reservation, Status


class NodeUnreachable(SentrynetError):
    """A node's API did not answer; the message says how (refused, timeout, bad JSON)."""


def describe_error(exc: BaseException) -> str:
    """A short, human reason for a failed API call ("connection refused", "timeout")."""
    if isinstance(exc, requests.ConnectTimeout | requests.ReadTimeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc).lower()
        if "refused" in text:
            return "connection refused"
        if "no route" in text or "unreachable" in text:
            return "no route to host"
        return "connection error"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        if exc.response.status_code == 502 and exc.response.headers.get("X-Sentrynet-Gateway"):
            # the control gateway (multi-host) could not reach the node: say why, as above
            reason = (exc.response.headers.get("X-Sentrynet-Gateway") or "").lower()
            return "connection refused" if "refused" in reason else f"gateway: {reason[:80]}"
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ValueError):
        return "invalid JSON"
    return f"{type(exc).__name__}: {exc}"


class NodeClient:
    """One node's HTTP API at `http://<control ip>:<port>`."""

    def __init__(self, api_url: str, timeout_s: float = 2.0, proxy: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        # never through the environment's HTTP proxy: control IPs are local; a multi-host
        # testnet's control gateway (harness/model/testnet.py ControlGateway) is the one
        # proxy, when the node's `api_proxy` names it
        self.session.trust_env = False
        if proxy:
            self.session.proxies = {"http": proxy}

    def _get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        url = f"{self.api_url}{path}"
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout_s)
            resp.raise_for_status()
        except requests.RequestException as exc:
            raise NodeUnreachable(f"GET {url}: {describe_error(exc)}") from exc
        return resp

    def _json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self._get(path, params)
        try:
            data = resp.json()
        except ValueError as exc:
            raise NodeUnreachable(f"GET {resp.url}: invalid JSON: {resp.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise NodeUnreachable(f"GET {resp.url}: expected a JSON object, got {data!r:.200}")
        return data

    def status(self) -> dict[str, Any]:
        """GET /status as served (JSON); `read_status` is the typed record."""
        return self._json("/status")

    def read_status(self) -> Status:
        return Status.from_json(self.status())

    def events(self, since: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """Events with seq >= since, and the `since` to pass next time."""
        data = self._json("/events", {"since": since})
        return int(data.get("next", since)), list(data.get("events") or [])

    def read_events(self, since: int = 0) -> tuple[int, list[Event]]:
        """`events` as typed records."""
        nxt, evs = self.events(since)
        return nxt, [Event.from_json(e) for e in evs]

    def metrics(self) -> str:
        return self._get("/metrics").text

    @classmethod
    def of(cls, node: Node, timeout_s: float = 2.0) -> NodeClient:
        return cls(node.api_url, timeout_s, node.api_proxy)


NOT_READ = "api: none (never read; judged from outside)"


@dataclass
class NodeStatus:
    """One node's /status at snapshot time, or why it could not be read."""

    target: Node
    status: Status | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def ok(self) -> bool:
        return self.status is not None

    @property
    def down(self) -> bool:
        """Should answer /status and does not (a node with `api: none` is never down here:
        it is not asked)."""
        return self.target.has_api and self.status is None

    @property
    def peer_id(self) -> str | None:
        return (self.status.peer_id if self.status else None) or self.target.peer_id

    @property
    def height(self) -> int | None:
        h = self.status.height if self.status else None
        return int(h) if h is not None else None

    @property
    def sync_state(self) -> str | None:
        chain = self.status.chain if self.status else None
        return chain.sync_state if chain else None

    @property
    def reservations(self) -> list[Reservation]:
        return list(self.status.reservations) if self.status else []

    @property
    def connections(self) -> list[Connection]:
        return list(self.status.connections) if self.status else []

    @property
    def circuits(self) -> list[Circuit]:
        return list(self.status.circuits) if self.status else []

    @property
    def dcutr(self) -> list[DcutrAttempt]:
        return list(self.status.dcutr) if self.status else []

    def peers(self) -> set[str]:
        """Distinct connected peers (a peer may have several connections, e.g. relayed and
        direct during a DCUtR upgrade)."""
        return {str(c.peer) for c in self.connections}

    def connections_of_kind(self, kind: str) -> list[Connection]:
        return [c for c in self.connections if c.kind == kind]

    def dcutr_outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.dcutr:
            outcome = str(d.outcome)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        """The per-node JSON record of `sentrynet status --json`."""
        return {
            "name": self.name,
            "role": self.target.role,
            "networks": list(self.target.networks),
            "api": self.target.api_url,
            "ok": self.ok,
            "error": self.error,
            "peer_id": self.peer_id,
            "height": self.height,
            "sync_state": self.sync_state,
            "reservations": len(self.reservations),
            "peers": len(self.peers()),
            "connections": {
                "direct": len(self.connections_of_kind("direct")),
                "relayed": len(self.connections_of_kind("relayed")),
            },
            "circuits": len(self.circuits),
            "dcutr": self.dcutr_outcomes(),
            "status": self.status.to_json() if self.status else None,
        }


@dataclass
class TestnetStatus:
    """Every node's /status, read in parallel at (nearly) one moment."""

    __test__ = False  # not a pytest test class despite the name

    testnet: str
    nodes: list[NodeStatus] = field(default_factory=list)

    @classmethod
    def collect(
        cls, testnet: Testnet, timeout_s: float = 2.0, only: Collection[str] | None = None
    ) -> TestnetStatus:
        """`only`: read just these nodes (a wait that has seen the others answer need not
        ask them again: on a 64-node testnet every /status read is CPU a starting node
        could have had)."""

        def read(node: Node) -> NodeStatus:
            if not node.has_api:
                return NodeStatus(node, error=NOT_READ)
            try:
                return NodeStatus(node, NodeClient.of(node, timeout_s).read_status())
            except NodeUnreachable as exc:
                return NodeStatus(node, error=str(exc).split(": ", 1)[-1])

        wanted = [n for n in testnet.nodes if only is None or n.name in only]
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(wanted)))) as pool:
            nodes = list(pool.map(read, wanted))
        return cls(testnet.name, nodes)

    def by_name(self, name: str) -> NodeStatus:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def name_of_peer(self) -> dict[str, str]:
        """peer id -> node name (from /status, else from the model for nodes that are down)."""
        return {n.peer_id: n.name for n in self.nodes if n.peer_id}

    def ready(self) -> list[NodeStatus]:
        return [n for n in self.nodes if n.ok]

    def to_json(self) -> str:
        return json.dumps(
            {"testnet": self.testnet, "nodes": [n.summary() for n in self.nodes]}, indent=2
        )

    def table(self) -> str:
        """The human view: one row per node."""
        header = (
            "node",
            "role",
            "networks",
            "height",
            "peers",
            "resv",
            "direct",
            "relayed",
            "circuits",
            "dcutr ok/fail",
            "state",
        )
        rows: list[tuple[str, ...]] = [header]
        for n in self.nodes:
            if not n.ok:
                rows.append(
                    (
                        n.name,
                        n.target.role,
                        ",".join(n.target.networks),
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        "-",
                        f"DOWN ({n.error})",
                    )
                )
                continue
            outcomes = n.dcutr_outcomes()
            rows.append(
                (
                    n.name,
                    n.target.role,
                    ",".join(n.target.networks),
                    str(n.height if n.height is not None else "-"),
                    str(len(n.peers())),
                    str(len(n.reservations)),
                    str(len(n.connections_of_kind("direct"))),
                    str(len(n.connections_of_kind("relayed"))),
                    str(len(n.circuits)),
                    f"{outcomes.get('succeeded', 0)}/{outcomes.get('failed', 0)}",
                    str(n.sync_state or "up"),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        ready = len(self.ready())
        lines.append(f"{ready}/{len(self.nodes)} nodes answering (testnet {self.testnet})")
        return "\n".join(line.rstrip() for line in lines)
