"""Relay client: dynamic relay discovery and reservations (stub, being implemented)."""

from __future__ import annotations

from typing import Any

import multiaddr

from node.runtime import NodeRuntime


class RelayClient:
    name = "relay_client"

    async def run(self, rt: NodeRuntime) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {}

    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        return []

    def reservations_json(self) -> list[dict[str, Any]]:
        return []

    def candidates_json(self) -> list[dict[str, Any]]:
        return []
