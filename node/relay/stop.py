"""Circuit relay v2 stop handler (stub, being implemented)."""

from __future__ import annotations

from typing import Any

from node.runtime import NodeRuntime


class StopHandler:
    name = "stop"

    async def run(self, rt: NodeRuntime) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {}
