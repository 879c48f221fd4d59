"""Block sync: its own protocol (varint-framed request/response) and a range scheduler.

Wire (protocol id SYNC_PROTOCOL), each frame = uvarint length + canonical JSON object:
    -> {"type": "status"}                  <- {"type": "status", "height": H, "tip": hex}
    -> {"type": "blocks", "from": a, "to": b}   (b - a < MAX_RANGE)
                                           <- {"type": "blocks", "from": a,
                                               "blocks": [{"block": .., "commit": ..}, ..]}
    anything malformed                     <- {"type": "error", "reason": "..."}
A stream carries any number of requests in turn. After a framing error (bad varint, frame
too large) the server answers with an error and closes that stream; after a well-framed but
invalid request it answers with an error and keeps reading. Either way it keeps serving.

The client side (`SyncSession`) asks every connected peer for its status, splits the
missing heights into chunks and runs one worker per peer that has them. Every live peer
that has a chunk's range takes free chunks, relayed ones included: the load spreads over
all of them, and a slower peer (a circuit through a loaded relay) simply comes back for
its next chunk less often, so it takes fewer. "Direct first" is a choice per peer, not
between peers: the caller hands us each peer on its direct connection when it has one and
on its relayed circuit when that is the only path to it. Preferring direct peers over
relayed ones for whole chunks would let a node's own-network peers serve everything and
nothing would ever cross the NAT (the seed's "sync peers only show local network peers").
A peer also takes a chunk that failed elsewhere, or one in flight elsewhere for too long
(hedging), so one slow or lost peer does not stall the sync. Peers may join a running
session (`SyncSession.add_peer`). Every block is verified (links to our tip, >2/3 valid
precommits) before it is stored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from libp2p.utils.varint import encode_uvarint

from node import contract
from node.chain import codec
from node.chain.block import Block, CommitCert, InvalidMessage
from node.chain.codec import CodecError

log = logging.getLogger("node.chain.sync")

SYNC_PROTOCOL = "/sentrynet/sync/1.0.0"
MAX_RANGE = 64
CHUNK = 16  # blocks per request: small enough to spread a short catch-up over several peers
MAX_REQUEST = 4 * 1024
MAX_RESPONSE = 8 * 1024 * 1024
STATUS_TIMEOUT = 10.0  # stream open + one round trip, over a circuit on a loaded relay
REQUEST_TIMEOUT = 20.0
HEDGE_AFTER = 2.0
MAX_STRIKES = 2


class FrameError(Exception):
    """The byte stream is not a valid frame sequence; the stream cannot continue."""


class Stream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...
    async def reset(self) -> None: ...


def frame(obj: dict[str, Any]) -> bytes:
    body = codec.encode(obj)
    return encode_uvarint(len(body)) + body


class FrameReader:
    """Buffered reads of varint-prefixed frames from a libp2p stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.bytes_read = 0

    async def _fill(self) -> bool:
        try:
            chunk = await self.stream.read(65536)
        except Exception as exc:  # StreamEOF / StreamReset / StreamClosed
            if type(exc).__name__ in {"StreamEOF", "EOFError"}:
                return False
            raise
        if not chunk:
            return False
        self.buf += chunk
        self.bytes_read += len(chunk)
        return True

    async def read_frame(self, max_size: int) -> bytes | None:
        """The next frame's body; None on a clean EOF between frames."""
        length, shift, pos = 0, 0, 0
        while True:
            if pos >= len(self.buf) and not await self._fill():
                if pos == 0 and not self.buf:
                    return None
                raise FrameError("stream ended inside a length prefix")
            byte = self.buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise FrameError("length prefix is not a valid varint")
        if length > max_size:
            raise FrameError(f"frame of {length} bytes exceeds limit {max_size}")
        while len(self.buf) < pos + length:
            if not await self._fill():
                raise FrameError("stream ended inside a frame")
        body = bytes(self.buf[pos : pos + length])
        del self.buf[: pos + length]
        return body


# ----------------------------------------------------------------- server


class BlockSource(Protocol):
    @property
    def height(self) -> int: ...
    @property
    def tip_hash(self) -> bytes: ...
    def range_objs(self, start: int, end: int) -> list[dict[str, Any]]: ...


