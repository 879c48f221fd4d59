"""ChainService: wires consensus, store and sync to the node runtime (the Service protocol).

Gossip (one topic per validator set) carries proposals, votes and commits; a topic
validator drops anything badly signed or from a non-validator before it is forwarded, and
counts it. The consensus state machine decides blocks; validators vote, full nodes and
sentries follow the same certificates. A sync loop polls connected peers' tips and, when we
are behind (restart with an empty store, late start, a commit seen far ahead), fetches the
missing ranges over the sync protocol, verifying every block against its certificate.

Whom a catch-up syncs from: every connected peer that has the range, each over its direct
connection when there is one and over its relayed circuit when that is the only path (the
range scheduler in sync.py spreads chunks over all of them). Two timing rules make that
real, because a restarted node meets its own network's peers first: they answer within a
second, while the circuits to peers behind the other NAT need a reservation (~1 s), a peer
exchange round and circuit dials (several seconds, more under load). Syncing at once from
whoever is connected would take everything from the local side, concentrate the load on a
couple of peers and never cross the NAT (the seed's "sync peers only show local network
peers"). So:
- the initial catch-up (the node starts behind, e.g. with an empty store) first waits for
  the peer set to settle: until the relay client (mode client|both, with candidates) holds a
  reservation, discovery has no dial in flight (a circuit dial to the other network took
  ~28 s on a loaded machine in the sentry scenario), and the number of connected peers has
  not grown for SETTLE_QUIET_S; at most SETTLE_MAX_S. Consensus does not start meanwhile
  (nothing signed for old heights);
- a peer that connects while a session runs joins it (SyncSession.add_peer), so a long
  catch-up also uses circuits that came up late.
Later catch-ups (a few blocks behind while following) start at once: the peers are settled.

Blocks that arrive by sync are not announced one by one as `block_committed` (a catch-up of
thousands would flood the event log); the session ends with one `sync_completed`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from node.chain import codec
from node.chain.block import (
    Block,
    CommitCert,
    InvalidMessage,
    Proposal,
    ValidatorSet,
    Vote,
    verify_chain_link,
)
from node.chain.codec import CodecError
from node.chain.consensus import (
    Action,
    Behind,
    Broadcast,
    Consensus,
    Decide,
    Rejected,
    ScheduleTimeout,
    Timeouts,
)
from node.chain.store import BlockStore, StoreError
from node.chain.sync import (
    REQUEST_TIMEOUT,
    STATUS_TIMEOUT,
    SYNC_PROTOCOL,
    PeerStats,
    SyncClient,
    SyncError,
    SyncPeer,
    SyncSession,
    serve_stream,
)
from node.contract import Chain

if TYPE_CHECKING:
    from libp2p.abc import INetStream

    from node.runtime import NodeRuntime

log = logging.getLogger("node.chain")

INITIAL_SYNC_WAIT_S = 5.0  # longest a starting node waits for peers' tips before consensus
SYNC_POLL_S = 2.0  # how often connected peers' tips are asked for
# While we follow (a commit of ours within STALL_S, no hint of being behind) a routine poll
# asks only this many peers, least recently asked first: it is a safety net for missed
# gossip, and asking every peer every SYNC_POLL_S made the poll the largest per-connection
# cost of a node (32 peers: 16 status requests a second out, 16 in). Behind, stalled, or
# woken by a hint, every peer is asked. 4 -> 2 (docs/bench.md, 2026-12-05).
SYNC_POLL_SAMPLE = 2
STATUS_GRACE_S = 1.5  # after the first tip answer, how long slower peers may take
SETTLE_QUIET_S = 6.0  # no new peer for this long: longer than a peer-exchange round (5 s)
SETTLE_MAX_S = 30.0  # the initial catch-up never waits longer than this for the peer set
JOIN_POLL_S = 1.0  # during a session, how often new connections are looked for
STALL_S = 3.0  # one block behind for this long (no commit of ours) -> sync
PAYLOAD_SIZE = 256  # bytes of filler per block so sync moves realistic volumes
MAX_GOSSIP = 256 * 1024
# messages the topic validator decoded and accepted, kept for the reader that gets them
# next (pubsub validates, then delivers); the bound covers messages that are validated
# but never delivered
DECODED_KEEP = 256

Decoded = Proposal | Vote | tuple[Block, CommitCert]


def topic_for(vset: ValidatorSet) -> str:
    return f"/sentrynet/chain/1/{vset.chain_id.hex()[:16]}"


def block_payload(name: str, height: int) -> bytes:
    """Deterministic filler: repeatable across runs, incompressible-looking."""
    seed = hashlib.sha256(f"{name}/{height}".encode()).digest()
    out = bytearray()
    while len(out) < PAYLOAD_SIZE:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:PAYLOAD_SIZE])


def decode_gossip(data: bytes) -> Decoded:
    if len(data) > MAX_GOSSIP:
        raise CodecError("message too large")
    obj = codec.decode_object(data)
    kind = obj.get("kind")
    if kind == "proposal":
        return Proposal.from_obj(obj.get("proposal"))
    if kind == "vote":
        return Vote.from_obj(obj.get("vote"))
    if kind == "commit":
        return Block.from_obj(obj.get("block")), CommitCert.from_obj(obj.get("commit"))
    raise CodecError(f"field 'kind'={kind!r} is not one of proposal, vote, commit")


def encode_gossip(msg: Proposal | Vote | tuple[Block, CommitCert]) -> bytes:
    if isinstance(msg, Proposal):
        return codec.encode({"kind": "proposal", "proposal": msg.to_obj()})
    if isinstance(msg, Vote):
        return codec.encode({"kind": "vote", "vote": msg.to_obj()})
    block, cert = msg
    return codec.encode({"kind": "commit", "block": block.to_obj(), "commit": cert.to_obj()})


class ChainService:
    """The chain workload as a node Service (name "chain", status under /status "chain")."""

    name = "chain"

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts
        self.rt: NodeRuntime | None = None
        self.vset: ValidatorSet | None = None
        self.store: BlockStore | None = None
        self.cons: Consensus | None = None
        self.topic = ""
        self.error: str | None = None
        # the block store is open (or the chain is disabled): until then /status would say
        # height 0 for a node that has blocks on disk, so the node is not `ready` before
        self.ready = False
        self.sync_state = "idle"
        self.sync_stats: dict[tuple[str, str], PeerStats] = {}
        self.peer_heights: dict[str, int] = {}
        self.clients: dict[str, tuple[SyncClient, str]] = {}
        self.no_sync: dict[str, float] = {}  # peers that refused the protocol -> when
        self.behind_hint = 0
        self.last_commit_at = time.monotonic()
        self.commits = 0
        self.syncing = False
        self._sync_over = trio.Event()  # set while no sync session runs
        self._sync_over.set()
        self.settled = False  # the initial catch-up's peer-set wait is over (or not needed)
        # the height at which a poll of every peer last found none ahead of us (-1: none yet)
        self._none_ahead_at = -1
        self._polled_at: dict[str, float] = {}  # peer -> when its tip was last asked for
        self.settling = False
        self._start_gen = 0
        self._wake_sync = trio.Event()
        self._initial_check = trio.Event()
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[bytes](1024)
        # message bytes -> what the validator decoded from them (insertion order: oldest
        # first): the reader does not decode a message a second time
        self._validated: dict[bytes, Decoded] = {}

    # ------------------------------------------------------------ lifecycle

    async def run(self, rt: NodeRuntime) -> None:
        self.rt = rt
        cfg = rt.config.chain
        if not cfg.validators:
            self.error = "no [chain] validators configured: chain disabled"
            log.info(self.error)
            self.ready = True
            await trio.sleep_forever()
        missing = [n for n in cfg.validators if n not in cfg.validator_ids]
        if missing:
            self.error = f"chain.validator_ids: no peer id for {', '.join(missing)}"
            log.error("%s: chain disabled", self.error)
            self.ready = True
            await trio.sleep_forever()
        try:
            self.vset = vset = ValidatorSet([(n, cfg.validator_ids[n]) for n in cfg.validators])
            self.store = store = BlockStore(
                Path(rt.config.node.data_dir) / "chain.sqlite", vset.chain_id
            )
        except (ValueError, OSError, sqlite3.Error, StoreError) as exc:
            # a bad validator id, a duplicate validator, data_dir a file, a corrupt store, a
            # store of another validator set: the chain cannot run. Say so in /status
            # (chain.error) and the log, and stay not ready; before, the service crashed
            # quietly and the node showed ready: false with chain.error null (issue 16)
            self.error = f"chain disabled: {type(exc).__name__}: {exc}"
            log.error("%s", self.error)
            await trio.sleep_forever()
        rt.metrics.chain_height.set(store.height)
        self.ready = True
        my_id = str(rt.host.get_id())
        votes = rt.config.node.role == "validator"
        if votes and not vset.is_validator(my_id):
            log.warning(
                "role validator but peer id %s is not in chain.validator_ids: observing", my_id
            )
        name = rt.config.node.name
        self.cons = Consensus(
            vset,
            my_id if votes else None,
            rt.host.get_private_key() if votes else None,
            timeouts=self.timeouts or _timeouts_for(cfg.block_interval_s),
            now_ms=lambda: int(time.time() * 1000),
            can_sign=store.check_and_record_signature,
            save_lock=store.save_lock,
            payload=lambda h: block_payload(name, h),
        )
        if cfg.serve_sync:
            rt.host.set_stream_handler(SYNC_PROTOCOL, self._serve)  # type: ignore[arg-type]
        self.topic = topic_for(vset)
        assert rt.pubsub is not None, "the chain needs pubsub"
        rt.pubsub.set_topic_validator(self.topic, self._validate, False)
        sub = await rt.pubsub.subscribe(self.topic)
        log.info(
            "chain: %s at height %d (%s), %d validators, topic %s, serve_sync=%s",
            "validator" if self.cons.voting else "observer",
            store.height,
            store.tip_hash.hex()[:12],
            vset.n,
            self.topic,
            cfg.serve_sync,
        )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._publisher)
                nursery.start_soon(self._gossip_reader, sub)
                nursery.start_soon(self._sync_loop)
                # catch up before voting: a validator restarted with an old (or empty) store
                # should not sign anything for heights the others decided long ago
                with trio.move_on_after(INITIAL_SYNC_WAIT_S):
                    await self._initial_check.wait()
                if self.settling:  # behind, waiting for peers before the catch-up (bounded)
                    await self._initial_check.wait()
                if self.cons.decided:  # not started by a sync session meanwhile
                    self._act(self._start_height(store.height + 1))
        finally:
            store.close()

    def status(self) -> dict[str, Any]:
        store, cons = self.store, self.cons
        best = max(self.peer_heights.values(), default=None)
        return Chain(
            height=store.height if store else 0,
            tip_hash=store.tip_hash.hex() if store else "",
            sync_state=self.sync_state,
            sync_peers=tuple(s.record() for s in self.sync_stats.values()),
            voting=bool(cons and cons.voting),
            round=cons.round if cons else 0,
            step=cons.step if cons else "",
            validators=self.vset.n if self.vset else 0,
            best_peer_height=best,
            peer_heights=dict(self.peer_heights),
            mesh_peers=self._mesh_peers(),
            topic_peers=self._topic_peers(),
            heard=cons.heard() if cons and not cons.decided else {},
            serve_sync=bool(self.rt and self.rt.config.chain.serve_sync),
            commits=self.commits,
            error=self.error,
        ).to_json()

    def _mesh_peers(self) -> tuple[str, ...]:
        mesh = getattr(getattr(self.rt.pubsub, "router", None), "mesh", {}) if self.rt else {}
        return tuple(sorted(str(p) for p in list(mesh.get(self.topic, ()))))

    def _topic_peers(self) -> tuple[str, ...]:
        topics = getattr(self.rt.pubsub, "peer_topics", {}) if self.rt else {}
        return tuple(sorted(str(p) for p in list(topics.get(self.topic, ()))))

    # ------------------------------------------------------------ consensus I/O

    def _act(self, actions: list[Action]) -> None:
        rt, cons = self.rt, self.cons
        assert rt is not None and cons is not None
        for a in actions:
            if isinstance(a, Broadcast):
                self._publish(encode_gossip(a.msg))
            elif isinstance(a, ScheduleTimeout):
                self.nursery.start_soon(self._timer, a)
            elif isinstance(a, Decide):
                self._commit(a.block, a.cert, via="consensus")
            elif isinstance(a, Rejected):
                log.info("consensus message rejected: %s %s", a.reason, a.detail)
                rt.reject("consensus", a.reason)
            elif isinstance(a, Behind):
                self._note_behind(a.height)

    def _publish(self, data: bytes) -> None:
        try:
            self._outbox_send.send_nowait(data)
        except trio.WouldBlock:
            log.warning("chain: gossip outbox full, message dropped")

    async def _publisher(self) -> None:
        assert self.rt is not None and self.rt.pubsub is not None
        async for data in self._outbox_recv:
            try:
                await self.rt.pubsub.publish(self.topic, data)
            except Exception as exc:
                log.warning("chain: publish failed: %s", exc)

    async def _timer(self, t: ScheduleTimeout) -> None:
        await trio.sleep(t.delay)
        # A timeout that falls inside a sync session is delivered after it, not dropped: a
        # session that applies nothing leaves consensus where it was, and a dropped round
        # timer left it there for good (every validator at one round and step, no timer
        # armed: the partition-heal stall under CPU load). A stale one is ignored by
        # on_timeout, which checks height and round.
        while self.syncing:
            await self._sync_over.wait()
        if self.cons is not None:
            self._act(self.cons.on_timeout(t.step, t.height, t.round))

    def _validate(self, forwarder: ID, msg: Any) -> bool:
        """Topic validator: stateless checks, so bad messages are neither used nor forwarded."""
        assert self.rt is not None and self.vset is not None
        data = bytes(msg.data)
        try:
            decoded = decode_gossip(data)
            if isinstance(decoded, Proposal | Vote):
                decoded.verify(self.vset)
            else:
                block, cert = decoded
                cert.verify(self.vset, block)
        except CodecError as exc:
            log.info("gossip from %s rejected: malformed: %s", forwarder, exc)
            self.rt.reject("consensus", "malformed")
            return False
        except InvalidMessage as exc:
            log.info("gossip from %s rejected: %s", forwarder, exc)
            self.rt.reject("consensus", exc.reason)
            return False
        validated = self._validated
        validated[data] = decoded
        while len(validated) > DECODED_KEEP:
            del validated[next(iter(validated))]
        return True

    async def _gossip_reader(self, sub: Any) -> None:
        assert self.cons is not None
        while True:
            msg = await sub.get()
            data = bytes(msg.data)
            decoded = self._validated.pop(data, None)
            if decoded is None:
                try:
                    decoded = decode_gossip(data)
                except CodecError:
                    continue  # already counted by the validator
            if isinstance(decoded, Proposal):
                self._act(self.cons.on_proposal(decoded))
            elif isinstance(decoded, Vote):
                self._act(self.cons.on_vote(decoded))
            else:
                self._on_commit_msg(*decoded)

    def _on_commit_msg(self, block: Block, cert: CommitCert) -> None:
        store = self.store
        assert store is not None and self.vset is not None and self.rt is not None
        if block.height <= store.height:
            return
        if block.height > store.height + 1:
            self._note_behind(block.height)
            return
        try:
            verify_chain_link(self.vset, store.tip_hash, block, cert)
        except InvalidMessage as exc:
            self.rt.reject("consensus", exc.reason)
            return
        self._commit(block, cert, via="gossip")

    def _commit(self, block: Block, cert: CommitCert, via: str) -> None:
        """Store a decided block, announce it, and start the next height."""
        store, rt, cons = self.store, self.rt, self.cons
        assert store is not None and rt is not None and cons is not None
        if block.height != store.height + 1:
            return
        store.append(block, cert)
        store.prune_signatures(block.height - 16)
        self.commits += 1
        self.last_commit_at = time.monotonic()
        rt.metrics.chain_height.set(block.height)
        rt.events.emit(
            "block_committed",
            height=block.height,
            hash=block.hash.hex(),
            proposer=block.proposer,
            round=cert.round,
            via=via,
        )
        if cons.voting and via == "consensus" and block.proposer == str(rt.host.get_id()):
            # lets followers that missed votes (and nodes far behind) learn the decision;
            # only the proposer sends it: gossip already delivers every message to every
            # mesh peer several times, and relayed circuits carry all of it
            self._publish(encode_gossip((block, cert)))
        cons.decided = True
        delay = rt.config.chain.block_interval_s if cons.voting else 0.0
        self._schedule_start(delay)

    def _start_height(self, height: int) -> list[Action]:
        """Enter `height` on the stored tip, with the lock (and its polka) saved for it."""
        store, cons = self.store, self.cons
        assert store is not None and cons is not None
        lock = store.load_lock(height)
        return cons.start_height(
            height,
            store.tip_hash,
            locked_round=lock.round,
            locked_block=lock.block,
            locked_votes=lock.polka,
        )

    def _schedule_start(self, delay: float) -> None:
        self._start_gen += 1
        self.nursery.start_soon(self._start_next, self._start_gen, delay)

    async def _start_next(self, gen: int, delay: float) -> None:
        await trio.sleep(delay)
        store, cons = self.store, self.cons
        assert store is not None and cons is not None
        if gen != self._start_gen or self.syncing:
            return
        if cons.decided or cons.height != store.height + 1:
            self._act(self._start_height(store.height + 1))

    # ------------------------------------------------------------ sync

    def _note_behind(self, height: int) -> None:
        if height > self.behind_hint:
            self.behind_hint = height
        self._wake_sync.set()

    async def _serve(self, stream: INetStream) -> None:
        assert self.store is not None and self.rt is not None
        rt = self.rt

        def reject(reason: str, detail: str) -> None:
            log.info("sync request rejected: %s: %s", reason, detail)
            rt.reject("sync", reason)

        await serve_stream(stream, self.store, reject)

    def _connected_peers(self) -> list[tuple[str, str]]:
        """(peer id, kind) of every connected peer: kind is direct when any direct connection
        exists (the swarm opens streams on direct connections first)."""
        assert self.rt is not None
        peers: dict[str, str] = {}
        for c in self.rt.connections.all():
            pid = str(c.peer)
            if peers.get(pid) != "direct":
                peers[pid] = c.kind
        return sorted(peers.items())

    async def _client(self, peer: str, kind: str) -> SyncClient | None:
        """A sync stream to `peer`, reopened when the connection kind changed (e.g. DCUtR
        turned a relayed path into a direct one)."""
        assert self.rt is not None
        held = self.clients.get(peer)
        if held is not None and held[1] == kind and not held[0].broken:
            return held[0]
        if held is not None:
            await held[0].close()
            self.clients.pop(peer, None)
        if time.monotonic() - self.no_sync.get(peer, -1e9) < 30:
            return None
        try:
            with trio.fail_after(STATUS_TIMEOUT):
                stream = await self.rt.host.new_stream(ID.from_base58(peer), [SYNC_PROTOCOL])  # type: ignore[list-item]
        except Exception as exc:
            log.info("sync: no sync stream to %s (%s): %r", peer, kind, exc)
            self.no_sync[peer] = time.monotonic()
            return None
        client = SyncClient(stream)
        self.clients[peer] = (client, kind)
        return client

    async def _poll_status(
        self, grace: float = STATUS_GRACE_S, sample: int | None = None
    ) -> list[SyncPeer]:
        """Ask every connected peer (or `sample` of them, least recently asked first) for
        its tip, concurrently. Returns once every peer asked has answered or failed, or
        `grace` after the first answer: a frozen peer must not hold up a sync the others
        can serve (it is asked again at the next poll). The initial catch-up passes a
        longer grace: a first stream over a circuit through a loaded relay can take
        seconds, and a short catch-up would be over before that peer could join the
        session."""
        every = self._connected_peers()
        peers = every
        if sample is not None and len(every) > sample:
            peers = sorted(every, key=lambda pk: self._polled_at.get(pk[0], -math.inf))[:sample]
        now = time.monotonic()
        for peer, _ in peers:
            self._polled_at[peer] = now
        out: list[SyncPeer] = []
        pending = [len(peers)]
        enough, all_done = trio.Event(), trio.Event()

        async def one(peer: str, kind: str) -> None:
            try:
                client = await self._client(peer, kind)
                if client is None:
                    return
                try:
                    resp, _ = await client.request({"type": "status"}, STATUS_TIMEOUT)
                    height = codec.get_int(resp, "height")
                except (SyncError, CodecError, trio.TooSlowError, Exception) as exc:
                    log.info("sync: status from %s (%s) failed: %r", peer, kind, exc)
                    await client.close()
                    self.clients.pop(peer, None)
                    self.peer_heights.pop(peer, None)
                    return
                self.peer_heights[peer] = height
                out.append(SyncPeer(peer, kind, client, height))
                enough.set()
            finally:
                pending[0] -= 1
                if pending[0] <= 0:
                    all_done.set()
                    enough.set()

        async with trio.open_nursery() as nursery:
            for peer, kind in peers:
                nursery.start_soon(one, peer, kind)
            if peers:
                await enough.wait()
                with trio.move_on_after(grace):
                    await all_done.wait()
            if not all_done.is_set():
                late = sorted({p for p, _ in peers} - {sp.peer for sp in out})
                log.info("sync: going ahead without slow peer(s) %s", ", ".join(late))
            nursery.cancel_scope.cancel()  # a cancelled request marks its stream broken
        connected = {p for p, _ in every}
        for gone in set(self.peer_heights) - connected:
            self.peer_heights.pop(gone, None)
        for gone in set(self._polled_at) - connected:
            self._polled_at.pop(gone, None)
        return out

    async def _sync_loop(self) -> None:
        store, rt = self.store, self.rt
        assert store is not None and rt is not None
        while True:
            with trio.move_on_after(SYNC_POLL_S):
                await self._wake_sync.wait()
            woken = self._wake_sync.is_set()
            self._wake_sync = trio.Event()
            recent = time.monotonic() - self.last_commit_at <= STALL_S
            following = (
                not woken and self.settled and (recent or self._none_ahead_at == store.height)
            )
            rt.metrics.sync_polls_total.labels(scope="sample" if following else "all").inc()
            peers = await self._poll_status(sample=SYNC_POLL_SAMPLE if following else None)
            best = max((p.height for p in peers), default=None)
            if best is None:
                self.sync_state = "idle"
                if peers == [] and self._connected_peers():
                    self._initial_check.set()  # connected, but nobody serves sync
                continue
            stalled = time.monotonic() - self.last_commit_at > STALL_S
            behind = best > store.height + 1 or (best > store.height and stalled)
            if behind and following:
                peers = await self._poll_status()  # a sample saw it: sync from every peer
                best = max((p.height for p in peers), default=store.height)
            if behind and not self.settled:
                self.settling = True
                self.sync_state = "syncing"
                await self._settle_peers()
                # the settled peer set, fresh tips; each ask is bounded by STATUS_TIMEOUT
                peers = await self._poll_status(grace=STATUS_TIMEOUT)
                best = max((p.height for p in peers), default=store.height)
                self.settling = False
            self.settled = True
            if behind and best > store.height:
                await self._sync_session([p for p in peers if p.height > store.height], best)
            self.sync_state = "synced" if best <= store.height + 1 else "syncing"
            if not following and best <= store.height:
                # every peer asked, none ahead: the chain itself is slow (consensus at a
                # late round), not we behind. Until our height changes, routine polls ask
                # the sample only. Before, a testnet whose blocks came slower than STALL_S
                # (64 nodes on 2 cores: a block in 15 s) had every node ask every peer
                # every SYNC_POLL_S, load that slowed consensus further
                self._none_ahead_at = store.height
            self._initial_check.set()

    def _reservation_pending(self) -> bool:
        """The relay client has relay candidates but no reservation yet: until it has one,
        peers behind other NATs cannot dial us over a circuit."""
        assert self.rt is not None
        if not self.rt.config.relay.is_client:
            return False
        client = self.rt.relay_client
        return client is not None and client.reservation_pending()

    def _dials_pending(self) -> int:
        """How many dials discovery has in flight (peers learnt by peer exchange, often
        through circuit addresses of peers behind the other NAT)."""
        assert self.rt is not None
        discovery = self.rt.discovery
        return discovery.dials_in_flight() if discovery is not None else 0

    async def _settle_peers(self) -> None:
        """Wait (bounded by SETTLE_MAX_S) until a reservation is held, when we are a relay
        client with candidates, discovery has no dial in flight, and the connected
        peer count has not grown for SETTLE_QUIET_S. See the module docstring for why."""
        t0 = time.monotonic()
        count = len(self._connected_peers())
        quiet_from = t0
        reserved_at: float | None = None
        while True:
            now = time.monotonic()
            n = len(self._connected_peers())
            if n > count:
                quiet_from = now
            count = n
            if reserved_at is None and not self._reservation_pending():
                reserved_at = now
                quiet_from = max(quiet_from, now)
            pending = self._dials_pending()
            if reserved_at is not None and not pending and now - quiet_from >= SETTLE_QUIET_S:
                why = "peer set settled"
                break
            if now - t0 >= SETTLE_MAX_S:
                why = (
                    "settle limit reached"
                    + ("" if reserved_at else ", no reservation yet")
                    + (f", {pending} dial(s) in flight" if pending else "")
                )
                break
            await trio.sleep(0.25)
        kinds: dict[str, int] = {}
        for _, kind in self._connected_peers():
            kinds[kind] = kinds.get(kind, 0) + 1
        log.info(
            "sync: behind at start; %s after %.1fs: %d peer(s) connected (%s)",
            why,
            time.monotonic() - t0,
            count,
            ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "none",
        )

    async def _join_late(self, session: SyncSession) -> None:
        """While a session runs, peers that connect (or reconnect another way) join it."""
        while True:
            await trio.sleep(JOIN_POLL_S)
            fresh = [(p, k) for p, k in self._connected_peers() if session.accepts(p, k)]
            if fresh:
                async with trio.open_nursery() as nursery:
                    for peer, kind in fresh:
                        nursery.start_soon(self._join_one, session, peer, kind)

    async def _join_one(self, session: SyncSession, peer: str, kind: str) -> None:
        client = await self._client(peer, kind)
        if client is None:
            return
        try:
            resp, _ = await client.request({"type": "status"}, STATUS_TIMEOUT)
            height = codec.get_int(resp, "height")
        except Exception as exc:
            log.info("sync: status from joining peer %s (%s) failed: %r", peer, kind, exc)
            await client.close()
            self.clients.pop(peer, None)
            return
        self.peer_heights[peer] = height
        if session.add_peer(SyncPeer(peer, kind, client, height)):
            log.info("sync: %s (%s, height %d) joined the running session", peer[-8:], kind, height)

    async def _sync_session(self, peers: list[SyncPeer], target: int) -> None:
        store, rt, cons = self.store, self.rt, self.cons
        assert store is not None and rt is not None and cons is not None
        start = store.height + 1
        self.sync_state = "syncing"
        self.syncing = True
        self._sync_over = trio.Event()
        log.info(
            "sync: heights %d..%d from %d peer(s): %s",
            start,
            target,
            len(peers),
            ", ".join(f"{p.peer[-8:]}({p.kind},{p.height})" for p in peers),
        )
        t0 = time.monotonic()

        def apply(block: Block, cert: CommitCert, peer: str, kind: str) -> None:
            assert self.vset is not None
            if block.height != store.height + 1:
                return  # already have it (e.g. from gossip meanwhile)
            verify_chain_link(self.vset, store.tip_hash, block, cert)
            store.append(block, cert)
            rt.metrics.chain_height.set(block.height)

        def record(peer: str, kind: str, a: int, b: int, size: int) -> None:
            st = self.sync_stats.setdefault((peer, kind), PeerStats(peer, kind))
            st.add(a, b, size)
            rt.metrics.blocks_synced_total.labels(kind=kind).inc(b - a + 1)

        def reject(reason: str, detail: str) -> None:
            log.info("sync response rejected: %s: %s", reason, detail)
            rt.reject("sync", reason)

        session = SyncSession(peers, start, target, apply, record, reject)
        try:
            with trio.move_on_after(max(60.0, REQUEST_TIMEOUT * 6)):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._join_late, session)
                    await session.run()
                    nursery.cancel_scope.cancel()
        finally:
            self.syncing = False
            self._sync_over.set()
        for p in session.peers:
            if p.peer not in session.sched.alive or p.client.broken:
                await p.client.close()
                self.clients.pop(p.peer, None)
        end = store.height
        if end >= start:
            self.last_commit_at = time.monotonic()
            dt = time.monotonic() - t0
            log.info(
                "sync: applied %d..%d (%d blocks) in %.2fs (%.0f blocks/s)",
                start,
                end,
                end - start + 1,
                dt,
                (end - start + 1) / dt if dt else 0.0,
            )
            rt.events.emit(
                "sync_completed",
                from_height=start,
                to_height=end,
                peers=sorted(session.used),
                duration_s=round(dt, 3),
            )
        # back to following gossip from the new tip
        if end >= cons.height or cons.decided:
            self._start_gen += 1
            self._act(self._start_height(end + 1))


def _timeouts_for(block_interval_s: float) -> Timeouts:
    """Round timeouts scale with the block interval but never drop below what a loaded
    loopback or a relayed path needs."""
    base = max(1.0, block_interval_s)
    return Timeouts(propose=2.0 * base, prevote=base, precommit=base, delta=0.5 * base)
