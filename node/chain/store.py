"""The block store: blocks with their commit certificates in sqlite3, surviving restarts.

Also keeps what a validator has signed (height, round, type -> block) so that a restarted
validator cannot sign a conflicting vote for a step it already voted in, and its lock.
sqlite is in the standard library and its writes are atomic; a block is committed together
with its certificate or not at all.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.chain import codec
from node.chain.block import Block, CommitCert, Vote

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    block BLOB NOT NULL,
    cert BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS signed (
    height INTEGER NOT NULL, round INTEGER NOT NULL, type TEXT NOT NULL,
    block BLOB,
    PRIMARY KEY (height, round, type)
);
"""


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Lock:
    """A validator's lock for one height: the round, the block and the polka behind it."""

    round: int = -1
    block: Block | None = None
    polka: tuple[Vote, ...] = ()


class BlockStore:
    """Append-only chain of certified blocks. Height 0 is the genesis (hash = chain id)."""

    def __init__(self, path: str | Path, chain_id: bytes) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.chain_id = chain_id
        row = self.db.execute("SELECT value FROM meta WHERE key='chain_id'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('chain_id', ?)", (chain_id.hex(),))
        elif row[0] != chain_id.hex():
            raise StoreError(
                f"{self.path}: store belongs to another validator set (chain id {row[0][:16]}...,"
                f" config gives {chain_id.hex()[:16]}...); remove it or fix [chain] validators"
            )
        row = self.db.execute(
            "SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        self._height: int = row[0] if row else 0
        self._tip: bytes = bytes(row[1]) if row else chain_id

    def close(self) -> None:
        self.db.close()

    @property
    def height(self) -> int:
        return self._height

    @property
    def tip_hash(self) -> bytes:
        return self._tip

    def append(self, block: Block, cert: CommitCert) -> None:
        """Store the next block. The caller has verified it; this only enforces order."""
        if block.height != self._height + 1 or block.prev_hash != self._tip:
            raise StoreError(
                f"block {block.height} does not extend tip {self._height}/{self._tip.hex()[:12]}"
            )
        digest = block.hash
        self.db.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?)",
            (block.height, digest, block.encode(), codec.encode(cert.to_obj())),
        )
        self._height, self._tip = block.height, digest

    def get(self, height: int) -> tuple[Block, CommitCert] | None:
        row = self.db.execute("SELECT block, cert FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            return None
        return _load(row[0], row[1])

    def range_objs(self, start: int, end: int) -> list[dict[str, Any]]:
        """Blocks start..end inclusive as wire objects {block, commit}, for the sync server."""
        rows = self.db.execute(
            "SELECT block, cert FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height",
            (start, end),
        ).fetchall()
        return [{"block": codec.decode(b), "commit": codec.decode(c)} for b, c in rows]

    # -- validator signing state: never sign two different things for one step --

    def check_and_record_signature(
        self, height: int, round_: int, vote_type: str, block_hash: bytes | None
    ) -> bool:
        """True when signing (height, round, type, block) is safe: first time for this step,
        or the same block again. Persisted before the signature leaves the node."""
        row = self.db.execute(
            "SELECT block FROM signed WHERE height=? AND round=? AND type=?",
            (height, round_, vote_type),
        ).fetchone()
        if row is not None:
            prev = bytes(row[0]) if row[0] is not None else None
            return prev == block_hash
        self.db.execute(
            "INSERT INTO signed VALUES (?, ?, ?, ?)", (height, round_, vote_type, block_hash)
        )
        return True

    def prune_signatures(self, below_height: int) -> None:
        self.db.execute("DELETE FROM signed WHERE height < ?", (below_height,))

    def save_lock(
        self,
        height: int,
        locked_round: int,
        locked_block: Block | None,
        polka: tuple[Vote, ...] = (),
    ) -> None:
        """Keep the lock with the prevotes that made it: after a restart the validator must
        be able to show the others why it re-proposes this block."""
        value = codec.encode(
            {
                "height": height,
                "round": locked_round,
                "block": locked_block.to_obj() if locked_block else None,
                "polka": [v.to_obj() for v in polka],
            }
        ).decode()
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('lock', ?)", (value,))

    def load_lock(self, height: int) -> Lock:
        """The lock saved for `height`, or no lock (round -1)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='lock'").fetchone()
        if row is None:
            return Lock()
        obj = codec.decode_object(row[0].encode())
        if obj.get("height") != height or obj.get("block") is None:
            return Lock()
        polka = tuple(Vote.from_obj(v) for v in obj.get("polka") or [])
        return Lock(int(obj["round"]), Block.from_obj(obj["block"]), polka)


def _load(block_raw: bytes, cert_raw: bytes) -> tuple[Block, CommitCert]:
    return Block.from_obj(codec.decode(block_raw)), CommitCert.from_obj(codec.decode(cert_raw))
