"""A gossip message the node has already seen is dropped where its RPC is read, before a
task is started for it.

Upstream (py-libp2p 0.8.1, `Pubsub.continuously_read_stream`) starts a service task running
`push_msg` for every message of every RPC it reads, and `push_msg` then drops one already
seen (its first check after the blacklists). In a gossip mesh most copies a node receives
are duplicates (a message comes from each mesh peer that got it first), and each service
task costs a task object, a uuid4 name (a getrandom system call), a parent lookup, a
nursery slot and two trips through trio's scheduler: a follower of an idle 8-node testnet
on loopback started about 36 tasks a second, 10 with this override (docs/bench.md).
go-libp2p and rust-libp2p look a message up in their seen cache before any per-message
work.

The reading loop asks `_is_subscribed_to_msg(msg)` right before it starts the task (the
method's only caller); this replaces it on the instance with "subscribed and not yet seen".
A copy that arrives while the first is still queued passes, as upstream, and `push_msg`'s
own check still drops it.
"""

from __future__ import annotations

from typing import Any


def install_seen_before_task(pubsub: Any) -> None:
    """Replace the instance's `_is_subscribed_to_msg` (see the module docstring)."""
    if getattr(pubsub, "_sentrynet_seen_before_task", False):
        return
    subscribed = pubsub._is_subscribed_to_msg
    seen = pubsub._is_msg_seen

    def subscribed_and_unseen(msg: Any) -> bool:
        return bool(subscribed(msg)) and not seen(msg)

    pubsub._is_subscribed_to_msg = subscribed_and_unseen
    pubsub._sentrynet_seen_before_task = True
