"""Observing a running testnet: every node's /status and new /events, and the kernel
tables read from outside (routers' conntrack, TCP tables of nodes with `api: none`), folded
into the `Observation` the checks (harness/checks/) read."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from docker.models.containers import Container

from harness.checks import Event, Observation
from harness.client import NodeClient, NodeUnreachable
from harness.infra import docker as docker_ops
from harness.infra import netstate
from harness.infra.netstate import Flow, TcpSocket
from harness.model import Network, Node
from node.contract import Status


@dataclass
class OutsideReader:
    """The evidence no node has to give: each NAT router's conntrack table and the TCP
    table of each node that serves no API, read from the kernel (harness/infra/netstate.py).
    Routers are read for every testnet that has them (DCUtR verdicts name what they saw),
    TCP tables only where a node cannot be asked."""

    testnet: str
    routers: dict[str, str]  # private network -> its router's name
    nodes: list[str]  # nodes with `api: none`
    _containers: dict[str, Container] = field(default_factory=dict, repr=False)

    def _container(self, name: str) -> Container:
        if name not in self._containers:
            self._containers[name] = docker_ops.node_container(self.testnet, name)
        return self._containers[name]

    def read(self) -> tuple[dict[str, list[TcpSocket]], dict[str, list[Flow]], dict[str, str]]:
        sockets: dict[str, list[TcpSocket]] = {}
        flows: dict[str, list[Flow]] = {}
        errors: dict[str, str] = {}
        for net, router in self.routers.items():
            try:
                found, err = netstate.conntrack_table(self._container(router))
            except Exception as exc:  # a container removed under us: say so, keep observing
                found, err = None, str(exc)
            if found is None:
                errors[router] = err or "unreadable"
            else:
                flows[net] = found
        for name in self.nodes:
            try:
                socks, err = netstate.tcp_table(self._container(name))
            except Exception as exc:
                socks, err = None, str(exc)
            if socks is None:
                errors[name] = err or "unreadable"
            else:
                sockets[name] = socks
        return sockets, flows, errors


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
        outside: OutsideReader | None = None,
    ) -> None:
        self.nodes = nodes
        self.nets = nets or {}
        self.clients = clients
        self.outside = outside
        self.sockets: dict[str, list[TcpSocket]] = {}
        self.flows: dict[str, list[Flow]] = {}
        self.outside_errors: dict[str, str] = {}
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

    def _read_outside(self) -> None:
        if self.outside is not None:
            self.sockets, self.flows, self.outside_errors = self.outside.read()

    def observe(self) -> Observation:
        """Poll every node (in parallel) and return the current Observation."""
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(self.clients) + 1))) as pool:
            outside = pool.submit(self._read_outside)
            list(pool.map(self._poll_node, list(self.clients)))
            outside.result()
        self.last = Observation(
            t=self.now(),
            nodes=self.nodes,
            nets=self.nets,
            status=dict(self.status),
            unreachable=dict(self.errors),
            events={k: list(v) for k, v in self.events.items()},
            marks=self.marks,
            clock=dict(self.clock),
            sockets=dict(self.sockets),
            flows=dict(self.flows),
            outside_errors=dict(self.outside_errors),
        )
        return self.last