def answer(source: BlockSource, request: bytes) -> dict[str, Any]:
    """The response to one request frame. Raises CodecError for a malformed request."""
    req = codec.decode_object(request)
    kind = req.get("type")
    if kind == "status":
        return {"type": "status", "height": source.height, "tip": source.tip_hash.hex()}
    if kind == "blocks":
        start = codec.get_int(req, "from", lo=1)
        end = codec.get_int(req, "to", lo=1)
        if end < start:
            raise CodecError(f"field 'to'={end} is below 'from'={start}")
        if end - start + 1 > MAX_RANGE:
            raise CodecError(f"range {start}..{end} longer than {MAX_RANGE} blocks")
        end = min(end, source.height)
        blocks = source.range_objs(start, end) if start <= end else []
        return {"type": "blocks", "from": start, "blocks": blocks}
    raise CodecError(f"field 'type'={kind!r} is not one of status, blocks")


async def serve_stream(
    stream: Stream, source: BlockSource, reject: Callable[[str, str], None]
) -> None:
    """Serve requests on one inbound stream until EOF; never raises (the node keeps serving)."""
    reader = FrameReader(stream)
    try:
        while True:
            try:
                with trio.fail_after(60):
                    body = await reader.read_frame(MAX_REQUEST)
            except FrameError as exc:
                reject("bad_frame", str(exc))
                await stream.write(frame({"type": "error", "reason": f"bad frame: {exc}"}))
                break
            if body is None:
                break
            try:
                response = answer(source, body)
            except CodecError as exc:
                reject("malformed", str(exc))
                response = {"type": "error", "reason": f"malformed request: {exc}"}
            await stream.write(frame(response))
        await stream.close()
    except trio.TooSlowError:
        await _reset(stream)
    except Exception as exc:
        log.debug("sync stream ended: %s", exc)
        await _reset(stream)


