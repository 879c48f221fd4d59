"""DCUtR: upgrade time, success ratio per NAT type, and the relayed RTT they relate to.

Testnet per NAT type (bench/topogen.pairs): one public relay, k relay clients behind each of
two routers of that type; every a-b pair meets over a circuit through the relay and the node
that received the relayed connection drives DCUtR (node/dcutr/service.py). A pair is one sample.

Per pair, on the initiating node, node-monotonic clock throughout:
- upgrade_s: its relayed `connection_opened` for the peer -> `dcutr_succeeded` (every
  attempt and back-off included): what a user waits for a direct connection;
- punch_s: `duration_s` of the successful attempt (CONNECT sent -> direct connection);
- rtt_s: the relayed round trip DCUtR measured (CONNECT -> CONNECT reply over the circuit);
- first_attempt_after_s: relayed `connection_opened` -> the first attempt's start (what the
  initiator waited for before it: its own circuit in flight, an observed address);
- failed_attempts: each failed attempt's reason, duration, phases and detail;
- sessions (a pair that missed its target or did not go direct): both ends' DCUtR
  sessions with each other, initiator and responder, by start;
- target_s = 1 + 3 * rtt_s (the target "within 1 s plus 3 relayed RTTs").
success ratio = pairs that ended direct / pairs with at least one attempt. A pair whose
attempts are still running at the deadline counts as attempted, not succeeded.
"""

from __future__ import annotations

from typing import Any

from bench import live, reservation, stats, topogen
from bench.context import Ctx
from harness.checks import Observation
from harness.errors import SentrynetError
from harness.run.testnet import RunningTestnet
from node.contract import DcutrAttempt

NAT_TYPES = ("cone", "symmetric")
TARGET_BASE_S = 1.0
TARGET_RTTS = 3
DETAIL_CHARS = 300  # of a failed attempt's detail, kept with its pair (why an upgrade was slow)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def pair_samples(obs: Observation) -> list[dict[str, Any]]:
    names = {n.peer_id: n.name for n in obs.nodes.values()}
    relay_ids = {n.peer_id for n in obs.nodes.values() if n.relay_mode in ("server", "both")}
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for me, st in obs.status.items():
        relayed_at: dict[str, float] = {}
        for e in obs.events_of(me, "connection_opened"):
            if e.kind == "relayed":
                relayed_at.setdefault(str(e.peer), live.at(e))
        by_peer: dict[str, list[DcutrAttempt]] = {}
        for r in st.dcutr:
            if r.role == "initiator":
                by_peer.setdefault(str(r.peer), []).append(r)
        for peer, recs in by_peer.items():
            if peer in relay_ids:
                continue
            row = _pair_row(obs, me, names.get(peer, peer[-8:]), peer, recs, relayed_at)
            key = _pair(me, row["peer"])
            prev = pairs.get(key)
            # a pair seen from both ends: keep the end that succeeded, else the first
            if prev is None or (prev["outcome"] != "succeeded" and row["outcome"] == "succeeded"):
                pairs[key] = row
                if row.get("target_met") is not True:
                    row["sessions"] = sessions(obs, me, row["peer"], relayed_at.get(peer))
    return sorted(pairs.values(), key=lambda r: (r["initiator"], r["peer"]))


def sessions(obs: Observation, a: str, b: str, t0: float | None) -> list[dict[str, Any]]:
    """Every DCUtR session of the pair a-b from both ends (initiator and responder rows),
    by start: which end drove when, and how each ended. Kept for a pair that missed its
    target or did not go direct. `at_s` counts from `t0` (a's relayed connection), else
    from the first session; the nodes share the host's monotonic clock (live.clock_check)."""
    ids = {n.name: n.peer_id for n in obs.nodes.values()}
    rows = [
        (node, r)
        for node, other in ((a, b), (b, a))
        if node in obs.status
        for r in obs.status[node].dcutr
        if str(r.peer) == ids.get(other) and r.at is not None
    ]
    if not rows:
        return []
    ref = t0 if t0 is not None else min(float(r.at or 0) for _, r in rows)
    return [
        _attempt_row(
            r, node=node, role=r.role, outcome=r.outcome, at_s=round(float(r.at or 0) - ref, 4)
        )
        for node, r in sorted(rows, key=lambda nr: float(nr[1].at or 0))
    ]


