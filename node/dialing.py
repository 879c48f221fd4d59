"""Dialing: direct first, circuits when no direct path answers (stub, being implemented)."""

from __future__ import annotations

from libp2p.abc import IHost
from libp2p.peer.id import ID

from node.runtime import ConnectionTracker, NodeRuntime


class NodeDialer:
    def __init__(self, host: IHost, tracker: ConnectionTracker) -> None:
        self.host = host
        self.tracker = tracker
        self.rt: NodeRuntime | None = None

    def bind(self, rt: NodeRuntime) -> None:
        self.rt = rt

    async def connect(self, peer_id: ID) -> None:
        raise NotImplementedError
