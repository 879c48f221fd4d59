"""Yamux window updates with go-yamux's hysteresis: one update per half window read.

Upstream (py-libp2p 0.8.1, `YamuxStream._auto_tune_and_send_window_update`, called after
every read) sends a WINDOW_UPDATE frame for the bytes of each read whenever the window is
not yet half used: its "partial slack" and "release on read" branches, the latter on by
default (PY_YAMUX_RELEASE_ON_READ). Its docstring says it mirrors go-yamux, but go-yamux
(`sendWindowUpdate`) sends nothing until the window can grow by at least half its size.
Gossip, pings and sync status are small messages read one at a time, so upstream answered
nearly every message with a frame of its own (a Noise encryption and a socket write each):
about a tenth of an idle node's CPU (bench idle_profile). The sender never waits on this:
it still has at least half a window when we hold the update back.

Kept from upstream: the same window arithmetic (`_grow_to_delta`, `_grow_threshold`) and
window auto-tuning (`_apply_autotune_epoch`), so throughput on long transfers is unchanged.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

_installed = False


async def window_update_with_hysteresis(self: Any, *, bytes_read: int = 0) -> None:
    # Nothing to send is by far the common case (a small message read): decided without
    # the window lock, as nothing here awaits (trio runs one task at a time), so no other
    # task can change the window between these reads. The lock's acquire and release were
    # about a tenth of this function's cost, run after every read.
    buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
    delta = self.target_recv_window - (self.recv_window + buffered)
    if delta <= 0 or delta < self._grow_threshold():
        return
    total = 0
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta > 0 and delta >= self._grow_threshold():
            total = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
    if total > 0:
        await self.send_window_update(total, skip_lock=True)


def install_yamux_window_hysteresis() -> None:
    """Process-wide (a class attribute), idempotent."""
    global _installed
    if _installed:
        return
    YamuxStream._auto_tune_and_send_window_update = window_update_with_hysteresis  # type: ignore[method-assign]
    _installed = True
