"""Sync protocol pieces without the network: request answers, framing, chunk scheduling."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from node.chain import codec
from node.chain.codec import CodecError
from node.chain.sync import (
    MAX_RANGE,
    Chunk,
    FrameError,
    FrameReader,
    Scheduler,
    answer,
    encode_uvarint,
    frame,
)


class Source:
    height = 100
    tip_hash = b"\x07" * 32

    def range_objs(self, start: int, end: int) -> list[dict[str, Any]]:
        return [{"block": {"height": h}, "commit": {}} for h in range(start, end + 1)]


def test_answers_status_and_ranges() -> None:
    assert answer(Source(), b'{"type":"status"}') == {
        "type": "status",
        "height": 100,
        "tip": "07" * 32,
    }
    resp = answer(Source(), codec.encode({"type": "blocks", "from": 95, "to": 110}))
    assert [b["block"]["height"] for b in resp["blocks"]] == list(range(95, 101))
    assert answer(Source(), b'{"type":"blocks","from":200,"to":201}')["blocks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"\x00\xff", "canonical JSON"),
        (b"[]", "object"),
        (b'{"type":"nope"}', "'type'"),
        (b'{"type":"blocks","from":0,"to":3}', "'from'"),
        (b'{"type":"blocks","from":5,"to":3}', "'to'"),
        (b'{"type":"blocks","from":"1","to":3}', "'from'"),
        (b'{"type":"blocks","from":1,"to":%d}' % (MAX_RANGE + 1), "longer"),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, field: str) -> None:
    with pytest.raises(CodecError, match=field):
        answer(Source(), body)


class FakeStream:
    def __init__(self, data: bytes, chunk: int = 3) -> None:
        self.data, self.chunk = data, chunk

    async def read(self, n: int | None = None) -> bytes:
        out, self.data = self.data[: self.chunk], self.data[self.chunk :]
        return out


def test_frames_split_across_reads() -> None:
    async def main() -> None:
        data = frame({"a": 1}) + frame({"b": "x" * 300})
        r = FrameReader(FakeStream(data))  # type: ignore[arg-type]
        assert codec.decode(await r.read_frame(1000) or b"") == {"a": 1}
        assert codec.decode(await r.read_frame(1000) or b"") == {"b": "x" * 300}
        assert await r.read_frame(1000) is None
        big = FrameReader(FakeStream(encode_uvarint(10**6)))  # type: ignore[arg-type]
        with pytest.raises(FrameError, match="exceeds"):
            await big.read_frame(1000)
        bad = FrameReader(FakeStream(b"\xff" * 12))  # type: ignore[arg-type]
        with pytest.raises(FrameError, match="varint"):
            await bad.read_frame(1000)
        cut = FrameReader(FakeStream(encode_uvarint(50) + b"abc"))  # type: ignore[arg-type]
        with pytest.raises(FrameError, match="inside a frame"):
            await cut.read_frame(1000)

    trio.run(main)


def test_scheduler_gives_relayed_peers_chunks_when_direct_peers_have_them() -> None:
    """Issue #4: spread over EVERY connected peer with the range. A peer reachable only
    through a circuit takes free chunks even though a direct peer could serve them all."""
    s = Scheduler(1, 96, chunk=32)
    s.add_peer("d1", 200, "direct")
    s.add_peer("r1", 200, "relayed")
    s.add_peer("r2", 200, "relayed")
    got: dict[str, Chunk | None] = {}
    for p in ("d1", "r1", "r2"):
        c = got[p] = s.next_for(p, 0.0)
        assert c is not None, f"{p} got no chunk"
        c.inflight[p] = 0.0  # what the session's worker does when it sends the request
    assert sorted(c.start for c in got.values() if c) == [1, 33, 65]
    # the direct peer finishes first: it takes nothing more until a chunk is stuck
    chunk_d1 = got["d1"]
    assert chunk_d1 is not None
    chunk_d1.inflight.pop("d1")
    chunk_d1.done = True
    assert s.next_for("d1", 1.0) is None


def test_scheduler_hedges_slow_peers_and_survives_lost_ones() -> None:
    s = Scheduler(1, 96, chunk=32)
    s.add_peer("d1", 96, "direct")
    s.add_peer("r1", 96, "relayed")
    s.add_peer("r2", 200, "relayed")
    c = s.next_for("d1", 0.0)
    assert c is not None and c.start == 1
    c.inflight["d1"] = 0.0
    # a relayed peer takes the next free chunk, not the one in flight
    c2 = s.next_for("r1", 0.5)
    assert c2 is not None and c2.start == 33
    c2.inflight["r1"] = 0.5
    c3 = s.next_for("r2", 0.5)
    assert c3 is not None and c3.start == 65
    c3.inflight["r2"] = 0.5
    # nothing free and nothing stuck yet: wait
    assert s.next_for("r2", 1.0) is None
    # r1 finishes; chunk 1 is stuck on d1 for too long: r1 duplicates it (hedging)
    c2.inflight.pop("r1")
    c2.done = True
    hedge = s.next_for("r1", 10.0)
    assert hedge is c
    # the direct peer is lost: relayed peers are the only path and take the rest
    s.drop_peer("d1")
    assert "d1" not in c.inflight
    assert s.reachable()
    # a chunk that failed on one peer goes to another, never back to the one it failed on
    c.inflight.pop("r1", None)
    c.failed_on.add("r1")
    c3.inflight.pop("r2")
    c3.done = True
    assert s.next_for("r2", 11.0) is c
    assert s.next_for("r1", 11.0) is None
    s.drop_peer("r1")
    s.drop_peer("r2")
    assert not s.reachable()


def test_scheduler_late_peer_joins() -> None:
    """A peer that connects during a session (e.g. a circuit to the other network that
    came up late) takes free chunks from then on."""
    s = Scheduler(1, 96, chunk=32)
    s.add_peer("d1", 96, "direct")
    c = s.next_for("d1", 0.0)
    assert c is not None
    c.inflight["d1"] = 0.0
    s.add_peer("late", 96, "relayed")
    c2 = s.next_for("late", 0.1)
    assert c2 is not None and c2.start == 33


def test_scheduler_only_asks_peers_that_have_the_range() -> None:
    s = Scheduler(1, 64, chunk=32)
    s.add_peer("short", 40, "direct")
    c = s.next_for("short", 0.0)
    assert c is not None and c.end == 32
    c.done = True
    assert s.next_for("short", 0.0) is None
    assert not s.reachable()


class SilentStream:
    """Accepts requests, never answers (a peer that went slow)."""

    async def write(self, data: bytes) -> None:
        return None

    async def read(self, n: int | None = None) -> bytes:
        await trio.sleep_forever()
        return b""

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None


def test_client_with_unanswered_request_is_not_reused() -> None:
    """A late answer to a cancelled request must never be read as the next answer."""
    from node.chain.sync import SyncClient, SyncError

    async def main() -> None:
        client = SyncClient(SilentStream())  # type: ignore[arg-type]
        with pytest.raises(trio.TooSlowError):
            await client.request({"type": "status"}, 0.05)
        assert client.broken
        with pytest.raises(SyncError, match="unanswered"):
            await client.request({"type": "status"}, 0.05)

    trio.run(main)


class ServingStream:
    """Answers block requests from a canned chain (requests parsed for real)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.out = bytearray()
        self.delay = delay
        self.pending: list[bytes] = []

    async def write(self, data: bytes) -> None:
        r = FrameReader(FakeStream(data, chunk=1 << 20))  # type: ignore[arg-type]
        req = codec.decode_object(await r.read_frame(1 << 20) or b"")
        blocks = [_wire_block(h) for h in range(req["from"], req["to"] + 1)]
        self.pending.append(frame({"type": "blocks", "from": req["from"], "blocks": blocks}))

    async def read(self, n: int | None = None) -> bytes:
        while not self.pending:
            await trio.sleep(0.001)
        await trio.sleep(self.delay)
        return self.pending.pop(0)

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None


