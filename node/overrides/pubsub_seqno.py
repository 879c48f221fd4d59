"""Seed gossipsub's message sequence numbers with nanoseconds.

Upstream (py-libp2p 0.8.1, `Pubsub.__init__`: `self.counter = int(time.time())`) seeds
the seqno counter with whole seconds. Message ids are (from, seqno) and receivers drop ids
seen in the last 120 s, so a node that published more than one message per second and
restarts within two minutes reuses seqnos it already sent: every peer drops its messages
as duplicates. A validator restarted that way is silent; two of four and the chain halts
(seen in tests/node/test_chain.py's restart test). go-libp2p seeds with nanoseconds; so do
we. Must run before the first publish (node/overrides.apply runs it at start-up).
"""

from __future__ import annotations

import time
from typing import Any


def fix_pubsub_seqno(pubsub: Any) -> None:
    pubsub.counter = max(int(pubsub.counter), time.time_ns())
