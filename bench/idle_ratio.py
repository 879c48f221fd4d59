"""idle_ratio: today's node against the baseline's node code, on one machine in one run.

The idle figure in cores (bench/idle.py) moves with the machine: the same node code gave
0.031 to 0.063 cores per node on loopback on different days here. The performance goal was
set as "a node at a quarter of the baseline's CPU", so this measures exactly that: the
baseline run's commit (bench/baseline.json) exported and run on every node of a loopback
testnet (4 validators, 4 followers, 1 block/s), alternating with the working tree's node
(bench/idle_profile.py `--against`), and reports the ratio of the medians.
"""

from __future__ import annotations

import json
from typing import Any

from bench import idle_profile
from bench.context import Ctx
from harness.infra.render import REPO_ROOT

BASELINE = REPO_ROOT / "bench" / "baseline.json"
TARGET_RATIO = 0.25  # a quarter of the baseline's CPU per node
NODES, FOLLOWERS = 4, 4
WINDOW_S, QUICK_WINDOW_S = 40.0, 20.0
PAIRS, QUICK_PAIRS = 3, 1


def baseline_commit() -> str:
    """The commit the baseline figures were measured on (bench/baseline.json `commit`)."""
    try:
        commit = json.loads(BASELINE.read_text())["commit"]
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"{BASELINE}: no baseline commit ({exc})") from exc
    if not isinstance(commit, str) or not commit:
        raise RuntimeError(f"{BASELINE}: `commit` is not a revision: {commit!r}")
    return commit


def measure(ctx: Ctx) -> dict[str, Any]:
    rev = baseline_commit()
    ctx.say(f"idle_ratio: every node on {rev}'s node/, then on the working tree's, alternating")
    got = idle_profile.against(
        rev,
        QUICK_PAIRS if ctx.quick else PAIRS * ctx.repeat,
        NODES,
        FOLLOWERS,
        QUICK_WINDOW_S if ctx.quick else WINDOW_S,
        1.0,
        ctx.work_dir / "idle-ratio",
        ctx.say,
    )
    return {
        "clock": "host CPU time (utime + stime from /proc) per node process, loopback",
        "target_ratio": TARGET_RATIO,
        **got,
    }