def _attempt_row(r: DcutrAttempt, **extra: Any) -> dict[str, Any]:
    """One DCUtR attempt as the bench keeps it: number, reason, duration, phases, and
    what the caller adds."""
    return {
        **extra,
        "attempt": r.attempt,
        "reason": r.reason,
        "duration_s": r.duration_s,
        "phases": dict(r.phases),
    }


def _pair_row(
    obs: Observation,
    me: str,
    other: str,
    peer: str,
    recs: list[DcutrAttempt],
    relayed_at: dict[str, float],
) -> dict[str, Any]:
    """One pair as its initiator `me` saw it: its attempts (/status dcutr) and, when one
    succeeded, the upgrade time from its events."""
    recs = sorted(recs, key=lambda r: float(r.at or 0))
    ok = next((r for r in recs if r.outcome == "succeeded"), None)
    rtts = [r.rtt_s for r in recs if r.rtt_s is not None]
    row: dict[str, Any] = {
        "initiator": me,
        "peer": other,
        "attempts": len(recs),
        "outcome": "succeeded" if ok else ("failed" if any(r.final for r in recs) else "pending"),
        "rtt_s": rtts[0] if rtts else None,
        "reasons": sorted({str(r.reason) for r in recs if r.reason}),
        "failed_attempt_s": [
            r.duration_s for r in recs if r.outcome == "failed" and r.duration_s is not None
        ],
    }
    if peer in relayed_at and recs and recs[0].at is not None:
        # before the first attempt: the wait for our own circuit in flight, an observation
        row["first_attempt_after_s"] = round(float(recs[0].at) - relayed_at[peer], 4)
    row["failed_attempts"] = [
        _attempt_row(r, detail=(r.detail or "")[:DETAIL_CHARS])
        for r in recs
        if r.outcome == "failed"
    ]
    if ok is None:
        return row
    row["punch_s"] = ok.duration_s
    row["attempt"] = ok.attempt
    succ = live.first(obs, me, "dcutr_succeeded", peer=peer)
    if succ is not None and peer in relayed_at:
        row["upgrade_s"] = round(live.at(succ) - relayed_at[peer], 4)
    ok_rtt = ok.rtt_s if ok.rtt_s is not None else row["rtt_s"]
    if ok_rtt is not None:
        row["target_s"] = round(TARGET_BASE_S + TARGET_RTTS * float(ok_rtt), 4)
        if "upgrade_s" in row:
            row["target_met"] = row["upgrade_s"] <= row["target_s"]
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["outcome"] == "succeeded"]
    met = [r for r in done if r.get("target_met")]
    with_target = [r for r in done if "target_met" in r]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["outcome"] != "succeeded":
            for why in r["reasons"] or ["(none yet)"]:
                reasons[why] = reasons.get(why, 0) + 1
    return {
        "pairs": len(rows),
        "succeeded": len(done),
        "dcutr_success_ratio": stats.success_ratio(len(done), len(rows)),
        "dcutr_upgrade_s": stats.summary(r.get("upgrade_s") for r in done),
        "punch_s": stats.summary(r.get("punch_s") for r in done),
        "attempts_to_success": stats.summary(r.get("attempt") for r in done),
        "relayed_rtt_s": stats.summary(r.get("rtt_s") for r in rows),
        "target_s": stats.summary(r.get("target_s") for r in done),
        "target_met": f"{len(met)}/{len(with_target)}",
        "failure_reasons": reasons,
    }


def _settled(net: RunningTestnet, k: int) -> tuple[bool, str]:
    obs = live.collect(net, [n.name for n in net.testnet.nodes if n.name != "relay"])
    rows = pair_samples(obs)
    final = [r for r in rows if r["outcome"] != "pending"]
    line = f"{len(final)}/{k * k} cross pairs settled ({len(rows)} with an attempt)"
    return len(final) >= k * k, line


