"""A free lock on py-libp2p's write and read paths is taken without a trip through trio's
scheduler.

Upstream (py-libp2p 0.8.1) guards each stream's state (`NetStream._state_lock`), each Yamux
stream's window, close and read/write exclusion (`YamuxStream.window_lock`, `close_lock`,
`rw_lock`) and each connection's frame writes and stream table (`Yamux._write_lock`,
`streams_lock`) and each TCP socket's reads and writes (`TrioTCPStream.read_lock`,
`write_lock`) with `trio.Lock` / `trio.Semaphore`. trio makes every `acquire` a schedule
point even when nobody holds the lock: the task is put back in the run queue and the
scheduler runs a batch (an `epoll_wait` included) before it goes on. A 100-byte write on a
stream schedules the writing task 7 times upstream, 2 times with these locks
(tests/node/test_overrides.py); in a settled follower of 8 nodes trio's scheduler was a
third of the node's CPU (bench idle_profile --sample).

`QuickLock` / `QuickSemaphore` keep the same mutual exclusion, the same owner rules (the
wrapped trio lock does the bookkeeping) and the cancellation point (`checkpoint_if_cancelled`),
and take a free lock at once; a held one is waited for exactly as upstream waits. The paths
they guard still yield where they do I/O (trio's socket send and receive are schedule points),
so no task runs unbounded. Installed by wrapping the four classes' `__init__`, process-wide
and idempotent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Any

import trio
from libp2p.io import trio as trio_io
from libp2p.network.stream import net_stream
from libp2p.stream_muxer.yamux import yamux

_installed = False


class QuickLock:
    """trio.Lock whose uncontended acquire is a cancellation point but not a schedule point."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class QuickSemaphore:
    """trio.Semaphore with QuickLock's acquire."""

    __slots__ = ("_sem",)

    def __init__(self, value: int) -> None:
        self._sem = trio.Semaphore(value)

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._sem.acquire_nowait()
        except trio.WouldBlock:
            await self._sem.acquire()

    def acquire_nowait(self) -> None:
        self._sem.acquire_nowait()

    def release(self) -> None:
        self._sem.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _quick_rw_lock(rw: Any) -> None:
    rw._readers_lock = QuickLock()
    rw._writer_lock = QuickSemaphore(1)


def _after_init(cls: type, swap: Callable[[Any], None]) -> None:
    upstream_init = cls.__init__  # type: ignore[misc]

    @functools.wraps(upstream_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        upstream_init(self, *args, **kwargs)
        swap(self)

    cls.__init__ = init  # type: ignore[misc]


def _net_stream(s: Any) -> None:
    s._state_lock = QuickLock()


def _yamux_stream(s: Any) -> None:
    s.window_lock = QuickLock()
    s.close_lock = QuickLock()
    _quick_rw_lock(s.rw_lock)


def _yamux(m: Any) -> None:
    m.streams_lock = QuickLock()
    m._write_lock = QuickLock()


def _tcp_stream(t: Any) -> None:
    t.read_lock = QuickLock()
    t.write_lock = QuickLock()


def install_quick_locks() -> None:
    """Process-wide (class `__init__`s), idempotent; objects made before keep trio's locks."""
    global _installed
    if _installed:
        return
    _after_init(net_stream.NetStream, _net_stream)
    _after_init(yamux.YamuxStream, _yamux_stream)
    _after_init(yamux.Yamux, _yamux)
    _after_init(trio_io.TrioTCPStream, _tcp_stream)
    _installed = True
