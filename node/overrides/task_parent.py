"""Find the parent of a new service task by a lookup, not by walking every task.

Upstream (py-libp2p 0.8.1, `libp2p.tools.anyio_service.TrioManager.run_task`) gives each
new task a parent: `_find_parent_task` walks the manager's whole task tree
(`FunctionTask.iterate_tasks`, a recursive generator) until it meets the task whose trio
task is the caller. Pubsub spawns a task for every message it receives
(`Pubsub.continuously_read_stream` -> `run_task(push_msg)`), and the tree holds a few
tasks per connected peer, so each received message cost a walk over O(peers) tasks: in a
node with 23 peers that walk was 9 % of its CPU (bench/idle_profile.py --followers 20).

Here each manager keeps a map from trio task to the FunctionTask it runs, filled when
`_run_and_manage_task` starts a task (the task runs in that same trio task) and emptied
when it returns; `_find_parent_task` reads the map. It returns what the walk returned:
the walk can only meet a task whose trio task is the caller while that task runs, and a
running task is in the map. A caller that is no task of this manager gets None (a root
task), as before.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

_INDEX = "_sentrynet_running_tasks"


def _running(manager: Any) -> dict[trio.lowlevel.Task, FunctionTask]:
    index: dict[trio.lowlevel.Task, FunctionTask] = manager.__dict__.setdefault(_INDEX, {})
    return index


def install_task_parent_index() -> None:
    """Patch TrioManager once (process-wide, like the other class-level overrides)."""
    if getattr(TrioManager, "_sentrynet_task_index", False):
        return
    upstream_run_and_manage = TrioManager._run_and_manage_task

    async def _run_and_manage_task(self: Any, task: Any) -> None:
        if not isinstance(task, FunctionTask):
            await upstream_run_and_manage(self, task)
            return
        me = trio.lowlevel.current_task()
        running = _running(self)
        running[me] = task
        try:
            await upstream_run_and_manage(self, task)
        finally:
            if running.get(me) is task:
                del running[me]

    def _find_parent_task(self: Any, trio_task: trio.lowlevel.Task) -> FunctionTask | None:
        return _running(self).get(trio_task)

    TrioManager._sentrynet_upstream_find_parent = TrioManager._find_parent_task  # type: ignore[attr-defined]
    TrioManager._run_and_manage_task = _run_and_manage_task  # type: ignore[method-assign]
    TrioManager._find_parent_task = _find_parent_task  # type: ignore[method-assign]
    TrioManager._sentrynet_task_index = True  # type: ignore[attr-defined]
