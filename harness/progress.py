"""Progress output for long steps: one line when a step starts, one when it ends, with elapsed time.

Users run this on laptops and in CI logs; both need to see what is slow without a TTY.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints `[  12.3s] step ... done (4.5s)` lines relative to when it was created."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():7.1f}s] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        self.say(f"{name} ...")
        try:
            yield
        except BaseException:
            self.say(f"{name} FAILED after {time.monotonic() - started:.1f}s")
            raise
        self.say(f"{name} done ({time.monotonic() - started:.1f}s)")
