"""How busy this machine is, for reading a run's timings and timeouts.

Why: every node of a testnet shares the host's cores, and a check's deadline or a node's
10 s timeout means something else on a machine whose run queue is forty deep per core. A
64-node testnet on two cores (load average 80) answered every /status and then held no
reservation and no block for minutes; the same code at 32 nodes (load 25-28) was slow but
whole. So `up` says when the machine is saturated, and a scenario report carries the load
beside its figures, so a user can tell the machine's limits from the protocol's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Runnable tasks per core (1-minute load average) above which `up` warns: 32 nodes on two
# cores ran at 12-14 per core and got ready, 64 nodes at 35-40 per core did not.
SATURATED_PER_CORE = 20.0


@dataclass(frozen=True)
class MachineLoad:
    """The load averages (1, 5, 15 minutes) and the number of cores, read together."""

    cores: int
    load1: float
    load5: float
    load15: float

    @property
    def per_core(self) -> float:
        return self.load1 / max(1, self.cores)

    @property
    def saturated(self) -> bool:
        return self.per_core > SATURATED_PER_CORE

    def describe(self) -> str:
        return f"load average {self.load1:g} on {self.cores} core(s), {self.per_core:.1f} per core"

    def warning(self) -> str | None:
        """What `up` says when the machine is saturated, else None."""
        if not self.saturated:
            return None
        return (
            f"warning: this machine is saturated ({self.describe()}; more than "
            f"{SATURATED_PER_CORE:g} is saturated): nodes answer late, and a check's deadline or a "
            "node's timeout that runs out here says as much about this machine as about the "
            "protocol: fewer nodes, more cores, or longer check deadlines "
            "(SENTRYNET_DEADLINE_SCALE=2)"
        )

    def to_json(self) -> dict[str, object]:
        return {"cores": self.cores, "loadavg": [self.load1, self.load5, self.load15]}


def parse_loadavg(text: str, cores: int) -> MachineLoad:
    """`/proc/loadavg` text (`0.52 0.58 0.59 1/467 12345`) -> MachineLoad."""
    one, five, fifteen = (float(x) for x in text.split()[:3])
    return MachineLoad(cores, one, five, fifteen)


def machine_load(proc: Path = Path("/proc/loadavg")) -> MachineLoad | None:
    """This machine's load now; None where there is no /proc/loadavg (not Linux)."""
    try:
        return parse_loadavg(proc.read_text(), os.cpu_count() or 1)
    except (OSError, ValueError):
        return None
