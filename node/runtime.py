"""What every node service shares: config, host, pubsub, events, metrics, connections, dialer.

`NodeRuntime` is built by node/app.py once the host listens; each `Service` (relay client,
relay server, discovery, DCUtR, chain) gets it in `run(rt)`. Services never reach into
each other: they talk through the runtime (connection subscriptions, events, the dialer).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID

from node.config import NodeConfig
from node.contract import Connection
from node.events import EventLog
from node.metrics import Metrics
from node.overrides.conn_parts import closed_event, direction_of, secured_conn
from node.overrides.identify import IdentifyHook
from node.overrides.quic_reuse import direct_addr

if TYPE_CHECKING:
    from libp2p.pubsub.pubsub import Pubsub

log = logging.getLogger("sentrynet.runtime")

CLOSE_GRACE_S = 5.0  # a deliberate close that takes longer is forced (ConnectionTracker.close)

Kind = Literal["direct", "relayed"]


@dataclass
class ConnInfo:
    """One open connection as the node sees it (a row of /status "connections")."""

    peer: ID
    conn: INetConn
    kind: Kind
    direction: str  # inbound | outbound
    remote_addr: str
    opened_at: float  # monotonic
    relay: ID | None = None  # the relay for kind == "relayed"
    seq: int = 0  # registration order (ties of opened_at)
    # seconds the connection took to set up (relayed: CONNECT/STOP to muxer ready, several
    # round trips over the relay): DCUtR scales its timeouts by it
    setup_s: float | None = None
    # liveness (node/liveness.py): last and median ping RTT, pings answered, misses in a row
    rtt_s: float | None = None
    rtt_median_s: float | None = None
    pings_ok: int = 0
    ping_failures: int = 0
    close_reason: str | None = None  # set when the node closes it on purpose

    def record(self) -> Connection:
        return Connection(
            peer=str(self.peer),
            remote_addr=self.remote_addr,
            kind=self.kind,
            transport=transport_of(self.kind, self.remote_addr),
            direction=self.direction,
            opened_at=round(self.opened_at, 4),
            relay=str(self.relay) if self.relay else None,
            rtt_s=self.rtt_s,
            rtt_median_s=self.rtt_median_s,
            pings_ok=self.pings_ok,
            ping_failures=self.ping_failures,
        )

    def to_json(self) -> dict[str, Any]:
        return self.record().to_json()


ConnCallback = Callable[[str, ConnInfo], Awaitable[None] | None]


class UnrecordedConnection(Exception):
    """A connection whose kind nobody recorded (see classify)."""


def classify(conn: INetConn, circuits: dict[str, ID]) -> tuple[Kind, str, ID | None]:
    """(kind, remote_addr, relay) of a swarm connection, from what was recorded when it
    was made.

    Whoever builds the raw connection records its kind, and py-libp2p carries it up to the
    swarm connection (`INetConn.get_connection_type()` / `get_transport_addresses()`):
    the TCP transport marks its connections DIRECT with the peer's TCP address; the
    node's circuit code (node/relay/stop.py, dialer and target side) marks a relay stream
    RELAYED with the address `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>` and
    registers that address and its relay in `circuits` before the upgrade. Anything else
    raises UnrecordedConnection: the node does not guess.
    """
    ctype = conn.get_connection_type()
    if ctype == ConnectionType.UNKNOWN:  # the swarm could not copy it: ask the muxer
        ctype = conn.muxed_conn.get_connection_type()
    addrs = [str(a) for a in conn.get_transport_addresses()]
    if ctype == ConnectionType.RELAYED:
        for a in addrs:
            if a in circuits:
                return "relayed", a, circuits[a]
        raise UnrecordedConnection(f"relayed connection not opened by node/relay: {addrs}")
    if ctype == ConnectionType.DIRECT:
        return "direct", direct_addr(addrs[0]) if addrs else "", None
    raise UnrecordedConnection(f"connection of type {ctype} at {addrs}")


def transport_of(kind: str, remote_addr: str) -> str:
    """tcp | quic | relayed: what carries a connection."""
    if kind == "relayed":
        return "relayed"
    return "quic" if "/quic" in remote_addr else "tcp"


class GuardedNursery:
    """The node's long-lived nursery as services and the tracker see it: a background task
    that raises is logged and counted, never fatal. A trio nursery re-raises a child's
    exception and cancels every sibling, so one bug in a background task (a DCUtR attempt,
    a reservation, a close) used to end the whole node (seen in CI: a DCUtR race took a
    node down at start-up). Services themselves run under the same guard (node/app.py)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.crashed = 0  # background tasks that raised

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(self._guard, fn, args, name=getattr(fn, "__qualname__", fn))

    async def _guard(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except trio.Cancelled:
            raise
        except Exception:
            self.crashed += 1
            log.exception("background task %s crashed", getattr(fn, "__qualname__", fn))


class ConnectionTracker(INotifee):
    """Classifies every connection direct|relayed and tells subscribers about it.

    Registered as a swarm notifee. Subscribers (DCUtR, chain, relay client) get
    `callback("opened"|"closed", info)`; async callbacks run in the runtime nursery.
    """

    def __init__(self, events: EventLog, metrics: Metrics) -> None:
        self.events = events
        self.metrics = metrics
        self._conns: dict[int, ConnInfo] = {}
        self._lock = threading.Lock()
        self._subs: list[ConnCallback] = []
        self.nursery: GuardedNursery | None = None
        # circuit address -> relay, recorded by node/relay/stop.py before each upgrade
        self._circuits: dict[str, ID] = {}
        self.local_peer: ID | None = None  # set once the host exists (duplicate rule)
        self._seq = 0
        self._doomed: set[int] = set()  # duplicates being closed (see duplicates())

    # -- queries (thread-safe snapshots) --
    def all(self) -> list[ConnInfo]:
        with self._lock:
            return [
                c
                for c in self._conns.values()
                if not c.conn.is_closed and id(c.conn) not in self._doomed
            ]

    def is_live(self, conn: INetConn) -> bool:
        """Open and not a duplicate being closed."""
        with self._lock:
            return not conn.is_closed and id(conn) not in self._doomed

    def preference(self, conn: INetConn) -> tuple[bool, int]:
        """Sort key, best first: direct before relayed, then the oldest (an untracked
        connection last)."""
        info = self.info(conn)
        return (info.kind != "direct", info.seq) if info is not None else (True, 1 << 62)

    def best(self, peer: ID) -> ConnInfo | None:
        """The connection to use for peer: direct before relayed, then the oldest."""
        conns = sorted(self.for_peer(peer), key=lambda c: self.preference(c.conn))
        return conns[0] if conns else None

    def for_peer(self, peer: ID) -> list[ConnInfo]:
        return [c for c in self.all() if c.peer == peer]

    def kind_of(self, peer: ID) -> Kind | None:
        """'direct' if any direct connection to peer is open, else 'relayed', else None."""
        kinds = {c.kind for c in self.for_peer(peer)}
        if "direct" in kinds:
            return "direct"
        return "relayed" if kinds else None

    def kind_of_stream(self, stream: INetStream) -> Kind | None:
        """The kind of the connection a stream runs on (None if not tracked yet)."""
        muxed = stream.muxed_conn
        for c in self.all():
            if getattr(c.conn, "muxed_conn", None) is muxed:
                return c.kind
        return None

    def info(self, conn: INetConn) -> ConnInfo | None:
        with self._lock:
            return self._conns.get(id(conn))

    def note_setup(self, conn: Any, seconds: float) -> None:
        """Record how long `conn` (SwarmConn or its muxed conn) took to set up."""
        muxed = getattr(conn, "muxed_conn", conn)
        for c in self.all():
            if c.conn is conn or getattr(c.conn, "muxed_conn", None) is muxed:
                c.setup_s = round(seconds, 4)

    async def wait_closed(self, conn: Any) -> None:
        """Return when a connection (SwarmConn or muxed conn) is closed."""
        ev = closed_event(conn)
        if ev is not None:
            await ev.wait()
            return
        muxed = getattr(conn, "muxed_conn", conn)
        while not getattr(muxed, "is_closed", True):
            await trio.sleep(0.5)

    def record_circuit(self, addr: multiaddr.Multiaddr, relay: ID) -> None:
        """The connection about to be upgraded on a relay stream with transport address
        `addr` (`<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`) is relayed by `relay`.
        Called by the circuit code, dialer and target side, before the upgrade."""
        with self._lock:
            self._circuits[str(addr)] = relay

    def subscribe(self, callback: ConnCallback) -> Callable[[], None]:
        """Hear about every connection opened/closed (`callback(event, ConnInfo)`)."""
        self._subs.append(callback)

        def unsubscribe() -> None:
            if callback in self._subs:
                self._subs.remove(callback)

        return unsubscribe

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.all()]

    # -- INotifee --
    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.on_disconnected(conn)

    def on_connected(self, conn: INetConn) -> None:
        with self._lock:
            if id(conn) in self._conns:
                return
        try:
            kind, remote, relay = classify(conn, self._circuits)
        except UnrecordedConnection as exc:
            log.error("closing a connection of unknown kind: %s", exc)
            if self.nursery is not None:
                self.nursery.start_soon(_close_conn, conn)
            return
        direction = direction_of(conn)
        with self._lock:
            self._seq += 1
            seq = self._seq
        info = ConnInfo(
            peer=conn.muxed_conn.peer_id,
            conn=conn,
            kind=kind,
            direction=direction,
            remote_addr=remote,
            opened_at=time.monotonic(),
            relay=relay,
            seq=seq,
        )
        with self._lock:
            self._conns[id(conn)] = info
        self.metrics.connections_active.labels(kind=kind).inc()
        self.events.emit(
            "connection_opened",
            peer=str(info.peer),
            remote_addr=remote,
            kind=kind,
            transport=transport_of(kind, remote),
            direction=direction,
        )
        self._close_duplicates(info.peer)  # before subscribers look at the peer
        self._notify("opened", info)

    def _close_duplicates(self, peer: ID) -> None:
        """Close the connections to `peer` that duplicates() says go (in the background)."""
        if self.local_peer is None:
            return
        with self._lock:
            live = [
                c
                for c in self._conns.values()
                if c.peer == peer and not c.conn.is_closed and id(c.conn) not in self._doomed
            ]
            victims = duplicates(self.local_peer, live)
            self._doomed |= {id(v.conn) for v in victims}
        for v in victims:
            log.info(
                "closing duplicate %s %s connection to %s (%s)",
                v.kind,
                v.direction,
                v.peer,
                v.remote_addr,
            )
            if self.nursery is not None:
                self.nursery.start_soon(_close_conn, v.conn)

    def on_disconnected(self, conn: INetConn) -> None:
        with self._lock:
            info = self._conns.pop(id(conn), None)
            self._doomed.discard(id(conn))
        if info is None:
            return
        self.metrics.connections_active.labels(kind=info.kind).dec()
        self.events.emit(
            "connection_closed",
            peer=str(info.peer),
            remote_addr=info.remote_addr,
            kind=info.kind,
            reason=info.close_reason or "closed",
        )
        self._notify("closed", info)

    async def close(self, conn: INetConn, reason: str, grace_s: float = CLOSE_GRACE_S) -> None:
        """Close `conn` on purpose; its connection_closed event carries `reason`.

        A dead peer can leave upstream's close stuck writing (yamux GO_AWAY behind a full
        send buffer): after `grace_s` the raw transport is closed under it, and if the
        swarm still has not reported the disconnect, the tracker reports it itself.
        """
        info = self.info(conn)
        if info is not None and info.close_reason is None:
            info.close_reason = reason
        done = trio.Event()

        async def close_it() -> None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing a connection (%s) failed", reason, exc_info=True)
            finally:
                done.set()

        if self.nursery is not None:
            self.nursery.start_soon(close_it)
        else:
            await close_it()
        with trio.move_on_after(grace_s):
            await done.wait()
        if done.is_set() and self.info(conn) is None:
            return
        raw = secured_conn(conn)
        with contextlib.suppress(Exception), trio.move_on_after(grace_s):
            if raw is not None:
                await raw.close()
        with trio.move_on_after(grace_s):
            await done.wait()
        if self.info(conn) is not None:
            log.info("connection to %s did not report its close: reporting it", conn)
            self.on_disconnected(conn)

    def _notify(self, event: str, info: ConnInfo) -> None:
        for cb in list(self._subs):
            try:
                res = cb(event, info)
            except Exception:
                continue
            if res is not None and self.nursery is not None:
                self.nursery.start_soon(_await, res)


