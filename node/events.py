"""Event log: the node's timeline for /events (docs/contracts.md section 2).

Each `emit` appends an `Event` (seq, monotonic t, type, fields), writes one readable log
line `<t> <name> <type> k=v ...`, and wakes subscribers. Thread-safe: the HTTP API reads
it from its own thread while trio tasks append.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from node import contract

EVENT_TYPES = frozenset(
    {
        "relay_discovered",
        "reservation_accepted",
        "reservation_denied",
        "reservation_expired",
        "reservation_refreshed",
        "addrs_advertised",
        "reservation_granted",  # relay side
        "reservation_refused",  # relay side
        "circuit_opened",
        "circuit_closed",
        "connection_opened",
        "connection_closed",
        "dcutr_started",
        "dcutr_succeeded",
        "dcutr_failed",
        "message_rejected",
        "stream_handler_error",
        "block_committed",
        "sync_completed",
    }
)

log = logging.getLogger("sentrynet.events")


@dataclass(frozen=True)
class Event:
    seq: int
    t: float
    type: str
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The /events record: the contract's Event (node/contract.py) with these fields."""
        return contract.Event.of(self.seq, round(self.t, 4), self.type, self.fields).to_json()

    def line(self, name: str) -> str:
        kv = " ".join(f"{k}={_fmt(v)}" for k, v in self.fields.items())
        return f"{self.t:.3f} {name} {self.type} {kv}".rstrip()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v) or "-"
    return "-" if v is None else str(v)


class EventLog:
    """Append-only, bounded, thread-safe event list with subscriptions."""

    def __init__(self, name: str, max_events: int = 20000, stream: Any = None) -> None:
        self.name = name
        self._events: list[Event] = []
        self._first_seq = 0  # seq of self._events[0] once old events are dropped
        self._next = 0
        self._max = max_events
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[Event], None]] = []
        self._stream = stream if stream is not None else sys.stdout
        self._changed: trio.Event | None = None

    def emit(self, type: str, **fields: Any) -> Event:
        """Record an event; unknown types are allowed but logged as such."""
        if type not in EVENT_TYPES:
            log.warning("event type %r is not in docs/contracts.md", type)
        with self._lock:
            ev = Event(self._next, time.monotonic(), type, dict(fields))
            self._next += 1
            self._events.append(ev)
            if len(self._events) > self._max:
                drop = len(self._events) - self._max
                del self._events[:drop]
                self._first_seq += drop
            subs = list(self._subscribers)
        with contextlib.suppress(OSError, ValueError):
            print(ev.line(self.name), file=self._stream, flush=True)
        for cb in subs:
            try:
                cb(ev)
            except Exception:
                log.exception("event subscriber failed")
        changed = self._changed
        if changed is not None:
            self._changed = None
            with contextlib.suppress(RuntimeError):
                changed.set()
        return ev

    def since(self, n: int) -> tuple[int, list[Event]]:
        """Events with seq >= n and the seq to ask for next."""
        with self._lock:
            start = max(0, n - self._first_seq)
            return self._next, list(self._events[start:])

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback(event)` synchronously on every emit; returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    async def wait_for(self, predicate: Callable[[Event], bool], since: int = 0) -> Event:
        """(trio) Wait until an event with seq >= since matches predicate; return it."""
        while True:
            nxt, events = self.since(since)
            for ev in events:
                if predicate(ev):
                    return ev
            since = nxt
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def count(self, type: str) -> int:
        with self._lock:
            return sum(1 for e in self._events if e.type == type)
