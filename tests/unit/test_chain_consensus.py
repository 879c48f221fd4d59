"""Pure state-machine tests of node/chain: codec, signatures, store, consensus rules, sync
request handling. (Real-node claims live in tests/node/test_chain*.py.)"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.chain import codec
from node.chain.block import (
    PRECOMMIT,
    PREVOTE,
    Block,
    CommitCert,
    InvalidMessage,
    Proposal,
    ValidatorSet,
    Vote,
)
from node.chain.codec import CodecError
from node.chain.consensus import (
    Behind,
    Broadcast,
    Consensus,
    Decide,
    Rejected,
    ScheduleTimeout,
    Timeouts,
)
from node.chain.service import decode_gossip
from node.chain.store import BlockStore, StoreError


@dataclass
class Val:
    name: str
    key: object
    pid: str


def make_vals(n: int = 4) -> list[Val]:
    out = []
    for i in range(n):
        kp = create_new_key_pair()
        out.append(Val(f"v{i}", kp.private_key, str(ID.from_pubkey(kp.public_key))))
    return out


def vset_of(vals: list[Val]) -> ValidatorSet:
    return ValidatorSet([(v.name, v.pid) for v in vals])


# ------------------------------------------------------------------ codec / block


def test_codec_is_canonical_and_strict() -> None:
    assert codec.encode({"b": 1, "a": [None, "x"]}) == b'{"a":[null,"x"],"b":1}'
    with pytest.raises(CodecError):
        codec.encode({"x": 1.5})
    with pytest.raises(CodecError):
        codec.decode(b'{"x": 1.5}')
    with pytest.raises(CodecError):
        codec.decode(b"\xff\xfe")
    with pytest.raises(CodecError):
        codec.decode_object(b"[1]")
    with pytest.raises(CodecError, match="'from'"):
        codec.get_int({"from": "1"}, "from")


def test_codec_refuses_an_integer_past_pythons_digit_limit() -> None:
    """Found by the fuzz tier: an integer of more than 4300 digits made json.loads raise a
    plain ValueError, which escaped the gossip topic validator (it catches CodecError) and
    with it py-libp2p's push_msg task: pubsub went down."""
    with pytest.raises(CodecError):
        codec.decode(b'{"kind":"vote","vote":' + b"7" * 5000 + b"}")
    with pytest.raises(CodecError):
        decode_gossip(b"1" * 4301)


def test_vote_signature_checks() -> None:
    vals = make_vals()
    vs = vset_of(vals)
    h = bytes(32)
    v = Vote.make(vs, vals[0].key, vals[0].pid, PREVOTE, 1, 0, h)  # type: ignore[arg-type]
    v.verify(vs)
    assert Vote.from_obj(codec.decode(codec.encode(v.to_obj()))) == v
    forged = Vote(PREVOTE, 1, 0, b"\x01" * 32, v.validator, v.signature)
    with pytest.raises(InvalidMessage) as exc:
        forged.verify(vs)
    assert exc.value.reason == "bad_signature"
    outsider = make_vals(1)[0]
    ov = Vote.make(vs, outsider.key, outsider.pid, PREVOTE, 1, 0, h)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage) as exc:
        ov.verify(vs)
    assert exc.value.reason == "not_validator"


@dataclass
class CountingKey:
    """The validator's real public key, its verify calls counted."""

    key: object
    calls: int = 0

    def verify(self, data: bytes, signature: bytes) -> bool:
        self.calls += 1
        return bool(self.key.verify(data, signature))  # type: ignore[attr-defined]