def _wire_block(h: int) -> dict[str, Any]:
    block = {"height": h, "prev": "00" * 32, "proposer": "p", "time_ms": 0, "payload": ""}
    commit = {"height": h, "round": 0, "block": "11" * 32, "votes": []}
    return {"block": block, "commit": commit}


def run_session(peers: list[Any], end: int, **kw: Any) -> tuple[list[int], dict[str, int]]:
    """Run a SyncSession for heights 1..end over `peers`: (heights applied in order,
    blocks each peer served)."""
    from node.chain.sync import SyncSession

    applied: list[int] = []
    served: dict[str, int] = {}

    async def main() -> None:
        session = SyncSession(
            peers,
            1,
            end,
            apply=lambda b, c, peer, kind: applied.append(b.height),
            record=lambda peer, kind, a, b, size: served.__setitem__(
                peer, served.get(peer, 0) + b - a + 1
            ),
            reject=lambda reason, detail: None,
            **kw,
        )
        with trio.fail_after(30):
            assert await session.run() == end

    trio.run(main)
    return applied, served


def test_session_finishes_when_one_peer_never_answers() -> None:
    """One slow/lost peer must not stall a sync: its chunks are hedged to the others."""
    from node.chain.sync import SyncClient, SyncPeer

    peers = [
        SyncPeer("silent", "direct", SyncClient(SilentStream()), 100),  # type: ignore[arg-type]
        SyncPeer("good", "direct", SyncClient(ServingStream()), 100),  # type: ignore[arg-type]
        SyncPeer("relayed", "relayed", SyncClient(ServingStream(0.01)), 100),  # type: ignore[arg-type]
    ]
    applied, served = run_session(peers, 100, chunk=10)
    assert applied == list(range(1, 101))
    assert "silent" not in served and served.get("good", 0) > 0


