"""`python -m bench.run` (make bench): run the measurements, write bench/results/.

    python -m bench.run                      # everything, once (about half an hour)
    python -m bench.run --quick              # smoke run: small sizes, short windows
    python -m bench.run --only holepunch,sync --repeat 3
    python -m bench.run --only scale --sizes 8,16
    python -m bench.run --only scale --sizes 8,16 --engines compose,swarm --repeat 3
    python -m bench.run --only scale,warm,sync --budget-s 1500   # in this order, time-boxed

Writes bench/results/<run-id>.json and .md, latest.json and latest.md, and PNG plots. A
measurement that fails is recorded with its error and the others still run; --only runs
them in the order given. The machine's
state (cores, load, memory, other testnets, busiest processes) is recorded before, after,
and around every scale point: on a shared machine the figures mean little without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    holepunch,
    idle,
    idle_ratio,
    live,
    relay_cost,
    report,
    reservation,
    scale,
    sync,
    warm,
)
from bench.context import Ctx
from harness.infra.render import REPO_ROOT
from harness.progress import Progress

RESULTS = REPO_ROOT / "bench" / "results"
MEASUREMENTS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "reservation": reservation.measure,
    "holepunch": holepunch.measure,
    "sync": sync.measure,
    "relay_cost": relay_cost.measure,
    "warm": warm.measure,
    "idle": idle.measure,
    "idle_ratio": idle_ratio.measure,  # loopback: today's node against the baseline's code
    "scale": scale.measure,  # last: the largest sizes may exhaust the machine
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--repeat", type=int, default=1, help="repeat each measurement N times")
    p.add_argument(
        "--only",
        default="",
        help=f"comma list of measurements (default: all): {', '.join(MEASUREMENTS)}",
    )
    p.add_argument("--sizes", default="", help="scale: node counts, e.g. 8,16,32,64")
    p.add_argument(
        "--engines",
        default="compose",
        help="scale: engines to run each point on, e.g. compose,swarm (swarm: the data networks "
        "as overlays of a single-node swarm; the summary gives swarm/compose ratios)",
    )
    p.add_argument(
        "--block-interval",
        type=float,
        default=1.0,
        help="scale: the chain's block interval in seconds (default 1, as the testnets); "
        "consensus traffic is most of a node's CPU at 1 block/s",
    )
    p.add_argument("--sync-blocks", type=int, default=0, help="sync: chain length to sync")
    p.add_argument("--pairs", type=int, default=0, help="holepunch: k nodes per side (k*k pairs)")
    p.add_argument("--relay-k", type=int, default=0, help="relay cost: k clients per side")
    p.add_argument(
        "--budget-s",
        type=float,
        default=0.0,
        help="start no further measurement after this many seconds (0: no limit); the "
        "skipped ones are listed under errors",
    )
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument("--run-id", default="", help="default: UTC timestamp")
    p.add_argument(
        "--render",
        metavar="JSON",
        default="",
        help="run nothing: re-derive the headline, targets, notes, markdown and plots of an "
        "existing results file (after a change to bench/report.py)",
    )
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def render(path: Path, out: Path) -> int:
    doc = json.loads(path.read_text())
    doc["headline"] = report.headline(doc["results"])
    doc["targets"] = report.targets(doc["results"])
    doc["notes"] = report.where_time_goes(doc["results"])
    paths = report.write(doc, out, str(doc["run_id"]))
    print(report.markdown(doc))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def new_run_doc(
    run_id: str,
    args: argparse.Namespace,
    names: list[str],
    argv: list[str] | None,
    started: dt.datetime,
    code_paths: tuple[str, ...],
) -> dict[str, Any]:
    """The result document every bench run starts from (commit, whether the measured code
    is dirty, arguments, machine state); `measure_all` fills results, errors and seconds."""
    return {
        "run_id": run_id,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", *code_paths)),
        "quick": args.quick,
        "repeat": args.repeat,
        "measurements": names,
        "argv": sys.argv[1:] if argv is None else argv,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": {"before": live.machine_state(probe=True)},
        "results": {},
        "errors": {},
        "seconds": {},
    }


def measure_all(
    doc: dict[str, Any],
    names: list[str],
    measurements: dict[str, Any],
    ctx: Ctx,
    budget_s: float,
    t0: float,
    label: str = "",
) -> None:
    """Run each named measurement into doc: one that fails keeps the others' numbers; the
    time budget skips what is left; an interrupt records what ran and re-raises."""
    for name in names:
        if budget_s and time.monotonic() - t0 > budget_s:
            doc["errors"][name] = f"skipped: time budget of {budget_s:g} s used up"
            continue
        ctx.progress.say(f"== {name}{label}")
        t = time.monotonic()
        try:
            doc["results"][name] = measurements[name](ctx)
        except KeyboardInterrupt:
            doc["errors"][name] = "interrupted (SIGTERM or Ctrl-C): partial results"
            raise
        except Exception as exc:  # keep the other measurements' numbers
            doc["errors"][name] = f"{type(exc).__name__}: {exc}"
            doc["results"].setdefault(name, {})["traceback"] = traceback.format_exc()
            ctx.progress.say(f"{name} failed: {exc}")
        doc["seconds"][name] = round(time.monotonic() - t, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(Path(args.render), Path(args.out))
    # SIGTERM (CI timeouts, kill) tears the current testnet down like Ctrl-C does
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MEASUREMENTS)
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        print(
            f"bench: --only: unknown measurement(s) {', '.join(unknown)}; "
            f"known: {', '.join(MEASUREMENTS)}",
            file=sys.stderr,
        )
        return 2
    started = dt.datetime.now(dt.UTC)
    run_id = args.run_id or started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    out = Path(args.out)
    progress = Progress()
    ctx = Ctx(
        progress=progress,
        work_dir=REPO_ROOT / ".cache" / "bench" / run_id,
        quick=args.quick,
        repeat=args.repeat,
        options={
            "sizes": [int(x) for x in args.sizes.split(",") if x.strip()],
            "block_interval_s": args.block_interval,
            "engines": [x.strip() for x in args.engines.split(",") if x.strip()],
            "sync_blocks": args.sync_blocks,
            "pairs_k": args.pairs,
            "relay_k": args.relay_k,
        },
    )
    doc = new_run_doc(run_id, args, names, argv, started, ("node", "harness", "bench"))
    t0 = time.monotonic()
    try:
        measure_all(doc, names, MEASUREMENTS, ctx, args.budget_s, t0)
    finally:
        if "scale" in names and "scale" not in doc["results"] and ctx.partial.get("scale_points"):
            doc["results"]["scale"] = {
                **scale.summarize(ctx.partial["scale_points"]),
                "interrupted": True,
            }
        doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        doc["wall_s"] = round(time.monotonic() - t0, 1)
        doc["machine"]["after"] = live.machine_state()
        if "reservation" not in doc["results"]:
            pooled = reservation.pooled(doc["results"])
            if pooled is not None:
                doc["results"]["reservation"] = pooled
        doc["headline"] = report.headline(doc["results"])
        doc["targets"] = report.targets(doc["results"])
        doc["notes"] = report.where_time_goes(doc["results"])
        paths = report.write(doc, out, run_id)
        print(report.markdown(doc))
        print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
