"""Stream opens that are about one connection do not dial: pubsub's peer registration
and identify.

Upstream (py-libp2p 0.8.1) `Pubsub._handle_new_peer_with_retry` retries `new_stream`
"while the peer stays connected": it checks that before its back-off sleep, sleeps, and
opens the stream with `host.new_stream`, which dials a peer that is no longer connected.
`BasicHost._identify_peer` likewise looks at the peer's connections, awaits, then calls
`new_stream`. So a peer the node had just closed (over its peer budget, or a duplicate)
was dialed straight back by pubsub's retry, closed again, and dialed again every 0.5 s:
tests/node/test_discovery.py::test_max_connections_is_respected, a node with a budget of
2 redialed a peer it had closed for the budget four times in two seconds and never got
down to its budget.

A registration or an identify belongs to the connection that started it; when that
connection is gone there is nothing left to do, and the next connection starts its own.
Under `no_dialing(who)` the node's `Swarm.dial_peer` (node/overrides/dial_peer.py)
answers a peer without a connection with a SwarmException instead of dialing, the
exception upstream's retry loop already handles: it sees the peer gone and stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from libp2p.peer.id import ID

_REFUSED_BY: ContextVar[str | None] = ContextVar("sentrynet_no_dialing", default=None)


@contextmanager
def no_dialing(who: str) -> Iterator[None]:
    """Within this block (this task), opening a stream to an unconnected peer fails
    instead of dialing it; `who` names the caller in the error."""
    token = _REFUSED_BY.set(who)
    try:
        yield
    finally:
        _REFUSED_BY.reset(token)


def dialing_refused_by() -> str | None:
    """Who refused dialing in the current task, if anyone (see no_dialing)."""
    return _REFUSED_BY.get()


def install_pubsub_no_redial(pubsub: Any) -> None:
    """Pubsub's peer registration (`_handle_new_peer`, retried by upstream) never dials."""
    if getattr(pubsub, "_sentrynet_no_redial", False):
        return
    register = pubsub._handle_new_peer

    async def handle_new_peer(peer_id: ID) -> None:
        with no_dialing("pubsub peer registration"):
            await register(peer_id)

    pubsub._handle_new_peer = handle_new_peer
    pubsub._sentrynet_no_redial = True
