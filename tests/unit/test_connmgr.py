"""The peer budget's policy (node/connmgr.py): watermarks, the grace period, backoff."""

from __future__ import annotations

import itertools
import random

import pytest

from node.connmgr import (
    DIAL_BACKOFF_MAX_S,
    GRACE_S,
    HARD_FACTOR,
    HUNG_UP_BACKOFF_MAX_S,
    HUNG_UP_FIRST_S,
    HUNG_UP_S,
    REDIAL_MIN_S,
    STABLE_S,
    Candidate,
    Redial,
    Watermarks,
    after_close,
    trim_victims,
)

NOW = 1000.0


def old(peer: str, inbound: bool = True, age: float = GRACE_S + 1) -> Candidate[str]:
    return Candidate(peer, inbound, NOW - age)


def test_low_watermark_is_three_quarters_of_the_budget() -> None:
    assert Watermarks.of(32) == Watermarks(24, 32)
    assert Watermarks.of(8) == Watermarks(6, 8)
    assert Watermarks.of(2) == Watermarks(2, 2)
    assert Watermarks.of(1) == Watermarks(1, 1)


def test_dials_only_below_the_low_watermark() -> None:
    m = Watermarks.of(8)
    assert m.dial_room(0) == 6
    assert m.dial_room(5) == 1
    assert m.dial_room(6) == 0
    assert m.dial_room(7) == 0  # inbound peers beyond it are accepted, not dialed


def test_nothing_closed_at_or_under_the_budget() -> None:
    m = Watermarks.of(4)
    assert trim_victims(m, [old(f"p{i}") for i in range(4)], (), NOW) == []


def test_the_excess_goes_newest_inbound_first_protected_kept() -> None:
    m = Watermarks.of(3)
    peers = [
        old("relay", age=400),
        old("in-old", age=300),
        old("in-new", age=100),
        old("out-new", inbound=False, age=50),
        old("in-newest-protected", age=60),
    ]
    assert trim_victims(m, peers, {"relay", "in-newest-protected"}, NOW) == ["in-new", "in-old"]


def test_grace_protects_a_young_connection_until_it_is_old_enough() -> None:
    m = Watermarks.of(2)
    peers = [old("a", age=GRACE_S + 5), old("b"), old("young", age=GRACE_S / 2)]
    assert trim_victims(m, peers, (), NOW) == ["b"]  # the newest past its grace
    assert trim_victims(m, peers, {"a", "b"}, NOW) == []  # the young one waits


def test_grace_gives_way_over_twice_the_budget_and_to_a_peer_back_at_once() -> None:
    m = Watermarks.of(2)
    young = [old(f"y{i}", age=1 + i) for i in range(HARD_FACTOR * 2 + 1)]
    assert len(trim_victims(m, young, (), NOW)) == len(young) - 2
    peers = [old("a"), old("b"), old("back", age=1)]
    assert trim_victims(m, peers, {"a", "b"}, NOW, recent={"back"}) == ["back"]


def test_a_peer_that_hung_up_at_once_is_backed_off_one_that_stayed_is_forgiven() -> None:
    assert after_close(100.0, 100.0 + HUNG_UP_S - 1) == "backoff"
    assert after_close(100.0, 100.0 + HUNG_UP_S) == "keep"
    assert after_close(100.0, 100.0 + STABLE_S) == "reset"


class _Middle(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def _hang_up_cycles(n: int, rng: random.Random | None = None) -> list[float]:
    """Gaps between the dials of a peer that closes every connection 0.05 s after it opens
    (a full peer), dialing whenever Redial says it is due."""
    r, now, dials = Redial(rng=rng or _Middle()), 0.0, []
    for _ in range(n):
        while not r.due(now):
            now = r.next_at
        dials.append(now)
        r.dialed(now)
        assert r.closed(opened_at=now, now=now + 0.05) == "backoff"
        now += 0.05
    return [b - a for a, b in itertools.pairwise(dials)]


def test_a_peer_that_keeps_hanging_up_is_dialed_ever_less_often_up_to_ten_minutes() -> None:
    gaps = _hang_up_cycles(16)
    # the first redial waits HUNG_UP_FIRST_S (it was 0.5 s, doubling: ten dials in two
    # minutes), and a dial never cuts the backoff back (it did: a 30 s cycle for ever)
    assert gaps[0] >= HUNG_UP_FIRST_S
    assert all(b > a - 0.01 for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] == pytest.approx(HUNG_UP_BACKOFF_MAX_S, abs=0.1)
    # an hour of it costs a handful of dials, not 120
    assert sum(1 for t in itertools.accumulate(gaps) if t <= 3600) <= 9


def test_peers_dialed_together_come_due_apart() -> None:
    firsts = {round(_hang_up_cycles(2, random.Random(seed))[0]) for seed in range(20)}
    assert len(firsts) > 10
    assert min(firsts) >= 0.75 * HUNG_UP_FIRST_S and max(firsts) <= 1.25 * HUNG_UP_FIRST_S


def test_a_connection_that_lasted_forgives_the_hang_ups() -> None:
    r = Redial()
    for t in range(8):
        r.dialed(float(t))
        r.closed(opened_at=float(t), now=t + 0.05)
    assert r.backoff > DIAL_BACKOFF_MAX_S
    assert r.closed(opened_at=0.0, now=STABLE_S) == "reset"
    assert r.backoff == REDIAL_MIN_S


def test_a_failed_dial_alone_backs_off_to_the_dial_cap() -> None:
    r = Redial()
    for t in range(12):
        r.dialed(float(t))
    assert r.backoff == DIAL_BACKOFF_MAX_S
    r.hold(1000.0)
    assert not r.due(999.0) and r.due(1000.0)


def test_an_explicit_low_watermark_replaces_three_quarters() -> None:
    assert Watermarks.of(36) == Watermarks(low=27, high=36)
    assert Watermarks.of(36, low=6) == Watermarks(low=6, high=36)
    assert Watermarks.of(36, low=0).dial_room(0) == 0
    assert Watermarks.of(8, low=40).low == 8
