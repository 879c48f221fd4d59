"""`python -m bench.side_by_side`: our node and the rust-libp2p 0.56 reference node
(peers/rust, `impl: rust`) on the same work in the same run; our figures as ratios to rust's.

    python -m bench.side_by_side                 # everything once (about 15 minutes)
    python -m bench.side_by_side --quick         # smoke run: k=2, 400 blocks, 5 s windows
    python -m bench.side_by_side --only pairs --repeat 3

Three measurements, each the method of an existing bench module with `impl:` varied:

- `pairs` (bench/holepunch.run_nat on topogen.pairs with mixed impls): one public relay
  (ours) and k relay clients behind each of two cone routers, the first k/2 on each side
  rust, the rest ours. One testnet gives (1) first_reservation_s per implementation
  (bench/reservation.samples: node start -> reservation_accepted, node clock; every client
  reserves on the same relay through the same router) and (2) the DCUtR upgrade per pair
  kind, python-python, rust-rust and python-rust (bench/holepunch.pair_samples: on the
  initiating node, relayed connection_opened -> dcutr_succeeded, node clock);
- `sync` (bench/sync.run_once): the syncbench testnet twice, the relay ours then rust
  (everything else ours): relayed blocks/s of a late node syncing only over circuits
  through that relay, DCUtR off; direct blocks/s of each run is the control (no relay in
  its path, so it should not move with the relay's impl);
- `relay_cost` (bench/relay_cost.run_once): the relay-cost testnet twice, relay ours then
  rust: the relay container's CPU per open circuit (least-squares slope) and memory.

Ratios are ours / rust's, of medians (of the fitted slope for relay CPU): a time ratio above
1 or a throughput ratio below 1 means our node is slower. Writes
bench/results/side-by-side-<run-id>.json and .md, and side-by-side-latest.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import holepunch, live, relay_cost, reservation, stats, sync, topogen
from bench.context import Ctx
from bench.run import RESULTS, measure_all, new_run_doc
from harness.infra.render import REPO_ROOT
from harness.progress import Progress

IMPLS = ("python", "rust")
PAIR_KINDS = ("python-python", "rust-rust", "python-rust")
NAT = "cone"
PAIRS_K = 4
QUICK_PAIRS_K = 2
RELAY_K = 3
QUICK_RELAY_K = 2


def split_impls(k: int) -> tuple[str, ...]:
    """Per side of the pairs testnet, which clients run which impl: the first k/2 rust,
    the rest ours, so every pair kind gets (k/2)^2 (mixed: 2 (k/2)^2) samples."""
    if k < 2 or k % 2:
        raise ValueError(f"k must be even and at least 2, got {k}")
    return ("rust",) * (k // 2) + ("python",) * (k // 2)


def reservation_by_impl(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """bench/reservation.summarize per implementation of the client, plus
    `connected_to_reservation_s`: from the first connection to that relay to the
    reservation (the RESERVE exchange and identify, without the wait for the relay to be
    up or for the client's next redial)."""
    out = {}
    for impl in IMPLS:
        mine = [r for r in rows if r.get("impl") == impl]
        after = [
            r["first_reservation_s"] - r["connect_s"]
            for r in mine
            if "first_reservation_s" in r and "connect_s" in r
        ]
        out[impl] = {
            **reservation.summarize(mine),
            "connected_to_reservation_s": stats.summary(after),
        }
    return out


def dcutr_by_kind(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """bench/holepunch.summarize per pair kind (the `kind` run_nat puts on each pair)."""
    return {
        kind: holepunch.summarize([r for r in rows if r.get("kind") == kind]) for kind in PAIR_KINDS
    }


def expected_pairs(impls: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Cross pairs per kind in one pairs testnet whose sides both run `impls` (a pair
    whose ends never attempted DCUtR is in no sample: this is what it is missing from)."""
    out = dict.fromkeys(PAIR_KINDS, 0)
    for a in impls:
        for b in impls:
            out[holepunch.pair_kind(a, b)] += 1
    return out


def pairs_summary(runs: list[dict[str, Any]], impls: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Reservation per impl and DCUtR per pair kind over every pairs run (run_nat output)."""
    pair_rows = [r for run in runs for r in run.get("samples") or []]
    resv_rows = [{**r, "run": run["run"]} for run in runs for r in run.get("reservations") or []]
    dcutr = dcutr_by_kind(pair_rows)
    for kind, n in expected_pairs(impls).items():
        dcutr[kind]["pairs_expected"] = n * len(runs)
        dcutr[kind]["without_attempt"] = [
            {**w, "run": run["run"]}
            for run in runs
            for w in run.get("without_attempt") or []
            if w.get("kind") == kind
        ]
    return {
        "reservation": reservation_by_impl(resv_rows),
        "dcutr": dcutr,
        "runs": runs,
    }


def _spread(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return ""
    if "r2" in s:  # a fitted slope (_fit_as_summary): its spread is how well the line fits
        return f"least squares, r^2 {_r2(s)}"
    if s["n"] == 1:
        return "1 sample"
    return f"p95 {s['p95']:g}, range {s['min']:g}-{s['max']:g}"


def row(
    figure: str,
    unit: str,
    ours: dict[str, Any],
    rust: dict[str, Any],
    clock: str,
    note: str = "",
    ratio: bool = True,
) -> dict[str, Any]:
    """One comparison line from two stats.summary dicts: medians, n, spread, ours / rust
    (none with ratio=False: a context line, where a quotient means nothing)."""
    return {
        "figure": figure,
        "unit": unit,
        "python": {"median": ours.get("median"), "n": ours.get("n") or 0, "spread": _spread(ours)},
        "rust": {"median": rust.get("median"), "n": rust.get("n") or 0, "spread": _spread(rust)},
        "ratio": stats.ratio(ours.get("median"), rust.get("median"), 3) if ratio else None,
        "clock": clock,
        "note": note,
    }


def _fit_as_summary(fit: dict[str, Any], key: str) -> dict[str, Any]:
    """A least-squares slope in the shape of a stats.summary (n = sampling windows)."""
    r2_key = "cpu_fit_r2" if key.startswith("cpu") else "mem_fit_r2"
    value = fit.get(key)
    return {
        "median": None if value is None else round(float(value), 4),
        "n": fit.get("windows") or 0,
        "p95": None,
        "min": None,
        "max": None,
        "r2": fit.get(r2_key),
    }


def comparison(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The side-by-side table: one row per figure measured, ours against rust's."""
    rows: list[dict[str, Any]] = []
    pairs = results.get("pairs") or {}
    node = "node monotonic"
    if pairs.get("reservation"):
        r = pairs["reservation"]
        rows.append(
            row(
                "first reservation (node start -> reservation_accepted)",
                "s",
                r["python"]["first_reservation_s"],
                r["rust"]["first_reservation_s"],
                node,
                "clients of the same relay (ours), behind the same cone routers",
            )
        )
        rows.append(
            row(
                "first connection to the relay -> reservation accepted",
                "s",
                r["python"]["connected_to_reservation_s"],
                r["rust"]["connected_to_reservation_s"],
                node,
                "the same samples without the time before the client reached the relay",
            )
        )
        rows.append(
            row(
                "the relay's process started after the client's (context, not a cost)",
                "s",
                r["python"]["phases_s"]["relay_process_started_after_client"],
                r["rust"]["phases_s"]["relay_process_started_after_client"],
                node,
                "> 0: the client was up before the relay (ours) and had to wait or redial",
                ratio=False,
            )
        )
    kinds = pairs.get("dcutr") or {}
    if kinds:
        rr = kinds.get("rust-rust") or {}
        for kind in ("python-python", "python-rust"):
            k = kinds.get(kind) or {}
            rows.append(
                row(
                    f"DCUtR upgrade, {kind} vs rust-rust pairs",
                    "s",
                    k.get("dcutr_upgrade_s") or {},
                    rr.get("dcutr_upgrade_s") or {},
                    node + " (initiator: relayed connection_opened -> dcutr_succeeded)",
                    f"went direct / attempted / expected: {kind} {_pairs(k)}, "
                    f"rust-rust {_pairs(rr)}",
                )
            )
    sy = results.get("sync") or {}
    if sy.get("python") and sy.get("rust"):
        py, ru = sy["python"], sy["rust"]
        rows.append(
            row(
                "relayed sync through the relay (DCUtR off)",
                "blocks/s",
                py["sync_relayed_blocks_per_s"],
                ru["sync_relayed_blocks_per_s"],
                node + " (sync_completed sessions)",
                "syncer, validators ours; only the relay's impl differs",
            )
        )
        rows.append(
            row(
                "direct sync, same runs (control: no relay in the path)",
                "blocks/s",
                py["sync_direct_blocks_per_s"],
                ru["sync_direct_blocks_per_s"],
                node,
                "python column: run with our relay; rust column: run with the rust relay",
            )
        )
    rc = results.get("relay_cost") or {}
    if rc.get("python") and rc.get("rust"):
        for key, label, unit in (
            ("cpu_cores_per_circuit", "relay CPU per open circuit", "cores"),
            ("cpu_cores_at_zero", "relay CPU with no circuit (fit intercept)", "cores"),
            ("mem_mib_per_circuit", "relay memory per open circuit", "MiB"),
            ("mem_mib_at_zero", "relay memory with no circuit (fit intercept)", "MiB"),
        ):
            py, ru = _fit_as_summary(rc["python"], key), _fit_as_summary(rc["rust"], key)
            rows.append(
                row(
                    label,
                    unit,
                    py,
                    ru,
                    "bench monotonic windows, relay container cgroup",
                    "fit over n sampling windows, k*k circuits down to 0",
                )
            )
    return rows


def _pairs(d: dict[str, Any]) -> str:
    return f"{d.get('succeeded')}/{d.get('pairs')}/{d.get('pairs_expected', '?')}"


def _r2(s: dict[str, Any]) -> str:
    return "-" if s.get("r2") is None else f"{float(s['r2']):.2f}"


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Side by side: our node and rust-libp2p 0.56 ({doc.get('run_id')})",
        "",
        f"commit `{doc.get('commit')}`{' (dirty)' if doc.get('dirty') else ''}, "
        f"{doc.get('started_at')} -> {doc.get('finished_at')}, quick {doc.get('quick')}, "
        f"repeat {doc.get('repeat')}; load before {_load(doc, 'before')}, "
        f"after {_load(doc, 'after')}",
        "",
        "| figure | ours: median (n) | rust: median (n) | ours / rust | spread ours; rust | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc.get("comparison") or []:
        py, ru = r["python"], r["rust"]
        lines.append(
            f"| {r['figure']} ({r['unit']}) | {_v(py['median'])} ({py['n']}) | "
            f"{_v(ru['median'])} ({ru['n']}) | {_v(r['ratio'])} | "
            f"{py['spread'] or '-'}; {ru['spread'] or '-'} | {r['note']} |"
        )
    if doc.get("errors"):
        lines += ["", "Errors:", ""]
        lines += [f"- {k}: {str(v)[:400]}" for k, v in doc["errors"].items()]
    return "\n".join(lines) + "\n"


def _load(doc: dict[str, Any], when: str) -> str:
    la = ((doc.get("machine") or {}).get(when) or {}).get("loadavg")
    return "?" if not la else "/".join(f"{x:g}" for x in la)


# ---- the measurements ---------------------------------------------------------------------


def measure_pairs(ctx: Ctx) -> dict[str, Any]:
    k = int(ctx.options.get("pairs_k") or (QUICK_PAIRS_K if ctx.quick else PAIRS_K))
    impls = split_impls(k)
    doc = topogen.pairs(k, NAT, client_impls=impls)
    runs = [
        holepunch.run_nat(ctx, NAT, k, i, doc=doc, label="sbs-pairs") for i in range(ctx.repeat)
    ]
    out: dict[str, Any] = {
        "k": k,
        "client_impls_per_side": list(impls),
        **pairs_summary(runs, impls),
    }
    for impl in IMPLS:
        s = out["reservation"][impl]["first_reservation_s"]
        ctx.say(f"first reservation, {impl}: median {s['median']} s (n {s['n']})")
    for kind in PAIR_KINDS:
        d = out["dcutr"][kind]
        ctx.say(
            f"DCUtR {kind}: {d['succeeded']}/{d['pairs']} direct, "
            f"upgrade median {d['dcutr_upgrade_s']['median']} s"
        )
    return out


def measure_sync(ctx: Ctx) -> dict[str, Any]:
    n_blocks = sync.blocks(ctx)
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
    for i in range(ctx.repeat):  # alternate, so drift in the machine's load hits both
        for impl in IMPLS:
            runs[impl].append(sync.run_reported(ctx, n_blocks, i, impl))
    return {
        "chain_blocks": n_blocks,
        **{impl: {**sync.summarize(runs[impl]), "runs": runs[impl]} for impl in IMPLS},
    }


def measure_relay_cost(ctx: Ctx) -> dict[str, Any]:
    k = int(ctx.options.get("relay_k") or (QUICK_RELAY_K if ctx.quick else RELAY_K))
    window = relay_cost.QUICK_WINDOW_S if ctx.quick else relay_cost.WINDOW_S
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
    for i in range(ctx.repeat):
        for impl in IMPLS:
            runs[impl].append(relay_cost.run_once(ctx, k, window, i, impl))
    out: dict[str, Any] = {"k": k, "window_s": window}
    for impl in IMPLS:
        out[impl] = {**relay_cost.fit(runs[impl]), "runs": runs[impl]}
        ctx.say(
            f"relay cost, {impl} relay: {out[impl]['cpu_cores_per_circuit']} cores per circuit "
            f"(r^2 {out[impl]['cpu_fit_r2']})"
        )
    return out


MEASUREMENTS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "pairs": measure_pairs,
    "sync": measure_sync,
    "relay_cost": measure_relay_cost,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.side_by_side", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--repeat", type=int, default=1, help="repeat each testnet N times")
    p.add_argument(
        "--only", default="", help=f"comma list (default all): {', '.join(MEASUREMENTS)}"
    )
    p.add_argument("--pairs", type=int, default=0, help="pairs: k clients per side (even)")
    p.add_argument("--sync-blocks", type=int, default=0, help="sync: chain length")
    p.add_argument("--relay-k", type=int, default=0, help="relay cost: k clients per side")
    p.add_argument("--budget-s", type=float, default=0.0, help="start nothing after N s")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument("--run-id", default="", help="default: UTC timestamp")
    p.add_argument("--render", metavar="JSON", default="", help="run nothing: re-render a file")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.pairs:
        try:
            split_impls(args.pairs)
        except ValueError as exc:
            p.error(f"--pairs: {exc}")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text, md = json.dumps(doc, indent=1, default=str) + "\n", markdown(doc)
    paths = []
    for stem in (f"side-by-side-{doc['run_id']}", "side-by-side-latest"):
        (out / f"{stem}.json").write_text(text)
        (out / f"{stem}.md").write_text(md)
        paths += [out / f"{stem}.json", out / f"{stem}.md"]
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        old: dict[str, Any] = json.loads(Path(args.render).read_text())
        pairs = old["results"].get("pairs") or {}
        if pairs.get("runs"):  # re-derive from the samples: figures added since are there
            pairs.update(pairs_summary(pairs["runs"], pairs["client_impls_per_side"]))
        old["comparison"] = comparison(old["results"])
        paths = write(old, Path(args.out))
        print(markdown(old) + "wrote " + ", ".join(map(str, paths)))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MEASUREMENTS)
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        print(f"side_by_side: --only: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.UTC)
    run_id = args.run_id or started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    progress = Progress()
    ctx = Ctx(
        progress=progress,
        work_dir=REPO_ROOT / ".cache" / "bench" / f"sbs-{run_id}",
        quick=args.quick,
        repeat=args.repeat,
        options={
            "sync_blocks": args.sync_blocks,
            "pairs_k": args.pairs,
            "relay_k": args.relay_k,
        },
    )
    doc = new_run_doc(run_id, args, names, argv, started, ("node", "harness", "bench", "peers"))
    t0 = time.monotonic()
    try:
        measure_all(doc, names, MEASUREMENTS, ctx, args.budget_s, t0, " (side by side)")
    finally:
        doc["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        doc["wall_s"] = round(time.monotonic() - t0, 1)
        doc["machine"]["after"] = live.machine_state()
        doc["comparison"] = comparison(doc["results"])
        paths = write(doc, Path(args.out))
        print(markdown(doc))
        print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
