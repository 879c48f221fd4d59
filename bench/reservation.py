"""first_reservation_s: node start to its first reservation accepted.

Clock: node-monotonic on both ends (`/status started_at` and the `reservation_accepted`
event's `t`), so polling latency never enters the figure. Samples: every relay client of
scenarios/sentry.yaml (the default testnet), per repeat; `samples()` also serves the other
benchmarks' testnets (scale points, pairs), reported separately.

Where the time goes, per client (same clock): start -> first connection to the relay it
first reserved on (`connection_opened`), -> relay matched (`relay_discovered`: when the
dial to it is through, or by identify), -> reservation accepted; plus how many
reservation attempts were denied or failed before (`reservation_denied`), and whether
that relay's own process had even started yet (`relay_started_after_s` > 0: the client
waited for its relay, not for itself).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import yaml

from bench import live, stats
from bench.context import Ctx
from harness.checks import Observation
from harness.errors import SentrynetError
from harness.run.setup import topology_path
from harness.run.testnet import RunningTestnet


def samples(obs: Observation) -> list[dict[str, Any]]:
    """One row per relay client that got a reservation (and one with `error` for those that
    did not): seconds from its start to the first reservation, and the phases before it."""
    out = []
    peers = {n.peer_id: n.name for n in obs.nodes.values()}
    for node in obs.nodes.values():
        if node.relay_mode not in ("client", "both") or not node.relay_servers:
            continue
        st = obs.status.get(node.name)
        if st is None or st.started_at is None:
            out.append({"node": node.name, "impl": node.impl, "error": "no status"})
            continue
        start = float(st.started_at)
        first = live.first(obs, node.name, "reservation_accepted")
        if first is None:
            out.append(
                {"node": node.name, "impl": node.impl, "error": "no reservation_accepted event"}
            )
            continue
        row: dict[str, Any] = {
            "node": node.name,
            "role": node.role,
            "impl": node.impl,
            "first_reservation_s": round(live.at(first) - start, 4),
        }
        relay = first.relay
        conn = live.first(obs, node.name, "connection_opened", peer=relay)
        disc = live.first(obs, node.name, "relay_discovered", peer=relay)
        denied = [
            e for e in obs.events_of(node.name, "reservation_denied") if live.at(e) < live.at(first)
        ]
        row["denied_before"] = len(denied)
        row["denied_reasons"] = dict(Counter(reason_kind(e.reason) for e in denied))
        relay_name = peers.get(str(relay))
        relay_status = obs.status.get(relay_name) if relay_name else None
        relay_start = relay_status.started_at if relay_status is not None else None
        if relay_start is not None:
            # > 0: the relay process was not even running when this client started
            row["relay_started_after_s"] = round(relay_start - start, 4)
        if conn is not None:
            row["connect_s"] = round(live.at(conn) - start, 4)
        if disc is not None:
            row["relay_discovered_s"] = round(live.at(disc) - start, 4)
        out.append(row)
    return out


def reason_kind(reason: object) -> str:
    """A reservation_denied reason without its particulars, to count alike ones together:
    `no answer within 5s` -> `no answer within Ns`, `StreamReset: ...` -> `StreamReset`."""
    text = str(reason or "?")
    head = text.split(":", 1)[0].strip()
    return re.sub(r"\d+(\.\d+)?", "N", head)[:80]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "first_reservation_s" in r]
    return {
        "first_reservation_s": stats.summary(r["first_reservation_s"] for r in ok),
        "phases_s": {
            "start_to_relay_connection": stats.summary(r.get("connect_s") for r in ok),
            "start_to_relay_discovered": stats.summary(r.get("relay_discovered_s") for r in ok),
            "relay_process_started_after_client": stats.summary(
                r.get("relay_started_after_s") for r in ok
            ),
        },
        "denied_before_first": stats.summary(r.get("denied_before") for r in ok),
        "denied_reasons_before_first": dict(
            sum((Counter(r.get("denied_reasons") or {}) for r in ok), Counter()).most_common()
        ),
        "clients": len(rows),
        "without_reservation": [r["node"] for r in rows if "error" in r],
    }


def wait_reservations(
    ctx: Ctx, net: RunningTestnet, deadline_s: float, first_only: bool = False
) -> float:
    """Wait until every relay client has been seen holding min(#relay servers, max held)
    reservations (or one, with first_only); return the bench-clock moment the last was."""
    want = {}
    for n in net.testnet.nodes:
        if n.relay_mode in ("client", "both") and n.relay_servers:
            held = int((n.config.get("relay") or {}).get("max_reservations_held", 2))
            want[n.name] = 1 if first_only else min(len(n.relay_servers), held)

    # a client seen holding its reservations is not asked again: at 64 nodes, reading every
    # /status each second was CPU the starting nodes could have had (a reservation lost
    # again later shows in the events, which the measurements read)
    done: set[str] = set()

    def probe() -> tuple[bool, str]:
        snap = net.snapshot(timeout_s=live.API_TIMEOUT_S, only=set(want) - done)
        missing = []
        for ns in snap.nodes:
            if len(ns.reservations) < want[ns.name]:
                missing.append(f"{ns.name} {len(ns.reservations)}/{want[ns.name]}")
            else:
                done.add(ns.name)
        line = f"{len(want) - len(missing)}/{len(want)} clients hold their reservations"
        if missing:
            line += ": waiting on " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        return not missing, line

    live.wait(
        ctx,
        net,
        probe,
        "every relay client to hold its reservations",
        deadline_s,
        "a relay unreachable (router, routes) or reservations refused (see events)",
        interval_s=1.0,
    )
    return time.monotonic()


def pooled(results: dict[str, Any]) -> dict[str, Any] | None:
    """first_reservation_s from the other measurements' testnets (scale points, hole-punch
    pairs), when the dedicated run was not made: same definition, same clock."""
    rows: list[dict[str, Any]] = []
    sources = []
    for pt in (results.get("scale") or {}).get("points") or []:
        for r in pt.get("reservation_samples") or []:
            rows.append({**r, "source": f"scale{pt.get('nodes')}"})
        sources.append(f"scale {pt.get('nodes')} nodes")
    for nat in ("cone", "symmetric"):
        for run in ((results.get("holepunch") or {}).get(nat) or {}).get("runs") or []:
            for r in run.get("reservations") or []:
                rows.append({**r, "source": f"pairs-{nat}"})
            sources.append(f"pairs {nat}")
    if not rows:
        return None
    return {
        "topology": "pooled from " + ", ".join(sources),
        "clock": "node monotonic (status started_at -> reservation_accepted.t)",
        **summarize(rows),
        "samples": rows,
    }


def measure(ctx: Ctx) -> dict[str, Any]:
    doc = yaml.safe_load(topology_path("sentry").read_text())
    rows: list[dict[str, Any]] = []
    runs = []
    for i in range(ctx.repeat):
        with live.running(ctx, doc, "resv") as net:
            error = None
            try:
                wait_reservations(ctx, net, 120.0, first_only=True)
            except SentrynetError as exc:  # keep the clients that did reserve
                error = str(exc)
            obs = live.collect(net)
            r = samples(obs)
            for row in r:
                row["run"] = i
            rows += r
            runs.append({"testnet": net.name, "clock": live.clock_check(net, obs), "error": error})
        ctx.say(f"reservation run {i + 1}/{ctx.repeat}: {len(r)} clients")
    return {
        "topology": "scenarios/sentry.yaml",
        "clock": "node monotonic (status started_at -> reservation_accepted.t)",
        **summarize(rows),
        "runs": runs,
        "samples": rows,
    }
