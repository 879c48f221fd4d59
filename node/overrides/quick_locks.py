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

`Quick` (a wrapped trio Lock or Semaphore) keeps the same mutual exclusion, the same owner
rules (the wrapped primitive does the bookkeeping) and the cancellation point
(`checkpoint_if_cancelled`), and takes a free lock at once; a held one is waited for exactly
as upstream waits. The paths they guard still yield where they do I/O (trio's socket send
and receive are schedule points), so no task runs unbounded. Installed by wrapping the four
classes' `__init__`, process-wide and idempotent.
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


class Quick:
    """A trio Lock or Semaphore whose free acquire is a cancellation point but not a
    schedule point; the wrapped primitive keeps the exclusion and the owner rules."""

    __slots__ = ("_inner",)

    def __init__(self, inner: trio.Lock | trio.Semaphore) -> None:
        self._inner = inner

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._inner.acquire_nowait()
        except trio.WouldBlock:
            await self._inner.acquire()

    def acquire_nowait(self) -> None:
        self._inner.acquire_nowait()

    def release(self) -> None:
        self._inner.release()

    def locked(self) -> bool:
        inner = self._inner
        return inner.locked() if isinstance(inner, trio.Lock) else inner.value == 0

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def quick_lock() -> Quick:
    return Quick(trio.Lock())


def quick_semaphore(value: int) -> Quick:
    return Quick(trio.Semaphore(value))


def _quick_rw_lock(rw: Any) -> None:
    rw._readers_lock = quick_lock()
    rw._writer_lock = quick_semaphore(1)


def _after_init(cls: type, swap: Callable[[Any], None]) -> None:
    upstream_init = cls.__init__  # type: ignore[misc]

    @functools.wraps(upstream_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        upstream_init(self, *args, **kwargs)
        swap(self)

    cls.__init__ = init  # type: ignore[misc]


def _net_stream(s: Any) -> None:
    s._state_lock = quick_lock()


def _yamux_stream(s: Any) -> None:
    s.window_lock = quick_lock()
    s.close_lock = quick_lock()
    _quick_rw_lock(s.rw_lock)


def _yamux(m: Any) -> None:
    m.streams_lock = quick_lock()
    m._write_lock = quick_lock()


def _tcp_stream(t: Any) -> None:
    t.read_lock = quick_lock()
    t.write_lock = quick_lock()


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
