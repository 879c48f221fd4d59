"""Circuit relay v2 hop server (stub, being implemented)."""

from __future__ import annotations

from typing import Any

from node.runtime import NodeRuntime


class RelayServer:
    name = "relay_server"

    async def run(self, rt: NodeRuntime) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {}

    def circuits_json(self) -> list[dict[str, Any]]:
        return []