def duplicates(local: ID, conns: list[ConnInfo]) -> list[ConnInfo]:
    """Which of our connections to ONE peer to close, so that one per kind remains.

    Both ends apply the same rule to what both can see (kind, and who dialed: outbound on
    the dialer's side, inbound on the other), so they never close different halves:
    - a cross-dial (each side dialed the other, same kind): the connections dialed by the
      larger peer id go (either side may close them; closing twice is harmless);
    - several connections of one kind dialed by the same side: only the dialer decides,
      and it keeps its oldest (node/overrides/multi_addr_dial.py keeps the same one).
    Direct and relayed are left to DCUtR (it closes the relayed one after an upgrade).
    """
    out: list[ConnInfo] = []
    if not conns:
        return out
    peer = conns[0].peer
    we_are_smaller = local.to_bytes() < peer.to_bytes()
    for kind in ("direct", "relayed"):
        ours = sorted(
            (c for c in conns if c.kind == kind and c.direction == "outbound"),
            key=lambda c: c.seq,
        )
        theirs = [c for c in conns if c.kind == kind and c.direction == "inbound"]
        if ours and theirs:
            if we_are_smaller:
                out += theirs
            else:
                out += ours
                ours = []
        out += ours[1:]
    return out


async def _close_conn(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception:
        log.debug("closing a duplicate connection failed", exc_info=True)


async def _await(aw: Awaitable[None]) -> None:
    try:
        await aw
    except Exception:
        log.exception("connection subscriber failed")


class Dialer(Protocol):
    """Reach a peer: direct addresses first, then circuit addresses (node/dialing.py).
    One dial per peer at a time; a connected peer's existing connection is reused."""

    async def connect(self, peer_id: ID) -> INetConn: ...

    def circuit_in_flight(self, peer_id: ID) -> bool:
        """A circuit to peer_id is being opened through a relay."""
        ...

    async def connect_addr(self, addr: multiaddr.Multiaddr) -> ID: ...

    async def dial_direct(
        self, peer_id: ID, addrs: list[multiaddr.Multiaddr] | None = None, timeout: float = ...
    ) -> INetConn:
        """A direct connection to peer_id, even when a relayed one exists."""
        ...


@runtime_checkable
class Service(Protocol):
    """A long-running part of the node started after the host listens."""

    name: str

    async def run(self, rt: NodeRuntime) -> None: ...

    def status(self) -> dict[str, Any] | list[Any]: ...


# What services ask of each other: small views (NodeRuntime.relay_client and the like).


@runtime_checkable
class RelayHolder(Protocol):
    """The relay client (node/relay/client.py), as discovery, the dialer, DCUtR and the
    chain see it."""

    def relays_held(self) -> set[ID]: ...

    def relays_pending(self) -> set[ID]: ...

    def candidate_relays(self) -> list[tuple[str, ID]]: ...

    def reservation_pending(self) -> bool: ...


@runtime_checkable
class RelayServing(Protocol):
    """The relay server (node/relay/server.py), as discovery sees it: whom not to trim."""

    def peers_served(self) -> set[ID]: ...


@runtime_checkable
class DialsInFlight(Protocol):
    """Discovery (node/discovery.py), as the chain sees it while the peer set settles."""

    def dials_in_flight(self) -> int: ...


@dataclass
class NodeRuntime:
    config: NodeConfig
    host: IHost
    pubsub: Pubsub | None
    events: EventLog
    metrics: Metrics
    connections: ConnectionTracker
    dialer: Dialer
    nursery: GuardedNursery
    started_at: float = field(default_factory=time.monotonic)
    services: dict[str, Service] = field(default_factory=dict)
    # subscribe(cb(peer_id)): called after identify / identify-push (node/overrides)
    identify_hook: IdentifyHook | None = None
    # counts for /status "rejected" (hop, stop, dcutr, sync, consensus)
    rejected: dict[str, int] = field(
        default_factory=lambda: {"hop": 0, "stop": 0, "dcutr": 0, "sync": 0, "consensus": 0}
    )

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    # the services others ask things of, as the small views above (None when not run)
    @property
    def relay_client(self) -> RelayHolder | None:
        svc = self.services.get("relay_client")
        return svc if isinstance(svc, RelayHolder) else None

    @property
    def relay_server(self) -> RelayServing | None:
        svc = self.services.get("relay_server")
        return svc if isinstance(svc, RelayServing) else None

    @property
    def discovery(self) -> DialsInFlight | None:
        svc = self.services.get("discovery")
        return svc if isinstance(svc, DialsInFlight) else None

    def reject(self, protocol: str, reason: str) -> None:
        """Count and log one rejected protocol message (contract: messages_rejected_total)."""
        self.rejected[protocol] = self.rejected.get(protocol, 0) + 1
        self.metrics.messages_rejected_total.labels(protocol=protocol, reason=reason).inc()
        self.events.emit("message_rejected", protocol=protocol, reason=reason)
