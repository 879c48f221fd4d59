"""Peer discovery and connection keeping (stub, being implemented)."""

from __future__ import annotations

from typing import Any

import trio

from node.runtime import NodeRuntime


class DiscoveryService:
    name = "discovery"

    async def run(self, rt: NodeRuntime) -> None:
        await trio.sleep_forever()

    def status(self) -> dict[str, Any]:
        return {}

    def known_json(self) -> list[dict[str, Any]]:
        return []
