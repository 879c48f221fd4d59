"""What every measurement gets: options, progress output and a scratch directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.progress import Progress


@dataclass
class Ctx:
    progress: Progress
    work_dir: Path  # scratch: generated topologies, rendered testnets (removed on down)
    quick: bool = False
    repeat: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    # what a measurement has so far, kept when it is interrupted (SIGTERM, Ctrl-C)
    partial: dict[str, Any] = field(default_factory=dict)
    # the last line a bench wait printed on the current testnet (bench/live.wait)
    last_seen: str = ""

    def say(self, msg: str) -> None:
        self.progress.say(msg)
