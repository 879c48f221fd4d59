"""Observing a running testnet: every node's /status and new /events, folded into the
`Observation` the checks (harness/checks/) read."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from harness.checks import Event, Observation
from harness.client import NodeClient, NodeUnreachable
from harness.model import Network, Node
from node.contract import Status


@dataclass
class _NodeCursor:
    cursor: int = 0
    epoch: int = 0
    started_at: float | None = None
    peer_id: str | None = None


class Observer:
    """Polls every node's /status and new /events, keeping the event history since `up`.

    Restarts are detected (started_at or peer id changes, or /events `next` going
    backwards): the cursor restarts at 0 and the node's `epoch` goes up, so history from
    before the restart is kept and never confused with the new process's events.
    Event times are converted to harness seconds since `up` (field `ts`) with the offset
    between the node's clock (started_at + uptime_s) and ours at the moment of the poll.
    """

    def __init__(
        self,
        nodes: dict[str, Node],
        clients: dict[str, NodeClient],
        nets: dict[str, Network] | None = None,
        t_up: float | None = None,
    ) -> None:
        self.nodes = nodes
        self.nets = nets or {}
        self.clients = clients
        self.t_up = time.monotonic() if t_up is None else t_up
        self.marks: dict[str, Any] = {}
        self.events: dict[str, list[Event]] = {n: [] for n in clients}
        self.status: dict[str, Status] = {}
        self.errors: dict[str, str] = {}
        self.clock: dict[str, float] = {}
        self._cur = {n: _NodeCursor() for n in clients}
        self.last: Observation | None = None

    def now(self) -> float:
        return time.monotonic() - self.t_up

    def _poll_node(self, name: str) -> None:
        client = self.clients[name]
        cur = self._cur[name]
        try:
            st = client.read_status()
        except NodeUnreachable as exc:
            self.status.pop(name, None)
            self.errors[name] = str(exc).split(": ", 1)[-1]
            return
        t_harness = self.now()
        self.errors.pop(name, None)
        started, pid = st.started_at, st.peer_id
        if (cur.started_at is not None and started != cur.started_at) or (
            cur.peer_id is not None and pid != cur.peer_id
        ):
            cur.epoch += 1
            cur.cursor = 0
        cur.started_at, cur.peer_id = started, pid
        if started is not None and st.uptime_s is not None:
            self.clock[name] = t_harness - (float(started) + float(st.uptime_s))
        self.status[name] = st
        try:
            nxt, evs = client.events(cur.cursor)
        except NodeUnreachable as exc:
            self.errors[name] = f"/events: {str(exc).split(': ', 1)[-1]}"
            return
        if nxt < cur.cursor:  # restarted between the two calls: read the new log from 0
            cur.epoch += 1
            nxt, evs = client.events(0)
        offset = self.clock.get(name)
        for doc in evs:
            e = Event.from_json(doc)
            ts = float(e.t) + offset if (e.t is not None and offset is not None) else t_harness
            self.events[name].append(e.with_harness_time(ts, cur.epoch))
        cur.cursor = nxt

    def observe(self) -> Observation:
        """Poll every node (in parallel) and return the current Observation."""
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(self.clients)))) as pool:
            list(pool.map(self._poll_node, list(self.clients)))
        self.last = Observation(
            t=self.now(),
            nodes=self.nodes,
            nets=self.nets,
            status=dict(self.status),
            unreachable=dict(self.errors),
            events={k: list(v) for k, v in self.events.items()},
            marks=self.marks,
            clock=dict(self.clock),
        )
        return self.last
