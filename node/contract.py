"""The node's HTTP contract as types: the /status document and /events records
(docs/contracts.md section 2), shared by the node (which builds its JSON from them) and the
harness (whose status client and checks read them back with `from_json`).

Why typed: the prose contract alone let the two sides drift, and the checks read it through
untyped `.get(` chains where a misspelt key is silently None. Every record is a frozen
dataclass; `to_json` gives the JSON the node serves, `from_json` reads it back (a missing
key takes its default, so an older or partial document still reads). Imports nothing of
py-libp2p: the harness imports this module.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

R = TypeVar("R", bound="Record")


class Record:
    """JSON <-> dataclass for the records below (fields in contract order).

    A record with `EXTRA` set keeps the keys its fields do not name in that field; one with
    `GIVEN` set keeps the names of the keys the JSON carried in that field."""

    EXTRA: typing.ClassVar[str] = ""
    GIVEN: typing.ClassVar[str] = ""

    @classmethod
    def from_json(cls: type[R], doc: Mapping[str, Any]) -> R:
        hints = _hints(cls)
        kwargs = {k: _read(hints[k], v) for k, v in doc.items() if k in hints}
        if cls.EXTRA:
            kwargs[cls.EXTRA] = {k: v for k, v in doc.items() if k not in hints}
        if cls.GIVEN:
            kwargs[cls.GIVEN] = tuple(k for k in doc if k != cls.GIVEN)
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        skip = (self.EXTRA, self.GIVEN)
        out = {k: _write(getattr(self, k)) for k in _hints(type(self)) if k not in skip}
        if self.EXTRA:
            out.update(getattr(self, self.EXTRA))
        return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field name -> type, in field order (the JSON's key order)."""
    if cls not in _HINTS:
        hints = get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _read(hint: Any, value: Any) -> Any:
    """One JSON value as the field's type: records, tuples of them, optional records."""
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in get_args(hint):
            if arg is not type(None):
                return _read(arg, value)
    if isinstance(hint, type) and issubclass(hint, Record) and isinstance(value, Mapping):
        return hint.from_json(value)
    if origin is tuple and isinstance(value, list | tuple):
        (item,) = get_args(hint)[:1]
        return tuple(_read(item, v) for v in value)
    if origin is dict and isinstance(value, Mapping):
        return dict(value)
    return value


def _write(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_write(v) for v in value]
    if isinstance(value, dict):
        return {k: _write(v) for k, v in value.items()}
    return value


# --- /status rows ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reservation(Record):
    """A reservation this node (a relay client) holds on a relay."""

    relay: str = ""  # the relay's peer id
    relay_addrs: tuple[str, ...] = ()
    addrs: tuple[str, ...] = ()  # circuit addresses the relay handed out
    expires_at: int | None = None  # unix seconds
    accepted_at: float | None = None  # node monotonic seconds


@dataclasses.dataclass(frozen=True)
class RelayCandidate(Record):
    peer: str = ""
    addr: str | None = None
    source: str | None = None  # config | identify


@dataclasses.dataclass(frozen=True)
class Connection(Record):
    """One open connection (one per peer and kind)."""

    peer: str = ""
    remote_addr: str | None = None
    kind: str | None = None  # direct | relayed
    transport: str | None = None  # tcp | quic | relayed (None: a node before QUIC)
    direction: str | None = None  # inbound | outbound
    opened_at: float | None = None
    relay: str | None = None  # the relay's peer id when relayed
    rtt_s: float | None = None
    rtt_median_s: float | None = None
    pings_ok: int = 0
    ping_failures: int = 0


@dataclasses.dataclass(frozen=True)
class Circuit(Record):
    """A circuit this node relays."""

    id: int | None = None
    src: str | None = None
    dst: str | None = None
    bytes: int = 0
    opened_at: float | None = None


@dataclasses.dataclass(frozen=True)
class DcutrAttempt(Record):
    """One DCUtR attempt (a row of /status dcutr)."""

    peer: str = ""
    role: str | None = None  # initiator | responder
    attempt: int | None = None
    outcome: str | None = None  # started | succeeded | failed
    reason: str | None = None
    detail: str | None = None
    duration_s: float | None = None
    addr: str | None = None
    rtt_s: float | None = None
    at: float | None = None
    final: bool | None = None  # None: the node did not say
    phases: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SyncPeer(Record):
    """What one peer served this node over one connection kind."""

    peer: str = ""
    kind: str | None = None
    blocks: int = 0
    bytes: int = 0
    from_height: int | None = None
    to_height: int | None = None


@dataclasses.dataclass(frozen=True)
class Chain(Record):
    GIVEN: typing.ClassVar[str] = "given"

    height: int | None = None
    tip_hash: str | None = None
    sync_state: str | None = None  # synced | syncing | idle
    sync_peers: tuple[SyncPeer, ...] = ()
    voting: bool | None = None
    round: int | None = None
    step: str | None = None
    validators: int | None = None
    best_peer_height: int | None = None
    peer_heights: dict[str, int] = dataclasses.field(default_factory=dict)
    mesh_peers: tuple[str, ...] = ()  # the chain topic's gossip mesh: where votes travel
    # peers that told us they subscribe to the chain topic (mesh candidates)
    topic_peers: tuple[str, ...] = ()
    # this round's proposal, prevotes and precommits: the validators they came from
    heard: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    serve_sync: bool | None = None
    commits: int | None = None
    error: str | None = None
    # the keys the node's JSON carried (another implementation may report fewer)
    given: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Grant(Record):
    """A reservation this node granted as a relay."""

    peer: str = ""
    expires_at: int | None = None
    accepted_at: float | None = None