def pair_kind(a_impl: str, b_impl: str) -> str:
    """The implementations at the two ends of a pair, order-free: "python-rust", never
    "rust-python"."""
    return "-".join(sorted((a_impl, b_impl)))


def without_attempt(obs: Observation, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The a-b cross pairs (topogen.pairs names) in no sample: neither end has a DCUtR
    attempt. Per pair, the kinds of connection each end holds to the other right now
    (`direct` without an attempt: they met directly, e.g. a dial to a mapped port; none: they
    never met), so a pair missing from the figures says why."""
    seen = {_pair(r["initiator"], r["peer"]) for r in rows}
    ids = {n.name: n.peer_id for n in obs.nodes.values()}
    side_a = sorted(n for n in ids if n.startswith("a"))
    side_b = sorted(n for n in ids if n.startswith("b"))
    out = []
    for a in side_a:
        for b in side_b:
            if _pair(a, b) in seen:
                continue

            def kinds(me: str, other: str) -> list[str]:
                st = obs.status.get(me)
                if st is None:
                    return ["(no status)"]
                return sorted({str(c.kind) for c in st.connections_to(ids[other])})

            out.append({"a": a, "b": b, "a_sees": kinds(a, b), "b_sees": kinds(b, a)})
    return out


def run_nat(
    ctx: Ctx,
    nat: str,
    k: int,
    run: int,
    doc: dict[str, Any] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """One pairs testnet (`doc`, default topogen.pairs(k, nat)) up, DCUtR settled on all
    k*k cross pairs, its pair samples and reservation samples read, down. Each pair sample
    carries the `impl:` of both ends (`kind`, pair_kind)."""
    out: dict[str, Any] = {"nat": nat, "run": run, "k": k}
    doc = doc if doc is not None else topogen.pairs(k, nat)
    try:
        with live.running(ctx, doc, label or f"hp-{nat[:3]}") as net:
            out["testnet"] = net.name
            try:
                reservation.wait_reservations(ctx, net, 120.0)
                live.wait(
                    ctx,
                    net,
                    lambda: _settled(net, k),
                    f"DCUtR to settle on all {k * k} cross pairs",
                    180.0,
                    "pairs never met over a circuit (peer exchange, reservations) or attempts "
                    "still in back-off",
                    interval_s=2.0,
                )
            except SentrynetError as exc:
                out["error"] = str(exc)
            obs = live.collect(net)
            out["clock"] = live.clock_check(net, obs)
            impl = {n.name: n.impl for n in obs.nodes.values()}
            out["samples"] = pair_samples(obs)
            for row in out["samples"]:
                ends = (impl.get(row["initiator"], "?"), impl.get(row["peer"], "?"))
                row["initiator_impl"], row["peer_impl"] = ends
                row["kind"] = pair_kind(*ends)
            out["without_attempt"] = without_attempt(obs, out["samples"])
            for row in out["without_attempt"]:
                row["kind"] = pair_kind(impl.get(row["a"], "?"), impl.get(row["b"], "?"))
            out["reservations"] = reservation.samples(obs)
    except SentrynetError as exc:
        out.setdefault("error", str(exc))
    return out


def measure(ctx: Ctx) -> dict[str, Any]:
    k = int(ctx.options.get("pairs_k") or (2 if ctx.quick else 3))
    result: dict[str, Any] = {
        "clock": "node monotonic on the initiating node",
        "target": f"upgrade_s <= {TARGET_BASE_S:g} s + {TARGET_RTTS} x relayed RTT",
    }
    for nat in NAT_TYPES:
        runs = [run_nat(ctx, nat, k, i) for i in range(ctx.repeat)]
        rows = [r for run in runs for r in run.get("samples") or []]
        result[nat] = {**summarize(rows), "runs": runs}
        ctx.say(
            f"holepunch {nat}: {result[nat]['succeeded']}/{result[nat]['pairs']} pairs direct, "
            f"upgrade median {result[nat]['dcutr_upgrade_s']['median']} s"
        )
    return result
