"""Log and event lines leave the node on a thread of their own, never on trio's.

A container's stdout and stderr are pipes that Docker drains. At 128 nodes it did not
keep up: a sentry's trio thread spent a third of its samples (py-spy) inside
`StreamHandler.emit`, blocked on a full pipe, so it accepted connections late (the kernel's
accept queue held 5-11 of them), answered pings late, and the peers that closed the
connections for it logged more. Here a write only queues the line; a daemon thread does
the blocking write. When the queue is full the line is dropped and counted, and the count
is written before the next line that gets through: a node never waits for its log reader.
"""

from __future__ import annotations

import atexit
import queue
import threading
from typing import TextIO

QUEUE_LINES = 20000
DRAIN_AT_EXIT_S = 2.0


class OffLoopWriter:
    """A file-like `write`/`flush` that never blocks; `stream` gets the text in order."""

    def __init__(self, stream: TextIO, max_lines: int = QUEUE_LINES) -> None:
        self.stream = stream
        self.dropped_total = 0  # counted by write() alone
        self._reported = 0  # of those, written out as a notice (by the thread alone)
        self._queue: queue.Queue[str | None] = queue.Queue(max_lines)
        self._thread = threading.Thread(target=self._drain, name="output", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def write(self, text: str) -> int:
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped_total += 1
        return len(text)

    def idle(self) -> bool:
        """Nothing queued (the last line may still be being written)."""
        return self._queue.empty()

    def flush(self) -> None:
        """Nothing to wait for: the thread flushes after every line it writes."""

    def close(self, timeout_s: float = DRAIN_AT_EXIT_S) -> None:
        """Write what is queued (bounded: a reader that is gone must not hold the exit)."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _drain(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            try:
                lost = self.dropped_total - self._reported
                if lost:
                    self._reported += lost
                    self.stream.write(f"[{lost} output line(s) dropped: the reader was slow]\n")
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                continue  # the reader is gone (closed pipe): keep draining, never block
