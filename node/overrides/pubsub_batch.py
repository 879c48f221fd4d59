"""Gossipsub's sending loop writes every RPC queued for a peer in one stream write.

Upstream (py-libp2p 0.8.1, `Pubsub.handle_sending_messages`) pops one RPC from the
peer's outbound queue and writes it, then the next: each RPC is its own Yamux frame, its
own Noise message (an encryption, a MAC) and its own send system call. A node's RPCs
come in bursts (a vote forwarded to the whole mesh, the heartbeat's GRAFT/PRUNE/IHAVE
beside a message, the round re-send of a validator), and what queues while one write is
under way waits for the next. Here the loop takes everything already queued (up to one
Noise message of bytes) and writes the length-prefixed RPCs back to back in one write:
the bytes on the wire are exactly upstream's, the peer reads the same RPCs in the same
order, and a burst costs one frame, one encryption and one system call.

Each RPC is serialized by the stream's `RecordOncePerStream` (node/overrides/
sender_record.py): our signed peer record goes to a peer once per change, not in every RPC.

Installed per Pubsub instance (`install_pubsub_batch`), before the first peer connects.
"""

from __future__ import annotations

from typing import Any

from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint

from node.overrides.sender_record import RecordOncePerStream

# Below one Noise transport message (65535 bytes less its 16-byte tag): one encryption.
MAX_BATCH_BYTES = 60_000


def _frame(rpc: Any, records: RecordOncePerStream) -> bytes:
    body = records.serialize(rpc)
    return encode_uvarint(len(body)) + body


def install_pubsub_batch(pubsub: Any, stats: dict[str, int] | None = None) -> None:
    """Replace the per-peer sending loop of this Pubsub. `stats` (optional) counts
    `writes`, `rpcs` and `records_left_out`, for tests and measurements."""
    counts = stats if stats is not None else {}
    counts.setdefault("writes", 0)
    counts.setdefault("rpcs", 0)
    counts.setdefault("records_left_out", 0)

    async def handle_sending_messages(peer_id: ID, stream: Any, queue: Any) -> None:
        records = RecordOncePerStream()
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:
                    return  # the queue was closed: the peer is gone
                frames = [_frame(rpc, records)]
                size = len(frames[0])
                while size < MAX_BATCH_BYTES and len(queue):
                    more = await queue.pop()  # returns at once: something is queued
                    if more is None:
                        break
                    frames.append(_frame(more, records))
                    size += len(frames[-1])
                try:
                    await stream.write(b"".join(frames))
                except (StreamClosed, StreamReset):
                    pubsub._handle_dead_peer(peer_id)
                    return
                counts["writes"] += 1
                counts["rpcs"] += len(frames)
                counts["records_left_out"] += records.left_out
                records.left_out = 0
        except Exception:
            pubsub._handle_dead_peer(peer_id)

    pubsub.handle_sending_messages = handle_sending_messages
