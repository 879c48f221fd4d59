"""The nightly fuzz count: `python -m bench.fuzz --per-protocol 10000`.

Generates (hypothesis, derandomized) `--per-protocol` adversarial inputs for every protocol
the node speaks (testkit/fuzz.py: hop, stop, DCUtR over a direct connection and over a
relayed circuit, block sync, gossipsub RPC, consensus gossip, identify push) and sends them
to one live node on loopback (testkit/fuzz_live.py), a fresh stream per input. Per protocol:
inputs sent, rejections expected, rejections counted (/status and the Prometheus counter),
crashes, node alive, reservation granted after, duration. Real node processes, real
sockets; run it under `nice -n 10` on a shared machine.

Writes bench/results/fuzz-<run-id>.json; exits 1 when any protocol is not clean.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from testkit.fuzz_live import PROTOCOLS, run_all
from testkit.procs import REPO

RESULTS = REPO / "bench" / "results"


def summary_lines(rows: list[dict[str, object]]) -> list[str]:
    head = f"{'protocol':<14}{'sent':>7}{'rejectable':>11}{'counted':>9}{'crashes':>8}"
    head += f"{'raised':>7}"
    head += "  alive  reservation  s"
    out = [head]
    for r in rows:
        counted = r["counted"] if r["counter"] else "n/a"
        out.append(
            f"{r['protocol']!s:<14}{r['sent']!s:>7}{r['expected_rejections']!s:>11}{counted!s:>9}"
            f"{r['crashes']!s:>8}{r.get('handler_errors', 0)!s:>7}  "
            f"{'yes' if r['node_alive'] else 'NO':<5}  "
            f"{'yes' if r['reservation_after'] else 'NO':<11}  {r['duration_s']}"
            + ("" if r["ok"] else "  NOT CLEAN")
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    p.add_argument("--per-protocol", type=int, default=10000)
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma separated")
    p.add_argument("--check-every", type=int, default=500, help="compare counters every N")
    args = p.parse_args(argv)
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    work = REPO / ".cache" / "bench" / f"fuzz-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    protocols = [x for x in args.protocols.split(",") if x]
    t0 = time.monotonic()
    results = run_all(
        Path(work),
        {proto: args.per_protocol for proto in protocols},
        args.check_every,
        lambda m: print(m, flush=True),
    )
    rows = [r.to_json() for r in results]
    doc = {
        "run_id": run_id,
        "per_protocol": args.per_protocol,
        "duration_s": round(time.monotonic() - t0, 1),
        "clean": all(r["ok"] for r in rows) and len(rows) == len(protocols),
        "protocols": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fuzz-{run_id}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print("\n".join(summary_lines(rows)))
    print(f"clean: {doc['clean']}  total {doc['duration_s']} s  written: {out}")
    return 0 if doc["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