def test_a_signature_that_verified_is_not_checked_again_a_bad_one_always_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ValidatorSet.verify remembers triples that verified: the topic validator, consensus
    and the commit certificate each check the same precommit (26 checks a block for 9
    signatures). A forged signature is checked, and rejected, every time."""
    vals = make_vals()
    vs = vset_of(vals)
    counting = CountingKey(vs._keys[vals[0].pid])
    vs._keys[vals[0].pid] = counting
    h = bytes(32)
    v = Vote.make(vs, vals[0].key, vals[0].pid, PRECOMMIT, 1, 0, h)  # type: ignore[arg-type]
    v.verify(vs)
    v.verify(vs)
    Vote.from_obj(codec.decode(codec.encode(v.to_obj()))).verify(vs)  # equal bytes, new objects
    assert counting.calls == 1
    forged = Vote(PRECOMMIT, 1, 0, h, v.validator, bytes(64))
    for _ in range(2):
        with pytest.raises(InvalidMessage, match="bad_signature"):
            forged.verify(vs)
    assert counting.calls == 3
    # bounded: the oldest triple goes first
    monkeypatch.setattr("node.chain.block.VERIFIED_KEPT", 2)
    for r in (1, 2):
        Vote.make(vs, vals[0].key, vals[0].pid, PRECOMMIT, 1, r, h).verify(vs)  # type: ignore[arg-type]
    assert len(vs._verified) == 2 and counting.calls == 5
    v.verify(vs)  # forgotten: checked again
    assert counting.calls == 6
    # a signature for another validator set (chain id) does not verify here
    other = vset_of(vals[:3])
    v2 = Vote.make(other, vals[0].key, vals[0].pid, PREVOTE, 1, 0, h)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage):
        v2.verify(vs)


def test_proposer_rotates_by_height_and_round() -> None:
    vals = make_vals()
    vs = vset_of(vals)
    assert vs.quorum == 3
    assert vs.proposer(5, 0) == vals[1].pid  # validators[h mod n]
    assert vs.proposer(5, 1) == vals[2].pid


# ------------------------------------------------------------------ store


def _cert(vs: ValidatorSet, vals: list[Val], block: Block, k: int = 3) -> CommitCert:
    votes = tuple(
        Vote.make(vs, v.key, v.pid, PRECOMMIT, block.height, 0, block.hash)  # type: ignore[arg-type]
        for v in vals[:k]
    )
    return CommitCert(block.height, 0, block.hash, votes)


def test_store_survives_reopen_and_enforces_order(tmp_path: Path) -> None:
    vals = make_vals()
    vs = vset_of(vals)
    path = tmp_path / "chain.sqlite"
    s = BlockStore(path, vs.chain_id)
    assert (s.height, s.tip_hash) == (0, vs.chain_id)
    b1 = Block(1, vs.chain_id, vals[1].pid, 1000, b"x")
    c1 = _cert(vs, vals, b1)
    c1.verify(vs, b1)
    s.append(b1, c1)
    with pytest.raises(StoreError):
        s.append(b1, c1)
    assert s.check_and_record_signature(2, 0, PREVOTE, b"a" * 32)
    assert s.check_and_record_signature(2, 0, PREVOTE, b"a" * 32)
    assert not s.check_and_record_signature(2, 0, PREVOTE, b"b" * 32)
    s.close()
    s2 = BlockStore(path, vs.chain_id)
    assert s2.height == 1 and s2.tip_hash == b1.hash
    blk, cert = s2.get(1)  # type: ignore[misc]
    assert blk == b1 and cert == c1
    assert not s2.check_and_record_signature(2, 0, PREVOTE, None)  # survives restarts
    with pytest.raises(StoreError, match="another validator set"):
        BlockStore(path, vset_of(make_vals()).chain_id)


def test_cert_needs_quorum_of_distinct_valid_precommits() -> None:
    vals = make_vals()
    vs = vset_of(vals)
    b = Block(1, vs.chain_id, vals[1].pid, 0)
    with pytest.raises(InvalidMessage, match="quorum"):
        _cert(vs, vals, b, k=2).verify(vs, b)
    c = _cert(vs, vals, b, k=2)
    dup = CommitCert(1, 0, b.hash, (*c.votes, c.votes[0]))
    with pytest.raises(InvalidMessage, match="duplicate"):
        dup.verify(vs, b)


# ------------------------------------------------------------------ consensus


@dataclass(order=True)
class _Ev:
    t: float
    seq: int
    node: int = field(compare=False)
    what: object = field(compare=False)


class Net:
    """A deterministic in-memory network of Consensus machines with virtual time."""

    def __init__(self, n: int = 4, down: set[int] | None = None, observers: int = 0) -> None:
        self.vals = make_vals(n)
        self.vs = vset_of(self.vals)
        self.down = down or set()
        self.nodes: list[Consensus] = []
        for v in self.vals:
            # blocks carry the virtual time, so a block proposed again in a later round is a
            # new block, as on real nodes (with a constant clock it would hash the same)
            self.nodes.append(
                Consensus(self.vs, v.pid, v.key, timeouts=Timeouts(), now_ms=self.now_ms)  # type: ignore[arg-type]
            )
        for _ in range(observers):
            self.nodes.append(Consensus(self.vs, None, None))
        self.tip = [(0, self.vs.chain_id)] * len(self.nodes)
        self.t = 0.0
        self.decided: list[dict[int, bytes]] = [{} for _ in self.nodes]
        self.q: list[_Ev] = []
        self.t = 0.0
        self.seq = 0
        self.rejected: list[str] = []
        self.drop: object = lambda src, dst, msg: False

    def now_ms(self) -> int:
        return int(self.t * 1000)

    def push(self, delay: float, node: int, what: object) -> None:
        self.seq += 1
        heapq.heappush(self.q, _Ev(self.t + delay, self.seq, node, what))

    def handle(self, i: int, actions: list) -> None:
        for a in actions:
            if isinstance(a, Broadcast):
                for j in range(len(self.nodes)):
                    if j != i and j not in self.down and not self.drop(i, j, a.msg):  # type: ignore[operator]
                        self.push(0.01, j, a.msg)
            elif isinstance(a, ScheduleTimeout):
                self.push(a.delay, i, a)
            elif isinstance(a, Decide):
                h = a.block.height
                a.cert.verify(self.vs, a.block)
                self.decided[i][h] = a.block.hash
                self.tip[i] = (h, a.block.hash)
                self.push(0.1, i, "start")
            elif isinstance(a, Rejected):
                self.rejected.append(a.reason)

    def start(self) -> None:
        for i, node in enumerate(self.nodes):
            if i not in self.down:
                self.handle(i, node.start_height(1, self.vs.chain_id))

    def run(self, until: float, stop_height: int = 10**9) -> None:
        while self.q and self.t < until:
            ev = heapq.heappop(self.q)
            self.t = ev.t
            node = self.nodes[ev.node]
            if isinstance(ev.what, Proposal):
                self.handle(ev.node, node.on_proposal(ev.what))
            elif isinstance(ev.what, Vote):
                self.handle(ev.node, node.on_vote(ev.what))
            elif isinstance(ev.what, ScheduleTimeout):
                w = ev.what
                self.handle(ev.node, node.on_timeout(w.step, w.height, w.round))
            elif ev.what == "start":
                h, tip = self.tip[ev.node]
                if node.height == h:
                    self.handle(ev.node, node.start_height(h + 1, tip))
            if (
                min(self.tip[i][0] for i in range(len(self.nodes)) if i not in self.down)
                >= stop_height
            ):
                return

    def assert_agreement(self) -> None:
        by_height: dict[int, set[bytes]] = {}
        for d in self.decided:
            for h, digest in d.items():
                by_height.setdefault(h, set()).add(digest)
        assert all(len(s) == 1 for s in by_height.values()), by_height


def test_four_validators_commit_and_observer_follows() -> None:
    net = Net(observers=1)
    net.start()
    net.run(until=60, stop_height=10)
    assert all(tip[0] >= 10 for tip in net.tip)
    net.assert_agreement()
    assert net.t < 5  # no timeouts needed when everyone is up
    assert not net.rejected


def test_missing_proposer_does_not_stall() -> None:
    # v1 proposes height 1 round 0 and v2 height 2...: with v1 down, its heights need round 1
    net = Net(down={1})
    net.start()
    net.run(until=120, stop_height=8)
    assert all(net.tip[i][0] >= 8 for i in (0, 2, 3))
    net.assert_agreement()


def test_no_quorum_no_commit() -> None:
    net = Net(down={1, 2})
    net.start()
    net.run(until=60)
    assert all(net.tip[i][0] == 0 for i in (0, 3))


def test_lock_keeps_safety_under_split_delivery() -> None:
    """Adversarial delivery: precommits of round 0 reach only one validator, so others
    move to later rounds; whatever happens, no two validators decide different blocks."""
    for seed in range(6):
        net = Net()

        def drop(src: int, dst: int, msg: object, seed: int = seed) -> bool:
            if isinstance(msg, Vote) and msg.round == 0 and msg.type == PRECOMMIT:
                return dst != seed % 4
            if isinstance(msg, Vote) and msg.round == 1 and msg.type == PREVOTE:
                return (src + dst + seed) % 3 == 0
            return False

        net.drop = drop
        net.start()
        net.run(until=200, stop_height=4)
        net.assert_agreement()
        assert min(t[0] for t in net.tip) >= 4, (seed, net.t)


def test_locked_validator_prevotes_nil_for_other_block() -> None:
    vals = make_vals()
    vs = vset_of(vals)
    me = vals[0]
    c = Consensus(vs, me.pid, me.key, timeouts=Timeouts())  # type: ignore[arg-type]
    c.start_height(1, vs.chain_id)
    # round 0: proposer v1 proposes A, polka for A -> we lock on A and precommit it
    a = Block(1, vs.chain_id, vals[1].pid, 1)
    out = c.on_proposal(Proposal.make(vs, vals[1].key, vals[1].pid, 0, a, -1))  # type: ignore[arg-type]
    assert any(isinstance(x, Broadcast) and x.msg.block_hash == a.hash for x in out)
    for v in vals[1:3]:
        out += c.on_vote(Vote.make(vs, v.key, v.pid, PREVOTE, 1, 0, a.hash))  # type: ignore[arg-type]
    precommits = [x.msg for x in out if isinstance(x, Broadcast) and isinstance(x.msg, Vote)]
    assert any(p.type == PRECOMMIT and p.block_hash == a.hash for p in precommits)
    assert c.locked_block == a
    # round 1: v2 proposes B without a polka: we must prevote nil
    c.on_timeout("precommit", 1, 0)
    b = Block(1, vs.chain_id, vals[2].pid, 2)
    out = c.on_proposal(Proposal.make(vs, vals[2].key, vals[2].pid, 1, b, -1))  # type: ignore[arg-type]
    votes = [x.msg for x in out if isinstance(x, Broadcast)]
    assert votes and all(isinstance(v, Vote) and v.block_hash is None for v in votes)


def test_bad_messages_rejected_and_counted() -> None:
    vals = make_vals()
    vs = vset_of(vals)
    c = Consensus(vs, None, None)
    c.start_height(1, vs.chain_id)
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    v = Vote.make(vs, vals[0].key, vals[0].pid, PREVOTE, 1, 0, h1)  # type: ignore[arg-type]
    assert c.on_vote(v) == []
    assert c.on_vote(v) == []  # a duplicate is not equivocation
    eq = Vote.make(vs, vals[0].key, vals[0].pid, PREVOTE, 1, 0, h2)  # type: ignore[arg-type]
    assert [type(a) for a in c.on_vote(eq)] == [Rejected]
    assert c.on_vote(eq)[0].reason == "equivocation"  # type: ignore[union-attr]
    bad = Vote(PREVOTE, 1, 0, h1, vals[1].pid, b"\x00" * 64)
    assert c.on_vote(bad)[0].reason == "bad_signature"  # type: ignore[union-attr]
    outsider = make_vals(1)[0]
    ov = Vote.make(vs, outsider.key, outsider.pid, PREVOTE, 1, 0, h1)  # type: ignore[arg-type]
    assert c.on_vote(ov)[0].reason == "not_validator"  # type: ignore[union-attr]
    wrong = Proposal.make(
        vs, vals[3].key, vals[3].pid, 0, Block(1, vs.chain_id, vals[3].pid, 0), -1
    )  # type: ignore[arg-type]
    assert c.on_proposal(wrong)[0].reason == "wrong_proposer"  # type: ignore[union-attr]
    far = Vote.make(vs, vals[0].key, vals[0].pid, PRECOMMIT, 9, 0, h1)  # type: ignore[arg-type]
    assert c.on_vote(far) == [Behind(9)]


def test_single_validator_decides_in_round_zero_without_timeouts() -> None:
    vals = make_vals(1)
    vs = vset_of(vals)
    c = Consensus(vs, vals[0].pid, vals[0].key, timeouts=Timeouts())  # type: ignore[arg-type]
    out = c.start_height(1, vs.chain_id)
    decided = [a for a in out if isinstance(a, Decide)]
    assert decided and decided[0].cert.round == 0


# ------------------------------------------------------------------ proof-of-lock gossip


def _polka_only_at(locked: set[int], dead: int, t_dead: float, t_heal: float = 20.0):
    """Drop rule: until `t_heal`, height 1 round 0 prevotes reach only the validators in
    `locked` (so only they see the polka and lock), and validator `dead` is gone from
    `t_dead` on. `t_heal` is past round 0's round timeout, so the re-sends of round 0's own
    votes are lost too, as they are in a partition that outlasts a round."""

    def drop(src: int, dst: int, msg: object, net: list[Net]) -> bool:
        if net[0].t >= t_dead and dead in (src, dst):
            return True
        if isinstance(msg, Vote) and msg.height == 1 and msg.round == 0 and msg.type == PREVOTE:
            return dst not in locked and net[0].t < t_heal
        return False

    return drop


def test_lock_nobody_else_saw_does_not_stall_after_a_validator_dies() -> None:
    """v0 locks on round 0's block, completed by v3's prevote that reached v0 only; then v3
    dies. v0 prevotes nil for every new block, so v1 and v2 must accept v0's re-proposal:
    they can only if the polka of round 0 travels with it (before the fix: no height 1,
    ever; the cross_network_sync stall after a validator kill)."""
    net = Net()
    holder = [net]
    rule = _polka_only_at({0}, dead=3, t_dead=0.05)
    net.drop = lambda s, d, m: rule(s, d, m, holder)
    net.start()
    net.run(until=300, stop_height=3)
    assert net.nodes[0].locked_round >= 0 or net.tip[0][0] >= 1
    assert all(net.tip[i][0] >= 3 for i in (0, 1, 2)), (net.t, net.tip)
    net.assert_agreement()


def test_two_locked_on_one_side_of_a_split_converge() -> None:
    """A partition mid-round: v0 and v1 saw the polka and locked, v2 and v3 did not. After
    the heal (all four alive) only a re-proposal of the locked block can gather 3 prevotes,
    and v2 and v3 can accept it only with the polka (the partition-heal stall)."""
    net = Net()
    holder = [net]
    rule = _polka_only_at({0, 1}, dead=-1, t_dead=1e9)
    net.drop = lambda s, d, m: rule(s, d, m, holder)
    net.start()
    net.run(until=300, stop_height=3)
    assert min(t[0] for t in net.tip) >= 3, (net.t, net.tip)
    net.assert_agreement()


def test_lock_and_its_polka_survive_a_restart(tmp_path: Path) -> None:
    """A validator restarted while locked gets the polka back from the store and sends it
    with its re-proposal, so the others can accept the block it is locked on."""
    vals = make_vals()
    vs = vset_of(vals)
    block = Block(1, vs.chain_id, vals[1].pid, 7)
    polka = tuple(
        Vote.make(vs, v.key, v.pid, PREVOTE, 1, 2, block.hash)  # type: ignore[arg-type]
        for v in vals[:3]
    )
    store = BlockStore(tmp_path / "chain.sqlite", vs.chain_id)
    store.save_lock(1, 2, block, polka)
    store.close()
    lock = BlockStore(tmp_path / "chain.sqlite", vs.chain_id).load_lock(1)
    assert (lock.round, lock.block, lock.polka) == (2, block, polka)
    # height 1 round 3 is v0's turn ((1 + 3) mod 4): it re-proposes the locked block
    me = vals[0]
    c = Consensus(vs, me.pid, me.key, timeouts=Timeouts())  # type: ignore[arg-type]
    c.start_height(1, vs.chain_id, locked_round=2, locked_block=block, locked_votes=lock.polka)
    c.round = 2
    out = c.on_timeout("round", 1, 2)
    sent = [a.msg for a in out if isinstance(a, Broadcast)]
    proposals = [m for m in sent if isinstance(m, Proposal)]
    assert proposals and proposals[0].valid_round == 2 and proposals[0].block == block
    assert set(polka) <= {m for m in sent if isinstance(m, Vote)}
    # an observer that never saw round 2 accepts it from those messages alone
    other = Consensus(vs, vals[2].pid, vals[2].key, timeouts=Timeouts())  # type: ignore[arg-type]
    other.start_height(1, vs.chain_id)
    other.round = 3
    got: list = []
    for m in sent:
        got += other.on_vote(m) if isinstance(m, Vote) else other.on_proposal(m)
    assert any(
        isinstance(a, Broadcast) and isinstance(a.msg, Vote) and a.msg.block_hash == block.hash
        for a in got
    )


def test_the_reader_gets_what_the_validator_decoded_without_decoding_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pubsub runs the topic validator, then delivers the message to the subscription: the
    gossip reader takes the validator's decoded message instead of parsing it again, and
    what the validator refused is neither kept nor acted on."""
    import trio

    from node.chain import service as service_mod

    vals = make_vals()
    vs = vset_of(vals)
    vote = Vote.make(vs, vals[0].key, vals[0].pid, PREVOTE, 1, 0, bytes(32))  # type: ignore[arg-type]
    good = service_mod.encode_gossip(vote)
    forged = service_mod.encode_gossip(
        Vote(PREVOTE, 1, 0, b"\x01" * 32, vote.validator, vote.signature)
    )
    decodes = [0]
    upstream_decode = service_mod.decode_gossip

    def counting(data: bytes) -> object:
        decodes[0] += 1
        return upstream_decode(data)

    monkeypatch.setattr(service_mod, "decode_gossip", counting)
    rejected: list[str] = []
    acted: list[object] = []

    class Rt:
        def reject(self, kind: str, reason: str) -> None:
            rejected.append(reason)

    class Msg:
        def __init__(self, data: bytes) -> None:
            self.data = data

    class Cons:
        def on_vote(self, v: Vote) -> list[object]:
            acted.append(v)
            return []

    chain = service_mod.ChainService()
    chain.rt, chain.vset, chain.cons = Rt(), vs, Cons()  # type: ignore[assignment]
    assert chain._validate(ID(b"x"), Msg(good)) is True
    assert chain._validate(ID(b"x"), Msg(forged)) is False
    assert rejected == ["bad_signature"] and decodes[0] == 2
    assert list(chain._validated) == [good]  # only what was accepted is kept

    async def read_one() -> None:
        send, recv = trio.open_memory_channel[Msg](1)

        class Sub:
            async def get(self) -> Msg:
                return await recv.receive()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(chain._gossip_reader, Sub())
            await send.send(Msg(good))
            with trio.fail_after(5):
                while not acted:
                    await trio.sleep(0)
            nursery.cancel_scope.cancel()

    trio.run(read_one)
    assert acted == [vote] and decodes[0] == 2  # not decoded a third time
    assert chain._validated == {}
    for i in range(service_mod.DECODED_KEEP + 10):  # validated, never delivered: bounded
        chain._validated[b"%d" % i] = vote
        chain._validate(ID(b"x"), Msg(good))
    assert len(chain._validated) <= service_mod.DECODED_KEEP
