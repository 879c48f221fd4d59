"""GuardedNursery: a background task that raises is logged and counted, never fatal."""

from __future__ import annotations

import pytest
import trio

from node.runtime import GuardedNursery


def test_a_crashing_background_task_does_not_end_the_nursery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks: list[int] = []

    async def crash() -> None:
        raise UnboundLocalError("cannot access local variable 'ok'")

    async def keeps_running() -> None:
        for i in range(3):
            ticks.append(i)
            await trio.sleep(0)

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            guarded = GuardedNursery(nursery)
            guarded.start_soon(crash)
            guarded.start_soon(keeps_running)
        return guarded.crashed

    assert trio.run(main) == 1  # a bare trio nursery would raise here
    assert ticks == [0, 1, 2]
    assert "background task" in caplog.text and "crash" in caplog.text


def test_cancellation_still_ends_guarded_tasks() -> None:
    async def main() -> bool:
        async with trio.open_nursery() as nursery:
            guarded = GuardedNursery(nursery)
            guarded.start_soon(trio.sleep_forever)
            nursery.cancel_scope.cancel()
        return True

    assert trio.run(main)