def test_pubsub_seqno_survives_a_fast_restart() -> None:
    """Upstream seeds the seqno counter with whole seconds: a restart within the seen-cache
    TTL reuses ids the peers already saw. The override seeds with nanoseconds."""
    import time

    from node.overrides.pubsub_seqno import fix_pubsub_seqno

    class FakePubsub:
        counter = int(time.time())

    first = FakePubsub()
    first.counter += 500  # a first run that published 500 messages in its first seconds
    restarted = FakePubsub()
    assert restarted.counter < first.counter  # the upstream collision
    fix_pubsub_seqno(restarted)
    assert restarted.counter > first.counter
    assert restarted.counter < 2**63  # still fits the 8-byte seqno


def test_peer_joining_a_running_session_takes_chunks() -> None:
    """A relayed peer that connects after the session started (circuits come up after the
    local peers) joins it and serves part of the range."""
    from node.chain.sync import SyncClient, SyncPeer, SyncSession

    applied: list[int] = []
    served: dict[str, int] = {}

    async def main() -> None:
        slow = SyncPeer("local", "direct", SyncClient(ServingStream(0.05)), 100)  # type: ignore[arg-type]
        session = SyncSession(
            [slow],
            1,
            100,
            apply=lambda b, c, peer, kind: applied.append(b.height),
            record=lambda peer, kind, a, b, size: served.__setitem__(
                peer, served.get(peer, 0) + b - a + 1
            ),
            reject=lambda reason, detail: None,
            chunk=10,
        )
        result: list[int] = []

        async def run() -> None:
            result.append(await session.run())

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                while not applied:  # the session is under way
                    await trio.sleep(0.01)
                late = SyncPeer("late", "relayed", SyncClient(ServingStream()), 100)  # type: ignore[arg-type]
                assert session.add_peer(late)
                assert not session.add_peer(late)  # already in, same kind
        assert result == [100]

    trio.run(main)
    assert applied == list(range(1, 101))
    assert served.get("late", 0) > 0 and served.get("local", 0) > 0


def test_spread_chunk_gives_every_peer_a_request() -> None:
    from node.chain.sync import CHUNK, spread_chunk

    assert spread_chunk(24, 5) == 5  # 5 chunks for 5 peers, not 2 of 16
    assert spread_chunk(1000, 4) == CHUNK  # long catch-ups keep the full chunk
    assert spread_chunk(3, 8) == 1
    assert spread_chunk(0, 3) == CHUNK and spread_chunk(10, 0) == CHUNK


def test_short_catch_up_reaches_the_slower_relayed_peers() -> None:
    """24 missing heights, two fast own-network peers and three slower relayed ones: every
    peer serves part of it (with fixed 16-block chunks the two fast peers took all of it)."""
    from node.chain.sync import SyncClient, SyncPeer

    peers = [
        SyncPeer("local1", "direct", SyncClient(ServingStream()), 24),  # type: ignore[arg-type]
        SyncPeer("local2", "direct", SyncClient(ServingStream()), 24),  # type: ignore[arg-type]
    ] + [
        SyncPeer(f"remote{i}", "relayed", SyncClient(ServingStream(0.05)), 24)  # type: ignore[arg-type]
        for i in range(3)
    ]
    applied, served = run_session(peers, 24)
    assert applied == list(range(1, 25))
    assert sorted(served) == ["local1", "local2", "remote0", "remote1", "remote2"]


def test_round_timeout_inside_a_sync_session_is_delivered_after_it() -> None:
    """A consensus timer that fires while a sync session runs used to be dropped; when the
    session applied nothing, consensus stayed in its round with no timer armed, for good
    (all validators at one round and step after a partition heal under CPU load)."""
    from node.chain.consensus import ScheduleTimeout
    from node.chain.service import ChainService

    class Cons:
        def __init__(self) -> None:
            self.seen: list[tuple[str, int, int]] = []

        def on_timeout(self, step: str, height: int, round_: int) -> list[Any]:
            self.seen.append((step, height, round_))
            return []

    svc = ChainService()
    cons = Cons()
    svc.cons = cons  # type: ignore[assignment]
    svc._act = lambda actions: None  # type: ignore[method-assign]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            svc.syncing, svc._sync_over = True, trio.Event()
            nursery.start_soon(svc._timer, ScheduleTimeout("round", 6, 12, 0.01))
            await trio.sleep(0.2)
            assert cons.seen == []  # not while the session runs
            svc.syncing = False
            svc._sync_over.set()
            with trio.fail_after(5):  # delivered once the session is over
                while not cons.seen:
                    await trio.sleep(0.01)
            assert cons.seen == [("round", 6, 12)]

    trio.run(main)
