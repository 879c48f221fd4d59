"""Tendermint-like consensus for one height at a time, as a pure state machine.

Inputs are proposals, votes, timeouts and certified commits; outputs are actions (broadcast
this, schedule that timeout, decide this block, this message was rejected). No I/O, no
clock reads, so every rule is unit-testable and the service only moves bytes.

The rules are those of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic 2018):
  * proposer(h, r) = validators[(h + r) mod n]; it proposes its valid block if it has one;
  * prevote the proposal if it is valid and we are not locked on another block, or the
    proposal carries a polka (valid_round) newer than our lock;
  * on a polka (> 2/3 prevotes) for the proposal in the current round: lock on it and
    precommit it; a validator that precommitted a block is locked on it and only prevotes
    another block after a polka for that block in a later round;
  * > 2/3 precommits for a block in any round decide it (with those precommits as its
    certificate); > 2/3 nil prevotes -> precommit nil; timeouts move propose -> prevote ->
    precommit -> next round; f + 1 messages from a higher round make us skip to it.
  * gossip is not reliable broadcast (nothing retransmits a lost vote), so a round that has
    not decided within `Timeouts.round` re-sends our own messages and moves on; changing
    rounds never affects safety.
  * the polka (proof-of-lock) travels with the block it justifies: a proposer re-proposing
    its valid block from round vr re-broadcasts the prevotes of vr, and so does every node
    with a valid block when a round times out. Without this, a validator that locked on a
    polka nobody else saw (the prevote that completed it came from a validator killed right
    after sending it to this one only) prevotes nil for every new block, and the others
    never accept its re-proposal: with one validator of four dead, nothing decides again.
    Tendermint's reactor does the same by gossiping the POL round's votes.
Validators vote; full nodes and sentries run the same machine as observers (no proposals,
no votes, no timeouts) and decide on the same certificates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from node.chain.block import (
    MAX_PAYLOAD,
    PRECOMMIT,
    PREVOTE,
    Block,
    CommitCert,
    InvalidMessage,
    Proposal,
    Signer,
    ValidatorSet,
    Vote,
)

PROPOSE, STEP_PREVOTE, STEP_PRECOMMIT = "propose", "prevote", "precommit"
ROUND = "round"  # the stall timer: a round that made no decision in time is abandoned
MAX_ROUND_AHEAD = 64
MAX_FUTURE_BUFFER = 4096


@dataclass(frozen=True)
class Broadcast:
    msg: Proposal | Vote


@dataclass(frozen=True)
class ScheduleTimeout:
    step: str
    height: int
    round: int
    delay: float


@dataclass(frozen=True)
class Decide:
    block: Block
    cert: CommitCert


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Behind:
    """A valid message for a height beyond the next one: we are behind, sync."""

    height: int


Action = Union[Broadcast, ScheduleTimeout, Decide, Rejected, Behind]  # noqa: UP007


@dataclass
class Timeouts:
    propose: float = 2.0
    prevote: float = 1.0
    precommit: float = 1.0
    delta: float = 0.5  # added per round so slow networks eventually meet

    def of(self, step: str, round_: int) -> float:
        base = {PROPOSE: self.propose, STEP_PREVOTE: self.prevote, STEP_PRECOMMIT: self.precommit}
        return base[step] + self.delta * round_

    def round(self, round_: int) -> float:
        """Longest a round may take before it is abandoned (lost messages, dead peers)."""
        return 2 * (self.of(PROPOSE, round_) + self.of(STEP_PREVOTE, round_)) + self.of(
            STEP_PRECOMMIT, round_
        )


class Consensus:
    """One node's view of the current height. `my_id` is None (or not a validator) for
    observers."""

    def __init__(
        self,
        vset: ValidatorSet,
        my_id: str | None,
        signer: Signer | None,
        *,
        timeouts: Timeouts | None = None,
        now_ms: Callable[[], int] = lambda: 0,
        can_sign: Callable[[int, int, str, bytes | None], bool] = lambda *_: True,
        save_lock: Callable[[int, int, Block | None, tuple[Vote, ...]], None] = lambda *_: None,
        payload: Callable[[int], bytes] = lambda _h: b"",
    ) -> None:
        self.vset = vset
        self.my_id = my_id
        self.signer = signer
        self.voting = my_id is not None and vset.is_validator(my_id) and signer is not None
        self.timeouts = timeouts or Timeouts()
        self.now_ms = now_ms
        self.can_sign = can_sign
        self.save_lock = save_lock
        self.payload = payload
        self.height = 0
        self.prev_hash = b""
        self.round = 0
        self.step = PROPOSE
        self.decided = True  # until start_height
        self.locked_round = -1
        self.locked_block: Block | None = None
        self.valid_round = -1
        self.valid_block: Block | None = None
        self.proposals: dict[int, Proposal] = {}
        self.blocks: dict[bytes, Block] = {}
        self.votes: dict[tuple[int, str], dict[str, Vote]] = {}
        self._once: set[tuple[str, int]] = set()
        self._future: list[Proposal | Vote] = []

    # ---------------------------------------------------------------- inputs

    def start_height(
        self,
        height: int,
        prev_hash: bytes,
        *,
        locked_round: int = -1,
        locked_block: Block | None = None,
        locked_votes: tuple[Vote, ...] = (),
    ) -> list[Action]:
        """Enter `height` on top of `prev_hash` (the committed tip) at round 0, with the lock
        (and the polka that made it, `locked_votes`) a restarted validator saved."""
        self.height, self.prev_hash = height, prev_hash
        self.round, self.step, self.decided = 0, PROPOSE, False
        self.locked_round, self.locked_block = locked_round, locked_block
        self.valid_round, self.valid_block = -1, None
        if locked_block is not None:
            self.valid_round, self.valid_block = locked_round, locked_block
        self.proposals, self.blocks, self.votes, self._once = {}, {}, {}, set()
        for vote in locked_votes:
            if vote.height == height and vote.round == locked_round and vote.type == PREVOTE:
                try:
                    vote.verify(self.vset)
                except InvalidMessage:
                    continue
                self.votes.setdefault((locked_round, PREVOTE), {})[vote.validator] = vote
        out = self._start_round(0)
        future, self._future = self._future, []
        for msg in future:
            if msg.height == height:
                out += self._dispatch(msg)
            elif msg.height > height:
                self._future.append(msg)
        return out + self._run()  # e.g. our own proposal: prevote it now

    def on_proposal(self, p: Proposal) -> list[Action]:
        gate = self._gate(p.height)
        if isinstance(gate, list):
            return gate
        if gate == "buffer":
            return self._buffer(p)
        try:
            p.verify(self.vset)
        except InvalidMessage as exc:
            return [Rejected(exc.reason, str(exc))]
        if p.round > self.round + MAX_ROUND_AHEAD:
            return [Rejected("round_too_far", f"round {p.round}")]
        prior = self.proposals.get(p.round)
        if prior is not None:
            if prior.block.hash == p.block.hash and prior.valid_round == p.valid_round:
                return []
            return [Rejected("equivocation", f"two proposals from {p.proposer} at round {p.round}")]
        self.proposals[p.round] = p
        self.blocks.setdefault(p.block.hash, p.block)
        return self._run()

    def on_vote(self, v: Vote) -> list[Action]:
        gate = self._gate(v.height)
        if isinstance(gate, list):
            return gate
        if gate == "buffer":
            return self._buffer(v)
        try:
            v.verify(self.vset)
        except InvalidMessage as exc:
            return [Rejected(exc.reason, str(exc))]
        if v.round > self.round + MAX_ROUND_AHEAD:
            return [Rejected("round_too_far", f"round {v.round}")]
        box = self.votes.setdefault((v.round, v.type), {})
        prior = box.get(v.validator)
        if prior is not None:
            if prior.block_hash == v.block_hash:
                return []
            return [
                Rejected(
                    "equivocation",
                    f"{v.validator} sent two {v.type}s at height {v.height} round {v.round}",
                )
            ]
        box[v.validator] = v
        return self._run()

    def on_timeout(self, step: str, height: int, round_: int) -> list[Action]:
        if self.decided or height != self.height or round_ != self.round:
            return []
        if step == PROPOSE and self.step == PROPOSE:
            return self._prevote(None) + self._run()
        if step == STEP_PREVOTE and self.step == STEP_PREVOTE:
            return self._precommit(None) + self._run()
        if step == STEP_PRECOMMIT:
            return self._start_round(round_ + 1) + self._run()
        if step == ROUND:
            # Gossip does not retransmit: if this round's messages were lost, say ours again
            # (fresh gossip ids) and move on. Starting a round is always safe; locks stay.
            again: list[Action] = []
            p = self.proposals.get(round_)
            if p is not None and p.proposer == self.my_id:
                again.append(Broadcast(p))
            for vote_type in (PREVOTE, PRECOMMIT):
                mine = self.votes.get((round_, vote_type), {}).get(self.my_id or "")
                if mine is not None:
                    again.append(Broadcast(mine))
            if self.valid_block is not None:
                again += [Broadcast(v) for v in self._polka_votes(self.valid_round)]
            return again + self._start_round(round_ + 1) + self._run()
        return []

    def heard(self) -> dict[str, tuple[str, ...]]:
        """Whom this round's proposal and votes came from (validator names), for /status:
        at a stalled height it tells which validators' messages do not arrive."""
        p = self.proposals.get(self.round)
        name = self.vset.name_of.get
        return {
            "proposal": (name(p.proposer, p.proposer),) if p is not None else (),
            PREVOTE: tuple(sorted(name(v, v) for v in self.votes.get((self.round, PREVOTE), {}))),
            PRECOMMIT: tuple(
                sorted(name(v, v) for v in self.votes.get((self.round, PRECOMMIT), {}))
            ),
        }

    # ------------------------------------------------------------- internals

    def _gate(self, height: int) -> str | list[Action]:
        """ "now": process; "buffer": keep for the next height; else actions to return."""
        if not self.decided and height == self.height:
            return "now"
        if height == self.height + 1 or (self.decided and height == self.height):
            return "buffer"
        if height > self.height + 1:
            return [Behind(height)]
        return []  # an old height: late votes are normal, nothing to do

    def _buffer(self, msg: Proposal | Vote) -> list[Action]:
        if len(self._future) < MAX_FUTURE_BUFFER:
            self._future.append(msg)
        return []

    def _dispatch(self, msg: Proposal | Vote) -> list[Action]:
        return self.on_proposal(msg) if isinstance(msg, Proposal) else self.on_vote(msg)

    def _valid(self, block: Block) -> bool:
        return (
            block.height == self.height
            and block.prev_hash == self.prev_hash
            and self.vset.is_validator(block.proposer)
            and len(block.payload) <= MAX_PAYLOAD
        )

    def _tally(self, round_: int, vote_type: str) -> dict[bytes | None, int]:
        counts: dict[bytes | None, int] = {}
        for vote in self.votes.get((round_, vote_type), {}).values():
            counts[vote.block_hash] = counts.get(vote.block_hash, 0) + 1
        return counts

    def _count(self, round_: int, vote_type: str) -> int:
        return len(self.votes.get((round_, vote_type), {}))

    def _polka(self, round_: int, block_hash: bytes | None) -> bool:
        return self._tally(round_, PREVOTE).get(block_hash, 0) >= self.vset.quorum

    def _polka_votes(self, round_: int) -> tuple[Vote, ...]:
        """The prevotes of `round_` for our valid block: the proof that justifies proposing
        (or having locked on) it, in validator order."""
        if self.valid_block is None:
            return ()
        digest = self.valid_block.hash
        box = self.votes.get((round_, PREVOTE), {})
        return tuple(
            sorted(
                (v for v in box.values() if v.block_hash == digest),
                key=lambda v: self.vset.index[v.validator],
            )
        )

    def _first(self, rule: str, round_: int) -> bool:
        if (rule, round_) in self._once:
            return False
        self._once.add((rule, round_))
        return True

    def _start_round(self, round_: int) -> list[Action]:
        self.round, self.step = round_, PROPOSE
        if not self.voting:
            return []
        out: list[Action] = []
        if self.vset.proposer(self.height, round_) == self.my_id:
            assert self.signer is not None and self.my_id is not None
            if self.valid_block is not None:
                block, vr = self.valid_block, self.valid_round
            else:
                block = Block(
                    self.height,
                    self.prev_hash,
                    self.my_id,
                    self.now_ms(),
                    self.payload(self.height),
                )
                vr = -1
            if self.can_sign(self.height, round_, "proposal", block.hash):
                p = Proposal.make(self.vset, self.signer, self.my_id, round_, block, vr)
                self.proposals[round_] = p
                self.blocks.setdefault(block.hash, block)
                if vr >= 0:  # the polka that justifies a re-proposal goes with it
                    out += [Broadcast(v) for v in self._polka_votes(vr)]
                out.append(Broadcast(p))
        out.append(ScheduleTimeout(PROPOSE, self.height, round_, self.timeouts.of(PROPOSE, round_)))
        out.append(ScheduleTimeout(ROUND, self.height, round_, self.timeouts.round(round_)))
        return out

    def _vote(self, vote_type: str, block_hash: bytes | None) -> list[Action]:
        if not self.voting:
            return []
        assert self.signer is not None and self.my_id is not None
        if not self.can_sign(self.height, self.round, vote_type, block_hash):
            return []  # we signed something else for this step before a restart: stay silent
        v = Vote.make(
            self.vset, self.signer, self.my_id, vote_type, self.height, self.round, block_hash
        )
        self.votes.setdefault((self.round, vote_type), {})[self.my_id] = v
        return [Broadcast(v)]

    def _prevote(self, block_hash: bytes | None) -> list[Action]:
        self.step = STEP_PREVOTE
        return self._vote(PREVOTE, block_hash)

    def _precommit(self, block_hash: bytes | None) -> list[Action]:
        self.step = STEP_PRECOMMIT
        return self._vote(PRECOMMIT, block_hash)

    def _run(self) -> list[Action]:
        """Apply every enabled rule until none fires. Each firing changes the step, the round,
        a once-flag or decides, so this terminates."""
        out: list[Action] = []
        rules = [self._rule_decide, self._rule_skip_round]
        if self.voting:
            rules += [
                self._rule_proposal,
                self._rule_polka_block,
                self._rule_polka_nil,
                self._rule_timeouts,
            ]
        while not self.decided and any(rule(out) for rule in rules):
            pass
        return out

    def _rule_decide(self, out: list[Action]) -> bool:
        for (round_, vote_type), box in self.votes.items():
            if vote_type != PRECOMMIT or len(box) < self.vset.quorum:
                continue
            for block_hash, count in self._tally(round_, PRECOMMIT).items():
                if block_hash is None or count < self.vset.quorum:
                    continue
                block = self.blocks.get(block_hash)
                if block is None or not self._valid(block):
                    continue  # the block body arrives with a proposal or a commit message
                votes = tuple(
                    sorted(
                        (v for v in box.values() if v.block_hash == block_hash),
                        key=lambda v: self.vset.index[v.validator],
                    )
                )
                self.decided = True
                out.append(Decide(block, CommitCert(self.height, round_, block_hash, votes)))
                return True
        return False

    def _rule_skip_round(self, out: list[Action]) -> bool:
        later: dict[int, set[str]] = {}
        for (round_, _), box in self.votes.items():
            if round_ > self.round:
                later.setdefault(round_, set()).update(box)
        for round_, p in self.proposals.items():
            if round_ > self.round:
                later.setdefault(round_, set()).add(p.proposer)
        for round_ in sorted(later, reverse=True):
            if self.vset.one_third_plus(len(later[round_])):
                out += self._start_round(round_)
                return True
        return False

    def _rule_proposal(self, out: list[Action]) -> bool:
        p = self.proposals.get(self.round)
        if p is None or self.step != PROPOSE:
            return False
        block, digest = p.block, p.block.hash
        if p.valid_round == -1:
            ok = self._valid(block) and (
                self.locked_round == -1
                or (self.locked_block is not None and self.locked_block.hash == digest)
            )
        elif self._polka(p.valid_round, digest):
            ok = self._valid(block) and (
                self.locked_round <= p.valid_round
                or (self.locked_block is not None and self.locked_block.hash == digest)
            )
        else:
            return False  # wait for the polka the proposer claims, or the propose timeout
        out += self._prevote(digest if ok else None)
        return True

    def _rule_polka_block(self, out: list[Action]) -> bool:
        p = self.proposals.get(self.round)
        if p is None or self.step == PROPOSE or not self._polka(self.round, p.block.hash):
            return False
        if not self._valid(p.block) or not self._first("polka_block", self.round):
            return False
        self.valid_round, self.valid_block = self.round, p.block
        if self.step == STEP_PREVOTE:
            self.locked_round, self.locked_block = self.round, p.block
            self.save_lock(self.height, self.round, p.block, self._polka_votes(self.round))
            out += self._precommit(p.block.hash)
        return True

    def _rule_polka_nil(self, out: list[Action]) -> bool:
        if self.step != STEP_PREVOTE or not self._polka(self.round, None):
            return False
        out += self._precommit(None)
        return True

    def _rule_timeouts(self, out: list[Action]) -> bool:
        q = self.vset.quorum
        if (
            self.step == STEP_PREVOTE
            and self._count(self.round, PREVOTE) >= q
            and self._first("prevote_any", self.round)
        ):
            d = self.timeouts.of(STEP_PREVOTE, self.round)
            out.append(ScheduleTimeout(STEP_PREVOTE, self.height, self.round, d))
            return True
        if self._count(self.round, PRECOMMIT) >= q and self._first("precommit_any", self.round):
            d = self.timeouts.of(STEP_PRECOMMIT, self.round)
            out.append(ScheduleTimeout(STEP_PRECOMMIT, self.height, self.round, d))
            return True
        return False
