"""testnet_sentry_warm_s: wall time of `make testnet-sentry` with images already built.

First `make images` (untimed: if node/ changed since the last build, this is the rebuild
a warm run must not include; its time is recorded separately), then `make testnet-sentry`
timed end to end with the bench clock. The scenario's own report.json (the newest under
results/) says where the time went: `up_seconds` and every check's `seconds`.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import stats
from bench.context import Ctx
from harness.infra.render import REPO_ROOT

TAIL = 25


RESULTS_LINE = re.compile(r"^(?:\[[ 0-9.]+s\] )?results: (\S+)", re.M)


def _make(target: str, timeout_s: float) -> tuple[int, float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    text = proc.stdout + proc.stderr
    return proc.returncode, round(time.monotonic() - t0, 2), text


def _report_of(output: str) -> dict[str, Any] | None:
    """The report.json of this run: the directory the scenario printed (other engineers'
    runs write beside it in results/, so never "the newest one")."""
    found = RESULTS_LINE.findall(output)
    if not found:
        return None
    path = Path(found[-1])
    path = path if path.is_absolute() else REPO_ROOT / path
    try:
        doc = json.loads((path / "report.json").read_text())
    except (OSError, ValueError):
        return None
    doc["_path"] = str(path)
    return dict(doc)


def _where(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {}
    checks = report.get("checks") or []
    return {
        "report": report.get("_path"),
        "passed": report.get("passed"),
        "up_seconds": report.get("up_seconds"),
        "duration_s": report.get("duration_s"),
        "checks": [
            {k: c.get(k) for k in ("name", "passed", "seconds", "expect") if k in c}
            for c in checks
            if isinstance(c, dict)
        ],
    }


def measure(ctx: Ctx) -> dict[str, Any]:
    rc, images_s, images_out = _make("images", 1800)
    out: dict[str, Any] = {
        "clock": "bench monotonic (wall time of the make command)",
        "images": {"rc": rc, "seconds": images_s, "tail": _tail(images_out)},
        "runs": [],
    }
    for i in range(ctx.repeat):
        rc, secs, text = _make("testnet-sentry", 1800)
        run = {"run": i, "rc": rc, "seconds": secs, "tail": _tail(text)}
        run.update(_where(_report_of(text)))
        out["runs"].append(run)
        ctx.say(f"make testnet-sentry: rc={rc} in {secs:.1f} s")
    ok = [r["seconds"] for r in out["runs"] if r["rc"] == 0]
    out["testnet_sentry_warm_s"] = stats.summary(ok, 2)
    out["all_runs_s"] = stats.summary([r["seconds"] for r in out["runs"]], 2)
    return out


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL:])
