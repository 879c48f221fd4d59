"""Send gossipsub IDONTWANT only for messages worth it (1 KiB or more), as go-libp2p does.

Upstream (py-libp2p 0.8.1, `GossipSub.publish` -> `_emit_idontwant_for_message`) sends an
IDONTWANT control RPC to every gossipsub 1.2 mesh peer for every message it forwards,
whatever its size. IDONTWANT exists to stop a peer from sending a large message we already
have; for a 200-byte vote the control RPC (with upstream's signed peer record in it) is
larger than the message it saves, and every receiver decodes it. In the sentry testnet a
block interval carries about nine small consensus messages, so each node sent and received
an IDONTWANT per message per mesh peer: about a tenth of an idle node's CPU (bench
idle_profile). go-libp2p sends it only for messages of at least
`GossipSubIDontWantMessageThreshold` (1024 bytes); so do we. Larger messages keep the
upstream behaviour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

IDONTWANT_THRESHOLD = 1024  # bytes, go-libp2p's GossipSubIDontWantMessageThreshold


def install_idontwant_threshold(gossipsub: Any, threshold: int = IDONTWANT_THRESHOLD) -> None:
    """Replace the instance's `_emit_idontwant_for_message` with one that skips small
    messages. `publish` puts the message in the message cache just before it emits, so the
    size is read from there; a message not found there keeps upstream's behaviour."""
    if getattr(gossipsub, "_sentrynet_idontwant_threshold", None) is not None:
        return
    upstream: Callable[[bytes, Iterable[str]], Awaitable[None]] = (
        gossipsub._emit_idontwant_for_message
    )

    async def emit_for_large_messages(msg_id: bytes, topic_ids: Iterable[str]) -> None:
        msg = gossipsub.mcache.get(msg_id)
        if msg is not None and msg.ByteSize() < threshold:
            return
        await upstream(msg_id, topic_ids)

    gossipsub._emit_idontwant_for_message = emit_for_large_messages
    gossipsub._sentrynet_idontwant_threshold = threshold
