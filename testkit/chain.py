"""Helpers for tests and benches that run chain nodes as real processes.

Validator peer ids must be in every node's config before any node starts, so keys are
created here first (in the node's key_file, where the node will find them). Agreement is
checked on the nodes' own stores (sqlite, or the rust node's chain.jsonl), read-only, so
every height is compared, not only the tips the API shows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from libp2p.peer.id import ID

from node.chain.block import Block
from node.chain.codec import CodecError
from node.host import load_or_create_key

if TYPE_CHECKING:
    from testkit.procs import NodeProc, NodeProcs


def make_key(key_file: str | Path) -> str:
    """Create (or read) the node key and return its peer id."""
    kp = load_or_create_key(str(key_file))
    return str(ID.from_pubkey(kp.public_key))


def chain_section(
    validator_ids: Mapping[str, str], block_interval_s: float = 0.5, serve_sync: bool = True
) -> dict[str, Any]:
    return {
        "validators": list(validator_ids),
        "block_interval_s": block_interval_s,
        "serve_sync": serve_sync,
        "validator_ids": dict(validator_ids),
    }


def chain(status: Mapping[str, Any]) -> dict[str, Any]:
    doc = status.get("chain")
    if not isinstance(doc, dict):
        raise KeyError("no chain section in /status")
    return doc


def height(status: Mapping[str, Any]) -> int:
    return int(chain(status)["height"])


def rust_store_hashes(path: Path) -> dict[int, str]:
    """height -> block hash from the rust node's chain.jsonl (a chain_id line, then one
    {"block", "commit"} line per height), each hash computed here by the Python code:
    agreement then also proves both sides hash the same bytes. A torn last line is skipped."""
    out: dict[int, str] = {}
    for line in path.read_bytes().splitlines()[1:]:
        try:
            block = Block.from_obj(json.loads(line)["block"])
        except (ValueError, KeyError, CodecError):
            break
        out[block.height] = block.hash.hex()
    return out


def store_hashes(data_dir: str | Path) -> dict[int, str]:
    """height -> block hash from a node's store (read-only; safe while the node runs):
    the Python node's chain.sqlite or the rust node's chain.jsonl."""
    path = Path(data_dir) / "chain.sqlite"
    if not path.exists():
        rust = Path(data_dir) / "chain.jsonl"
        return rust_store_hashes(rust) if rust.exists() else {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT height, hash FROM blocks").fetchall()
    finally:
        db.close()
    return {int(h): bytes(d).hex() for h, d in rows}


def disagreements(stores: Mapping[str, Mapping[int, str]]) -> list[str]:
    """Heights at which two stores hold different blocks (empty: safety held)."""
    seen: dict[int, tuple[str, str]] = {}
    out = []
    for name, hashes in stores.items():
        for h, digest in hashes.items():
            prev = seen.setdefault(h, (name, digest))
            if prev[1] != digest:
                out.append(f"height {h}: {prev[0]} has {prev[1][:12]}, {name} has {digest[:12]}")
    return out


def check_agreement(data_dirs: Mapping[str, str | Path]) -> tuple[int, int]:
    """Assert no two nodes committed different blocks at one height; return (nodes, heights
    compared)."""
    stores = {name: store_hashes(d) for name, d in data_dirs.items()}
    bad = disagreements(stores)
    assert not bad, "SAFETY VIOLATION:\n" + "\n".join(bad)
    heights: Iterable[int] = (h for s in stores.values() for h in s)
    return len(stores), len(set(heights))


def validator_configs(
    procs: NodeProcs,
    names: list[str],
    block_interval_s: float,
    discovery: bool = True,
    p2p: dict[str, Any] | None = None,
) -> tuple[list[NodeProc], dict[str, str]]:
    """Write (not start) configs for validators `names` in a full mesh of persistent peers:
    addresses first, then keys (for the peer ids every config lists), then the configs.
    `discovery`: p2p.discovery (peer exchange) of every validator; `p2p`: more [p2p] keys."""
    first = [procs.write_config(name) for name in names]
    ids = {node.name: make_key(node.config["node"]["key_file"]) for node in first}
    addrs = {o.name: f"{o.p2p_addr}/p2p/{ids[o.name]}" for o in first}
    # write_config returns a fresh NodeProc (the one NodeProcs will stop): keep those
    nodes = [
        procs.write_config(
            name,
            node={"role": "validator"},
            p2p={
                "persistent_peers": [a for n, a in addrs.items() if n != name],
                "discovery": discovery,
                **(p2p or {}),
            },
            chain=chain_section(ids, block_interval_s),
        )
        for name in names
    ]
    return nodes, ids
