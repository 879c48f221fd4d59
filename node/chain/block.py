"""Blocks, votes, proposals and commit certificates, with their signatures.

Every signature covers canonical bytes of (chain id, kind, height, round, block hash[,
valid round]) and is made with the validator's Ed25519 libp2p key. The verifying key comes
out of the peer id itself (Ed25519 peer ids embed the key as an identity multihash) and the
peer id must be one of the configured [chain] validator_ids: no key exchange, no trust in
whoever forwarded the message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.chain import codec
from node.chain.codec import CodecError

SIGN_DOMAIN = b"sentrynet-chain/v1:"
HASH_SIZE = 32
SIG_SIZE = 64
MAX_PAYLOAD = 64 * 1024
PREVOTE = "prevote"
PRECOMMIT = "precommit"
VOTE_TYPES = (PREVOTE, PRECOMMIT)


class InvalidMessage(ValueError):
    """A consensus object that fails a check; `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Signer(Protocol):
    def sign(self, data: bytes) -> bytes: ...


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


VERIFIED_KEPT = 4096  # signature triples remembered as verified (a few hundred bytes each)


class ValidatorSet:
    """The fixed, ordered validator set from [chain]; proposer and quorum arithmetic."""

    def __init__(self, validators: Sequence[tuple[str, str]]) -> None:
        if not validators:
            raise ValueError("chain.validators: at least one validator is required")
        self.names = [name for name, _ in validators]
        self.ids = [pid for _, pid in validators]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("chain.validator_ids: two validators share a peer id")
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.name_of = dict(zip(self.ids, self.names, strict=True))
        self._keys: dict[str, Any] = {}
        for pid in self.ids:
            self._keys[pid] = _key_from_peer_id(pid)
        self.chain_id = sha256(codec.encode({"validators": [list(v) for v in validators]}))
        # (signer, signed bytes, signature) triples that verified, oldest first: see verify
        self._verified: dict[tuple[str, bytes, bytes], None] = {}

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def quorum(self) -> int:
        """Smallest count that is more than 2/3 of n (equal voting power)."""
        return 2 * self.n // 3 + 1

    def one_third_plus(self, count: int) -> bool:
        """More than 1/3: at least one honest validator among them (round-skip rule)."""
        return 3 * count > self.n

    def proposer(self, height: int, round_: int) -> str:
        """validators[(h + r) mod n]: round 0 is validators[h mod n]; later rounds rotate so a
        missing proposer does not stall the height."""
        return self.ids[(height + round_) % self.n]

    def is_validator(self, peer_id: str) -> bool:
        return peer_id in self.index

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> None:
        """Raise InvalidMessage unless `signature` is `peer_id`'s over `data`.

        A triple that verified once is not checked again (the last VERIFIED_KEPT of them):
        Ed25519 verification is deterministic, and the same signature arrives several times
        per block. A vote is checked by the gossip topic validator and again by consensus,
        and its precommit once more in the block's commit certificate (gossiped by the
        proposer, or synced): about 26 checks a block for 9 signatures with four validators,
        and signature checks were about a tenth of an idle node's CPU (docs/bench.md). A
        triple that failed is never remembered, so it fails every time."""
        triple = (peer_id, data, signature)
        if triple in self._verified:
            return
        key = self._keys.get(peer_id)
        if key is None:
            raise InvalidMessage("not_validator", peer_id)
        try:
            ok = key.verify(data, signature)
        except Exception:
            ok = False
        if not ok:
            raise InvalidMessage("bad_signature", peer_id)
        self._verified[triple] = None
        if len(self._verified) > VERIFIED_KEPT:
            del self._verified[next(iter(self._verified))]


def _key_from_peer_id(peer_id: str) -> Any:
    from libp2p.peer.id import ID

    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception as exc:
        raise ValueError(f"chain.validator_ids: {peer_id!r} is not a peer id: {exc}") from None
    if key is None:
        raise ValueError(
            f"chain.validator_ids: {peer_id!r} does not embed its key (use Ed25519 keys)"
        )
    return key


def _sign_bytes(obj: dict[str, Any]) -> bytes:
    return SIGN_DOMAIN + codec.encode(obj)


@dataclass(frozen=True)
class Block:
    height: int
    prev_hash: bytes
    proposer: str
    time_ms: int
    payload: bytes = b""

    def to_obj(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "prev": self.prev_hash.hex(),
            "proposer": self.proposer,
            "time_ms": self.time_ms,
            "payload": self.payload.hex(),
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_obj(cls, obj: Any) -> Block:
        if not isinstance(obj, dict):
            raise CodecError("block must be an object")
        return cls(
            height=codec.get_int(obj, "height", lo=1),
            prev_hash=codec.get_hex(obj, "prev", size=HASH_SIZE),
            proposer=codec.get_str(obj, "proposer", max_len=128),
            time_ms=codec.get_int(obj, "time_ms"),
            payload=codec.get_hex(obj, "payload", max_len=MAX_PAYLOAD),
        )


def vote_sign_bytes(
    chain_id: bytes, vote_type: str, height: int, round_: int, block_hash: bytes | None
) -> bytes:
    return _sign_bytes(
        {
            "chain": chain_id.hex(),
            "type": vote_type,
            "height": height,
            "round": round_,
            "block": block_hash.hex() if block_hash is not None else None,
        }
    )


@dataclass(frozen=True)
class Vote:
    type: str
    height: int
    round: int
    block_hash: bytes | None  # None is a nil vote
    validator: str
    signature: bytes = b""

    @classmethod
    def make(
        cls,
        vset: ValidatorSet,
        signer: Signer,
        my_id: str,
        vote_type: str,
        height: int,
        round_: int,
        block_hash: bytes | None,
    ) -> Vote:
        sig = signer.sign(vote_sign_bytes(vset.chain_id, vote_type, height, round_, block_hash))
        return cls(vote_type, height, round_, block_hash, my_id, sig)

    def verify(self, vset: ValidatorSet) -> None:
        if not vset.is_validator(self.validator):
            raise InvalidMessage("not_validator", self.validator)
        data = vote_sign_bytes(vset.chain_id, self.type, self.height, self.round, self.block_hash)
        vset.verify(self.validator, data, self.signature)

    def to_obj(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "height": self.height,
            "round": self.round,
            "block": self.block_hash.hex() if self.block_hash is not None else None,
            "validator": self.validator,
            "sig": self.signature.hex(),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Vote:
        if not isinstance(obj, dict):
            raise CodecError("vote must be an object")
        vtype = obj.get("type")
        if vtype not in VOTE_TYPES:
            raise CodecError(f"field 'type' must be one of {VOTE_TYPES}")
        block = None if obj.get("block") is None else codec.get_hex(obj, "block", size=HASH_SIZE)
        return cls(
            type=str(vtype),
            height=codec.get_int(obj, "height", lo=1),
            round=codec.get_int(obj, "round", hi=1 << 20),
            block_hash=block,
            validator=codec.get_str(obj, "validator", max_len=128),
            signature=codec.get_hex(obj, "sig", size=SIG_SIZE),
        )


def proposal_sign_bytes(
    chain_id: bytes, height: int, round_: int, block_hash: bytes, valid_round: int
) -> bytes:
    return _sign_bytes(
        {
            "chain": chain_id.hex(),
            "type": "proposal",
            "height": height,
            "round": round_,
            "block": block_hash.hex(),
            "valid_round": valid_round,
        }
    )


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    block: Block
    valid_round: int  # -1, or the round in which a polka for `block` was seen
    proposer: str
    signature: bytes = b""

    @classmethod
    def make(
        cls,
        vset: ValidatorSet,
        signer: Signer,
        my_id: str,
        round_: int,
        block: Block,
        valid_round: int,
    ) -> Proposal:
        data = proposal_sign_bytes(vset.chain_id, block.height, round_, block.hash, valid_round)
        return cls(block.height, round_, block, valid_round, my_id, signer.sign(data))

    def verify(self, vset: ValidatorSet) -> None:
        if self.block.height != self.height:
            raise InvalidMessage("malformed", "proposal height differs from block height")
        if not -1 <= self.valid_round < self.round:
            raise InvalidMessage("malformed", "valid_round out of range")
        if self.proposer != vset.proposer(self.height, self.round):
            raise InvalidMessage("wrong_proposer", self.proposer)
        data = proposal_sign_bytes(
            vset.chain_id, self.height, self.round, self.block.hash, self.valid_round
        )
        vset.verify(self.proposer, data, self.signature)

    def to_obj(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "block": self.block.to_obj(),
            "valid_round": self.valid_round,
            "proposer": self.proposer,
            "sig": self.signature.hex(),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Proposal:
        if not isinstance(obj, dict):
            raise CodecError("proposal must be an object")
        return cls(
            height=codec.get_int(obj, "height", lo=1),
            round=codec.get_int(obj, "round", hi=1 << 20),
            block=Block.from_obj(obj.get("block")),
            valid_round=codec.get_int(obj, "valid_round", lo=-1, hi=1 << 20),
            proposer=codec.get_str(obj, "proposer", max_len=128),
            signature=codec.get_hex(obj, "sig", size=SIG_SIZE),
        )


@dataclass(frozen=True)
class CommitCert:
    """More than 2/3 of the validators' precommits for one block at one (height, round)."""

    height: int
    round: int
    block_hash: bytes
    votes: tuple[Vote, ...] = field(default_factory=tuple)

    def verify(self, vset: ValidatorSet, block: Block) -> None:
        """Raise InvalidMessage unless this certifies `block`: a synced block is verified,
        not trusted."""
        if self.height != block.height or self.block_hash != block.hash:
            raise InvalidMessage("bad_commit", "certificate is for another block")
        seen: set[str] = set()
        for vote in self.votes:
            if (
                vote.type != PRECOMMIT
                or vote.height != self.height
                or vote.round != self.round
                or vote.block_hash != self.block_hash
            ):
                raise InvalidMessage("bad_commit", "vote does not match certificate")
            if vote.validator in seen:
                raise InvalidMessage("bad_commit", "duplicate validator")
            vote.verify(vset)
            seen.add(vote.validator)
        if len(seen) < vset.quorum:
            raise InvalidMessage("bad_commit", f"{len(seen)} precommits < quorum {vset.quorum}")

    def to_obj(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "block": self.block_hash.hex(),
            "votes": [v.to_obj() for v in self.votes],
        }

    @classmethod
    def from_obj(cls, obj: Any) -> CommitCert:
        if not isinstance(obj, dict):
            raise CodecError("commit must be an object")
        votes = obj.get("votes")
        if not isinstance(votes, list) or len(votes) > 1024:
            raise CodecError("field 'votes' must be a list (at most 1024)")
        return cls(
            height=codec.get_int(obj, "height", lo=1),
            round=codec.get_int(obj, "round", hi=1 << 20),
            block_hash=codec.get_hex(obj, "block", size=HASH_SIZE),
            votes=tuple(Vote.from_obj(v) for v in votes),
        )


def verify_chain_link(vset: ValidatorSet, prev_hash: bytes, block: Block, cert: CommitCert) -> None:
    """Checks that make `block` the next block after `prev_hash`."""
    if block.prev_hash != prev_hash:
        raise InvalidMessage("bad_block", f"height {block.height}: prev hash does not link")
    if not vset.is_validator(block.proposer):
        raise InvalidMessage("bad_block", f"height {block.height}: proposer not a validator")
    cert.verify(vset, block)