async def _reset(stream: Stream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()


# ----------------------------------------------------------------- client


class SyncError(Exception):
    pass


class SyncClient:
    """Requests over one outbound stream, one at a time."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.reader = FrameReader(stream)
        # set while a request is outstanding; stays set if it never completed (timeout,
        # cancelled hedge, error), because a late answer would be read as the next one's
        self.broken = False

    async def request(self, obj: dict[str, Any], timeout: float) -> tuple[dict[str, Any], int]:
        """(response, response size in bytes)."""
        if self.broken:
            raise SyncError("stream has an unanswered request; open a new one")
        self.broken = True
        with trio.fail_after(timeout):
            await self.stream.write(frame(obj))
            before = self.reader.bytes_read
            body = await self.reader.read_frame(MAX_RESPONSE)
        self.broken = False
        if body is None:
            raise SyncError("peer closed the stream")
        try:
            resp = codec.decode_object(body)
        except CodecError as exc:
            raise SyncError(f"malformed response: {exc}") from None
        if resp.get("type") == "error":
            raise SyncError(f"peer answered error: {resp.get('reason')}")
        return resp, self.reader.bytes_read - before

    async def close(self) -> None:
        """Close; reset when a request is unanswered, so the peer stops sending its answer."""
        with contextlib.suppress(Exception), trio.move_on_after(2):
            if self.broken:
                await self.stream.reset()
            else:
                await self.stream.close()


@dataclass
class PeerStats:
    """What one peer served us over one connection kind (the /status sync_peers entries)."""

    peer: str
    kind: str
    blocks: int = 0
    bytes: int = 0
    from_height: int | None = None
    to_height: int | None = None

    def add(self, start: int, end: int, size: int) -> None:
        self.blocks += end - start + 1
        self.bytes += size
        self.from_height = start if self.from_height is None else min(self.from_height, start)
        self.to_height = end if self.to_height is None else max(self.to_height, end)

    def to_obj(self) -> dict[str, Any]:
        return self.record().to_json()

    def record(self) -> contract.SyncPeer:
        return contract.SyncPeer(
            peer=self.peer,
            kind=self.kind,
            blocks=self.blocks,
            bytes=self.bytes,
            from_height=self.from_height,
            to_height=self.to_height,
        )


def spread_chunk(span: int, peers: int, cap: int = CHUNK) -> int:
    """Blocks per request so that a short catch-up still gives every peer of the session a
    chunk in the first round: with 24 missing heights, 16-block chunks made two requests, the
    two fastest (own-network, direct) peers took both and nothing crossed the NAT even with
    three relayed peers to the other network connected (symmetric-nat scenario)."""
    if span <= 0 or peers <= 0:
        return cap
    return max(1, min(cap, -(-span // peers)))


@dataclass
class Chunk:
    start: int
    end: int
    inflight: dict[str, float] = field(default_factory=dict)  # peer -> started (monotonic)
    failed_on: set[str] = field(default_factory=set)
    done: bool = False


class Scheduler:
    """Which chunk a peer should fetch next. Pure: time is passed in."""

    def __init__(self, start: int, end: int, chunk: int = CHUNK) -> None:
        self.chunks = [Chunk(a, min(a + chunk - 1, end)) for a in range(start, end + 1, chunk)]
        self.peer_height: dict[str, int] = {}
        self.peer_kind: dict[str, str] = {}
        self.alive: set[str] = set()

    def add_peer(self, peer: str, height: int, kind: str) -> None:
        self.peer_height[peer], self.peer_kind[peer] = height, kind
        self.alive.add(peer)

    def drop_peer(self, peer: str) -> None:
        self.alive.discard(peer)
        for c in self.chunks:
            c.inflight.pop(peer, None)

    def next_for(self, peer: str, now: float) -> Chunk | None:
        """The lowest free chunk within `peer`'s height, whatever its connection kind;
        else a chunk stuck elsewhere for HEDGE_AFTER (a duplicate request); else None."""
        height = self.peer_height[peer]
        usable = [
            c
            for c in self.chunks
            if not c.done and c.end <= height and peer not in c.inflight and peer not in c.failed_on
        ]
        for c in usable:
            if not c.inflight:
                return c
        # hedge: nothing pending for us, so duplicate the oldest chunk stuck elsewhere
        stuck = [c for c in usable if c.inflight and now - min(c.inflight.values()) > HEDGE_AFTER]
        if stuck:
            return min(stuck, key=lambda c: c.start)
        return None

    def finished(self) -> bool:
        return all(c.done for c in self.chunks)

    def reachable(self) -> bool:
        """Some live peer can still serve every chunk not done."""
        return all(
            c.done or any(self.peer_height[p] >= c.end and p not in c.failed_on for p in self.alive)
            for c in self.chunks
        )


@dataclass
class SyncPeer:
    peer: str
    kind: str
    client: SyncClient
    height: int


class SyncSession:
    """Fetch heights tip+1..target from the given peers and apply them in order."""

    def __init__(
        self,
        peers: list[SyncPeer],
        start: int,
        target: int,
        apply: Callable[[Block, CommitCert, str, str], None],
        record: Callable[[str, str, int, int, int], None],
        reject: Callable[[str, str], None],
        chunk: int = CHUNK,
    ) -> None:
        self.peers = peers
        self.start, self.target = start, target
        self.apply, self.record, self.reject = apply, record, reject
        self.sched = Scheduler(start, target, spread_chunk(target - start + 1, len(peers), chunk))
        for p in peers:
            self.sched.add_peer(p.peer, p.height, p.kind)
        self.results: dict[int, tuple[Chunk, str, str, list[tuple[Block, CommitCert]], int]] = {}
        self.next_height = start
        self.wake = trio.Event()
        self.used: set[str] = set()
        self.joined: dict[str, str] = {p.peer: p.kind for p in peers}  # peer -> kind last used
        self.banned: set[str] = set()  # sent blocks that failed verification
        self._nursery: trio.Nursery | None = None

    def accepts(self, peer: str, kind: str) -> bool:
        """Whether `peer` on a connection of `kind` may join: new to the session, or lost
        and now reachable another way (a circuit DCUtR replaced by a direct connection)."""
        if peer in self.sched.alive or peer in self.banned:
            return False
        return self.joined.get(peer) != kind

    def add_peer(self, p: SyncPeer) -> bool:
        """Let a peer that connected after the session started take chunks (a circuit to the
        other network usually comes up seconds after the local peers)."""
        if not self.accepts(p.peer, p.kind) or p.height < self.start:
            return False
        self.peers.append(p)
        self.joined[p.peer] = p.kind
        self.sched.add_peer(p.peer, p.height, p.kind)
        if self._nursery is not None:
            self._nursery.start_soon(self._worker, p)
        self.wake.set()
        return True

    async def run(self) -> int:
        """Returns the last height applied (start - 1 when nothing was)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for p in list(self.peers):
                nursery.start_soon(self._worker, p)
            while not self.sched.finished() and self.sched.reachable():
                self.wake = trio.Event()
                with trio.move_on_after(0.5):
                    await self.wake.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None
        return self.next_height - 1

    async def _worker(self, p: SyncPeer) -> None:
        strikes = 0
        while self.sched.finished() is False and p.peer in self.sched.alive:
            c = self.sched.next_for(p.peer, time.monotonic())
            if c is None:
                self.wake = self.wake  # nothing to do now; look again shortly
                await trio.sleep(0.05)
                continue
            started = c.inflight[p.peer] = time.monotonic()
            try:
                resp, size = await p.client.request(
                    {"type": "blocks", "from": c.start, "to": c.end}, REQUEST_TIMEOUT
                )
                pairs = _parse_blocks(resp, c.start, c.end)
            except (SyncError, CodecError, trio.TooSlowError, InvalidMessage, OSError) as exc:
                reason = "timeout" if isinstance(exc, trio.TooSlowError) else "bad_response"
                log.info("sync: chunk %d-%d from %s failed: %s", c.start, c.end, p.peer, exc)
                if isinstance(exc, CodecError | InvalidMessage):
                    self.reject(reason, f"{p.peer}: {exc}")
                c.inflight.pop(p.peer, None)
                c.failed_on.add(p.peer)
                strikes += 1
                if strikes >= MAX_STRIKES or isinstance(exc, trio.TooSlowError):
                    self.sched.drop_peer(p.peer)
                self.wake.set()
                continue
            except Exception as exc:  # stream reset, connection gone
                log.info("sync: peer %s lost: %s", p.peer, exc)
                self.sched.drop_peer(p.peer)
                self.wake.set()
                return
            c.inflight.pop(p.peer, None)
            log.info(
                "sync: %d-%d from %s (%s): %d bytes in %.2fs",
                c.start,
                c.end,
                p.peer[-8:],
                p.kind,
                size,
                time.monotonic() - started,
            )
            if not c.done:
                c.done = True
                self.results[c.start] = (c, p.peer, p.kind, pairs, size)
                self._apply_ready()
            self.wake.set()

    def _apply_ready(self) -> None:
        while self.next_height in self.results:
            c, peer, kind, pairs, size = self.results.pop(self.next_height)
            try:
                for block, cert in pairs:
                    self.apply(block, cert, peer, kind)
                    self.next_height = block.height + 1
            except InvalidMessage as exc:
                self.reject(exc.reason, f"sync from {peer}: {exc}")
                applied = self.next_height
                # requeue what was not applied and never ask this peer again
                c.done = False
                c.start = applied
                c.failed_on.add(peer)
                self.banned.add(peer)
                self.sched.drop_peer(peer)
                if applied <= c.end:
                    return
            self.used.add(peer)
            self.record(peer, kind, c.start, c.end, size)


def _parse_blocks(resp: dict[str, Any], start: int, end: int) -> list[tuple[Block, CommitCert]]:
    if resp.get("type") != "blocks" or resp.get("from") != start:
        raise SyncError("response does not answer the request")
    raw = resp.get("blocks")
    if not isinstance(raw, list) or len(raw) != end - start + 1:
        raise SyncError(
            f"expected {end - start + 1} blocks, got {len(raw) if isinstance(raw, list) else raw!r}"
        )
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise CodecError("block entry must be an object")
        block = Block.from_obj(item.get("block"))
        cert = CommitCert.from_obj(item.get("commit"))
        if block.height != start + i:
            raise SyncError(f"block {block.height} out of order (expected {start + i})")
        out.append((block, cert))
    return out