@dataclasses.dataclass(frozen=True)
class RelayServer(Record):
    granted: tuple[Grant, ...] = ()
    circuits: tuple[Circuit, ...] = ()


@dataclasses.dataclass(frozen=True)
class Liveness(Record):
    interval_s: float | None = None
    timeout_s: float | None = None
    failures: int | None = None
    watching: int = 0
    closed: int = 0
    skipped: int = 0  # looks at a connection that needed no ping: the peer had sent data


@dataclasses.dataclass(frozen=True)
class KnownPeer(Record):
    """A peer learnt from persistent_peers or peer exchange."""

    peer: str = ""
    source: str | None = None  # persistent | px:<peer>
    addrs: tuple[str, ...] = ()
    failures: int = 0
    last_error: str | None = None


def _rejected() -> dict[str, int]:
    return {"hop": 0, "stop": 0, "dcutr": 0, "sync": 0, "consensus": 0}


@dataclasses.dataclass(frozen=True)
class Status(Record):
    """GET /status. Keys outside the contract (a service's status the contract does not
    name yet) are kept in `extra` and written back as they came."""

    EXTRA: typing.ClassVar[str] = "extra"

    name: str = ""
    role: str = ""
    started_at: float | None = None  # node monotonic seconds
    uptime_s: float | None = None
    peer_id: str = ""
    listen_addrs: tuple[str, ...] = ()
    advertised_addrs: tuple[str, ...] = ()
    # where peers saw us over direct connections (identify), at our listen ports: what a
    # DCUtR CONNECT offers; a private address only means no peer outside our network has
    # told us yet
    observed_addrs: tuple[str, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    relay_candidates: tuple[RelayCandidate, ...] = ()
    connections: tuple[Connection, ...] = ()
    circuits: tuple[Circuit, ...] = ()
    dcutr: tuple[DcutrAttempt, ...] = ()
    chain: Chain | None = None
    rejected: dict[str, int] = dataclasses.field(default_factory=_rejected)
    handler_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    ready: bool = False
    peers_known: tuple[KnownPeer, ...] = ()
    pubsub_peers: tuple[str, ...] = ()
    relay_server: RelayServer | None = None
    liveness: Liveness | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def height(self) -> int | None:
        return self.chain.height if self.chain is not None else None

    def connections_to(self, peer: str | None) -> list[Connection]:
        return [c for c in self.connections if peer and c.peer == peer]


# --- /events --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event(Record):
    """One /events record. `seq`, `t` (node monotonic seconds) and `type` are always there;
    the other fields are those of its type (docs/contracts.md table), None when the type
    does not carry them. `ts` (harness seconds since up) and `epoch` (process restarts seen)
    are added by the harness when it reads the log; the node never sets them."""

    EXTRA: typing.ClassVar[str] = "extra"
    GIVEN: typing.ClassVar[str] = "given"

    seq: int = 0
    t: float | None = None
    type: str = ""
    peer: str | None = None
    relay: str | None = None
    addr: str | None = None
    addrs: tuple[str, ...] | None = None
    source: str | None = None
    expires_at: int | None = None
    renewed: bool | None = None
    reason: str | None = None
    src: str | None = None
    dst: str | None = None
    side: str | None = None  # relay | dialer | target
    id: int | None = None
    bytes: int | None = None
    remote_addr: str | None = None
    kind: str | None = None
    direction: str | None = None
    role: str | None = None
    attempt: int | None = None
    duration_s: float | None = None
    rtt_s: float | None = None
    final: bool | None = None
    detail: str | None = None
    protocol: str | None = None
    height: int | None = None
    hash: str | None = None
    proposer: str | None = None
    round: int | None = None
    via: str | None = None
    from_height: int | None = None
    to_height: int | None = None
    peers: tuple[str, ...] | None = None
    ts: float | None = None
    epoch: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    # the keys the JSON carried, in its order: to_json writes exactly those back (a field
    # the node sets to null stays null; one of another event type stays absent)
    given: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, seq: int, t: float, type: str, fields: Mapping[str, Any]) -> Event:
        """The record of an event the node emits (`fields` as passed to EventLog.emit)."""
        return cls.from_json({"seq": seq, "t": t, "type": type, **fields})

    def to_json(self) -> dict[str, Any]:
        hints = _hints(Event)
        return {
            k: _write(getattr(self, k)) if k in hints else self.extra[k]
            for k in self.given
            if k in hints or k in self.extra
        }

    def with_harness_time(self, ts: float | None, epoch: int) -> Event:
        """The event as the harness keeps it: with its harness time and process epoch."""
        given = self.given + tuple(k for k in ("ts", "epoch") if k not in self.given)
        return dataclasses.replace(self, ts=ts, epoch=epoch, given=given)


__all__ = [
    "Chain",
    "Circuit",
    "Connection",
    "DcutrAttempt",
    "Event",
    "Grant",
    "KnownPeer",
    "Liveness",
    "RelayCandidate",
    "RelayServer",
    "Reservation",
    "Status",
    "SyncPeer",
]
