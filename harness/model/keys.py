"""Deterministic node identities: one Ed25519 key per (testnet name, node name).

Why deterministic: render must be byte-identical for the same input (golden tests, diffable
output), and peer ids must be known before any container starts (the chain's validator ids,
status checks that name peers). The key is written in libp2p's protobuf encoding
(`PrivateKey.serialize()`), which the node reads back with
`libp2p.crypto.serialization.deserialize_private_key` (docs/contracts.md section 1).

These keys are test identities, derived from public names: never use them outside a testnet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

KEY_DERIVATION = b"sentrynet-node-key-v1"


@dataclass(frozen=True)
class NodeKey:
    private_key: bytes  # libp2p protobuf encoding (what the node's key_file holds)
    peer_id: str  # base58, 12D3KooW...


def _seed(testnet: str, node: str, attempt: int) -> bytes:
    material = b"\0".join([KEY_DERIVATION, testnet.encode(), node.encode(), str(attempt).encode()])
    return hashlib.sha256(material).digest()


def node_key(testnet: str, node: str) -> NodeKey:
    """The node's key; the same inputs always give the same key and peer id."""
    for attempt in range(16):
        try:
            key = Ed25519PrivateKey.new(_seed(testnet, node, attempt))
        except ValueError:  # seed maps to an invalid point: practically never; take the next
            continue
        peer_id = ID.from_pubkey(key.get_public_key()).to_base58()
        return NodeKey(private_key=key.serialize(), peer_id=peer_id)
    raise RuntimeError(f"no valid Ed25519 key for {testnet}/{node}")  # pragma: no cover
