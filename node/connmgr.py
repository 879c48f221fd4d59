"""The peer budget as watermarks: whom to dial, whom to close, when a peer may be dialed again.

Why not a hard cap (what discovery did before): every node dialed learnt peers while it was
under `p2p.max_connections` and closed the newest inbound peer the moment it went over. In
the 64-node bench (8 peers a client) every node wanted exactly the budget, so the testnet's
wanted connections equalled its capacity: each close freed a slot its peer refilled at
once with another dial (through a circuit and a hole punch for a peer behind another
NAT), and the one it closed did the same. One client closed 28 peers for the budget, one
sentry carried 204 circuits in six minutes, and clients at 0.02 cores answered their relays
more than 10 s late.

Like go-libp2p's connection manager (low and high watermarks, a grace period):
- dial learnt peers only while below the low watermark (3/4 of the budget), so the peers
  a node wants leave room for the ones that want it;
- accept up to the budget, the high watermark; above it close the excess, newest inbound
  first, but never a connection younger than GRACE_S (it may be a hole punch or a
  reservation under way) unless the node holds more than twice its budget, or the peer is
  one it closed for the budget within STABLE_S (it dialed straight back);
- a peer that hung up within HUNG_UP_S is dialed again only after a backoff that doubles
  on each such close (it is likely full), and a successful dial no longer resets that
  backoff: only a connection that lasted STABLE_S does. Before, a dial that succeeded
  reset it to 0.5 s, the full peer closed the connection at once, and the pair went round
  every second or two, a circuit and a hole punch each time for a peer behind another NAT.
  That backoff grows to HUNG_UP_BACKOFF_MAX_S (Redial). It used to stop at 60 s, and the
  dial itself cut it back to 30 s: in a settled 32-node testnet each sentry (below its low
  watermark, the clients full at 8 peers) dialed every client again every 30 s, about 28
  circuits a minute per sentry, each a relay hop, two Noise handshakes and a hole punch
  started for a connection closed 0.05 s later (docs/bench.md, 2026-12-07).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

GRACE_S = 20.0
HUNG_UP_S = 10.0
STABLE_S = 120.0
REDIAL_MIN_S = 0.5
DIAL_BACKOFF_MAX_S = 30.0  # a dial that failed or is under way: retried within this
# A peer that hung up at once is full, most likely: the first redial waits this long (it was
# 0.5 s, doubling: a starting 64-node testnet's sentries dialed each full client about ten
# times in their first two minutes, while the clients waited on them for reservations),
# and each later one twice as long, up to the maximum (a full peer stays full).
HUNG_UP_FIRST_S = 30.0
HUNG_UP_BACKOFF_MAX_S = 600.0
HARD_FACTOR = 2  # over this many times the budget, the grace period does not protect


P = TypeVar("P")


@dataclass(frozen=True)
class Watermarks:
    low: int
    high: int

    @classmethod
    def of(cls, max_connections: int, low: int | None = None) -> Watermarks:
        """high = the budget; low as given (0 to the budget) or 3/4 of the budget (rounded
        up, at least 1)."""
        high = max(1, max_connections)
        if low is not None:
            return cls(low=max(0, min(high, low)), high=high)
        return cls(low=max(1, min(high, -(-3 * high // 4))), high=high)

    def dial_room(self, held: int) -> int:
        """How many more learnt peers to dial now, `held` peers connected or being dialed."""
        return max(0, self.low - held)


@dataclass(frozen=True)
class Candidate(Generic[P]):
    """One connected peer as the trim sees it: its newest connection's age and direction."""

    peer: P
    inbound: bool
    opened_at: float


def trim_victims(
    marks: Watermarks,
    peers: Sequence[Candidate[P]],
    protected: Iterable[P],
    now: float,
    grace_s: float = GRACE_S,
    recent: Iterable[P] = (),
) -> list[P]:
    """The peers to close: as many as the node holds above its high watermark, unprotected,
    newest inbound first, none within the grace period unless over HARD_FACTOR x high or
    in `recent` (closed for the budget a moment ago, and back)."""
    excess = len(peers) - marks.high
    if excess <= 0:
        return []
    keep, again = set(protected), set(recent)
    hard = len(peers) > HARD_FACTOR * marks.high
    order = sorted(peers, key=lambda c: (not c.inbound, -c.opened_at))
    out: list[P] = []
    for c in order:
        if len(out) >= excess:
            break
        if c.peer in keep or c.peer in out:
            continue
        if not hard and c.peer not in again and now - c.opened_at < grace_s:
            continue
        out.append(c.peer)
    return out


def after_close(opened_at: float, closed_at: float) -> str:
    """What a closed connection does to its peer's redial backoff: `backoff` (it hung up at
    once: double it), `reset` (it lasted: back to the minimum) or `keep`."""
    lived = closed_at - opened_at
    if lived < HUNG_UP_S:
        return "backoff"
    return "reset" if lived >= STABLE_S else "keep"


@dataclass
class Redial:
    """When a learnt peer may be dialed again: after each dial a backoff that doubles up to
    DIAL_BACKOFF_MAX_S; after a close within HUNG_UP_S at least HUNG_UP_FIRST_S, doubling
    up to HUNG_UP_BACKOFF_MAX_S, which a later dial never shortens; back to REDIAL_MIN_S
    only once a connection lasted STABLE_S."""

    next_at: float = 0.0
    backoff: float = REDIAL_MIN_S
    # a random spread of each hang-up wait (a quarter either way): the peers a node dialed
    # together at its start would otherwise come due together, every wait, in one burst
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def dialed(self, now: float) -> None:
        self.next_at = now + self.backoff
        self.backoff = max(self.backoff, min(self.backoff * 2, DIAL_BACKOFF_MAX_S))

    def closed(self, opened_at: float, now: float) -> str:
        """Its last connection closed (none left): the after_close verdict, applied."""
        verdict = after_close(opened_at, now)
        if verdict == "backoff":
            self.backoff = min(max(self.backoff * 2, HUNG_UP_FIRST_S), HUNG_UP_BACKOFF_MAX_S)
            self.next_at = now + self.backoff * self.rng.uniform(0.75, 1.25)
        elif verdict == "reset":
            self.backoff = REDIAL_MIN_S
        return verdict

    def hold(self, until: float) -> None:
        """Not before `until` (we closed it for the budget ourselves)."""
        self.next_at = max(self.next_at, until)
