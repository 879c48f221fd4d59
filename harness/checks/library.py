"""Checks of the bug library (scenarios/library/): each one judges the claim of a public
libp2p issue that a scenario file reproduces, and names that issue in its verdict.

- `reserved_again` / `reservations_never_refused`: a relay client restarted in a loop
  reserves again every time and no relay answers RESOURCE_LIMIT_EXCEEDED (go-libp2p
  #2963, "relay: recycle reservations for the same peer": a relay that keeps a slot per
  connection, not per peer, runs out of slots for a client that restarts; see also
  go-libp2p #1713).
- `circuits_limited`: the relays' data and duration limits cut circuits, and the pairs
  open circuits again (circuit relay v2 limits: go-libp2p's defaults are 2 min / 128 KiB).
- `one_direct_per_shared_endpoint`: nodes behind one NAT router on the same p2p port
  share one public endpoint, so of the pairs between two such groups at most one can be
  direct (rust-libp2p #3889: with port reuse a second connection would need the same
  5-tuple, which the OS refuses with AddrNotAvailable; a NAT router rewrites it instead).

Pure functions of an `Observation`, like every check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.checks import Check, Observation, Verdict
from harness.checks.outside import direct_through_nats
from harness.checks.relay import (
    DcutrSeen,
    _direct_across_nat,
    _good_reservations,
    pair_history,
)
from node.contract import Event

GO_2963 = "go-libp2p #2963"
RUST_3889 = "rust-libp2p #3889"
LIMIT = "RESOURCE_LIMIT_EXCEEDED"
LIMIT_REASONS = ("data_limit", "duration_limit")
SETTLE_S = 30.0  # a relayed pair with no DCUtR attempt after this long is left alone


# ---------------------------------------------------------------------------------------
# client-restart-loop (go-libp2p #2963)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """A reservation a relay refused: seen by the client (reservation_denied) or by the
    relay (reservation_refused)."""

    client: str
    relay: str
    ts: float | None
    reason: str
    seen_by: str


def refusals(obs: Observation, client: str | None = None) -> list[Refusal]:
    """Every refused reservation of the run (of `client` only, when given)."""
    names = obs.peer_names()
    out: list[Refusal] = []
    for name in obs.clients():
        if client is not None and name != client:
            continue
        for e in obs.events_of(name, "reservation_denied"):
            out.append(
                Refusal(name, obs.name_of(e.relay), e.ts, str(e.reason or "?"), f"{name} (denied)")
            )
    for relay in obs.relays():
        for e in obs.events_of(relay, "reservation_refused"):
            who = names.get(e.peer or "", obs.name_of(e.peer))
            if client is None or who == client:
                out.append(Refusal(who, relay, e.ts, str(e.reason or "?"), f"{relay} (refused)"))
    return sorted(out, key=lambda r: r.ts if r.ts is not None else -1.0)


def _limit_refusals(rs: list[Refusal]) -> list[Refusal]:
    return [r for r in rs if LIMIT in r.reason.upper()]


def _refusal_text(rs: list[Refusal]) -> str:
    return "; ".join(
        f"{r.relay} refused {r.client} {r.reason}"
        + (f" at {r.ts:.1f}s" if r.ts is not None else "")
        + f" [{r.seen_by}]"
        for r in rs[:4]
    ) + (f" (+{len(rs) - 4} more)" if len(rs) > 4 else "")


def _grants(obs: Observation, client: str) -> list[Event]:
    """The relays' reservation_granted events for `client`."""
    pid = obs.peer_id(client)
    return [
        e for r in obs.relays() for e in obs.events_of(r, "reservation_granted") if e.peer == pid
    ]


def _limit_cause(rs: list[Refusal]) -> str:
    return (
        f"{_refusal_text(rs)}: the relay counts a reservation slot per connection (or keeps "
        "the slots of the client's dead connections) instead of one per peer, so a client "
        f"that restarts runs out of slots; this is {GO_2963} (relay: recycle reservations "
        "for the same peer; also go-libp2p #1713)"
    )


def reserved_again(node: str, since: str) -> Check:
    """`node`, restarted at marks[since] (a `mark: time` taken just before the restart),
    holds a reservation accepted after that time again, and no relay refused it with
    RESOURCE_LIMIT_EXCEEDED (go-libp2p #2963). A refusal for the limit is final."""

    def check(obs: Observation) -> Verdict:
        t0 = obs.marks.get(since)
        if not isinstance(t0, int | float):
            return Verdict(
                False,
                f"no time mark {since!r} to judge the restart by",
                cause=f"add `- mark: time` with `as: {since}` before the restart",
                data={"final": True},
            )
        mine = refusals(obs, node)
        limited = _limit_refusals(mine)
        if limited:
            return Verdict(
                False,
                f"{node} (restarted at {t0:.1f}s): {_refusal_text(limited)}",
                cause=_limit_cause(limited),
                data={"final": True, "refused": len(limited)},
            )
        if node not in obs.status:
            return Verdict(
                False,
                f"{node} is not answering /status since its restart at {t0:.1f}s "
                f"({obs.unreachable.get(node, 'no status yet')})",
                cause=f"{node} did not come back up after the restart (see its log)",
            )
        good, problems = _good_reservations(obs, node)
        accepted = {
            e.relay: e.ts
            for e in obs.events_of(node, "reservation_accepted")
            if e.ts is not None and e.ts >= t0
        }
        fresh: list[tuple[str, float]] = []
        for g in good:
            at = obs.to_t(node, g.res.accepted_at)
            if at is None:
                at = accepted.get(g.res.relay)
            if at is not None and at >= t0:
                fresh.append((g.relay_name, at))
        if not fresh:
            since_restart = [r for r in mine if r.ts is not None and r.ts >= t0]
            held = ", ".join(sorted({g.relay_name for g in good})) or "none"
            seen = "; ".join(problems) or "no reservation accepted since"
            cause = (
                f"the relays refused it: {_refusal_text(since_restart)}"
                if since_restart
                else f"{node} came back but sent no RESERVE, or none was answered, since its "
                "restart (the relay client must reserve again at start-up)"
            )
            return Verdict(
                False,
                f"{node} restarted at {t0:.1f}s: no reservation accepted since "
                f"(holds: {held}; {seen})",
                cause=cause,
            )
        fresh.sort(key=lambda x: x[1])
        first = fresh[0][1]
        grants = _grants(obs, node)
        renewed = sum(1 for e in grants if e.renewed)
        others = [r for r in mine if r not in limited]
        detail = (
            f"{node} restarted at {t0:.1f}s holds a reservation again: "
            + ", ".join(f"{rel} at {at:.1f}s" for rel, at in fresh)
            + f" ({first - t0:.1f}s after the restart); relays granted {node} "
            f"{len(grants)} reservation(s) in this run ({renewed} as a renewal of its own slot), "
            f"refused {len(mine)}"
            + (f" ({_refusal_text(others)})" if others else "")
            + f": no {LIMIT} ({GO_2963})"
        )
        return Verdict(True, detail, since=first, data={"relays": sorted({r for r, _ in fresh})})

    return check


def reservations_never_refused(obs: Observation) -> Verdict:
    """Over the whole run no relay refused any client's reservation with
    RESOURCE_LIMIT_EXCEEDED (go-libp2p #2963); the detail counts the grants per client."""
    rs = refusals(obs)
    limited = _limit_refusals(rs)
    if limited:
        return Verdict(
            False,
            f"{len(limited)} reservation(s) refused for the limit: {_refusal_text(limited)}",
            cause=_limit_cause(limited),
            data={"final": True},
        )
    counts = {c: _grants(obs, c) for c in obs.clients()}
    per = ", ".join(
        f"{c} {len(g)}" + (f" ({sum(1 for e in g if e.renewed)} renewals)" if g else "")
        for c, g in counts.items()
        if g
    )
    other = f"; other refusals: {_refusal_text(rs)}" if rs else ""
    return Verdict(
        True,
        f"no reservation refused with {LIMIT} in the run ({GO_2963} not reproduced); "
        f"reservations granted by the relays: {per or 'none recorded'}{other}",
        since=obs.t,
    )


# ---------------------------------------------------------------------------------------
# relay-limits
# ---------------------------------------------------------------------------------------
def circuits_limited(min_closed: int = 1, since: str | None = None) -> Check:
    """The relays closed at least `min_closed` circuits at their data or duration limit
    (circuit_closed reason=data_limit|duration_limit, relay side), and at least one pair
    whose circuit was cut opened a circuit again afterwards. With `since` (a `mark: time`
    key) only the cuts from that time on count."""

    def check(obs: Observation) -> Verdict:
        t0 = obs.marks.get(since) if since else None
        if since and not isinstance(t0, int | float):
            return Verdict(
                False,
                f"no time mark {since!r} to count the cuts from",
                cause=f"add `- mark: time` with `as: {since}` before this check",
                data={"final": True},
            )
        names = obs.peer_names()
        cut: list[tuple[str, frozenset[str], float | None, str]] = []
        by_reason: Counter[str] = Counter()
        by_relay: Counter[str] = Counter()
        other: Counter[str] = Counter()
        opened: dict[frozenset[str], list[float]] = {}
        for relay in obs.relays():
            for e in obs.events_of(relay, "circuit_closed"):
                if t0 is not None and (e.ts is None or e.ts < t0):
                    continue
                pair = frozenset({names.get(e.src or "", "?"), names.get(e.dst or "", "?")})
                if e.reason in LIMIT_REASONS:
                    cut.append((relay, pair, e.ts, str(e.reason)))
                    by_reason[str(e.reason)] += 1
                    by_relay[relay] += 1
                else:
                    other[str(e.reason)] += 1
            for e in obs.events_of(relay, "circuit_opened"):
                pair = frozenset({names.get(e.src or "", "?"), names.get(e.dst or "", "?")})
                if e.ts is not None:
                    opened.setdefault(pair, []).append(e.ts)
        counts = ", ".join(f"{r} {by_reason[r]}" for r in LIMIT_REASONS)
        relays = ", ".join(f"{r} {n}" for r, n in sorted(by_relay.items()))
        rest = ", ".join(f"{r} {n}" for r, n in sorted(other.items()))
        after = f" since {t0:.1f}s" if t0 is not None else ""
        head = (
            f"relays closed {len(cut)} circuit(s) at their limits{after} ({counts}"
            + (f"; by relay: {relays}" if relays else "")
            + ")"
            + (f"; other closes: {rest}" if rest else "")
        )
        if len(cut) < min_closed:
            return Verdict(
                False,
                head,
                cause="no circuit reached the relay's limits yet: the [relay] circuit_bytes / "
                "circuit_duration_s in the topology's `config:` are larger than the traffic a "
                "circuit carries in the run, or no traffic crossed a circuit (DCUtR still on?)",
            )
        reopened: dict[frozenset[str], int] = {}
        for _, pair, ts, _ in cut:
            if ts is not None and any(t > ts for t in opened.get(pair, [])):
                reopened[pair] = reopened.get(pair, 0) + 1
        lost = sorted({"<->".join(sorted(p)) for _, p, _, _ in cut if p not in reopened})
        if not reopened:
            return Verdict(
                False,
                head + "; no pair opened a circuit again after a cut",
                cause="after the relay reset a circuit at its limit, neither end dialed a "
                "new one: the node must redial through the relay when a limited circuit ends",
            )
        again = ", ".join(
            f"{'<->'.join(sorted(p))} {n}x"
            for p, n in sorted(reopened.items(), key=lambda x: sorted(x[0]))
        )
        detail = (
            f"{head}; reopened after a cut: {again}"
            + (f"; not (yet) reopened: {', '.join(lost)}" if lost else "")
            + " (limits from the topology's [relay] circuit_bytes / circuit_duration_s; "
            "go-libp2p's defaults are 128 KiB and 2 min)"
        )
        times = sorted(ts for _, _, ts, _ in cut if ts is not None)
        return Verdict(
            True,
            detail,
            since=times[min_closed - 1] if 0 < min_closed <= len(times) else None,
            data={"limited": dict(by_reason), "reopened": len(reopened)},
        )

    return check


# ---------------------------------------------------------------------------------------
# shared-port (rust-libp2p #3889)
# ---------------------------------------------------------------------------------------
def shared_endpoints(obs: Observation) -> dict[str, list[str]]:
    """`router-<net>:<port>` -> the nodes living only behind that NAT router on that p2p
    port, where there are several (they share one public endpoint)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(obs.nodes):
        home = obs.home(name)
        net = obs.nets.get(home) if home else None
        if not obs.only_private(name) or net is None or not net.router_public_ip:
            continue
        groups.setdefault(f"router-{home}:{obs.nodes[name].p2p_port}", []).append(name)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _gave_up(failed: list[DcutrSeen]) -> bool:
    """DCUtR failed and gave up: a failure marked final, or failures from a node that does
    not say whether an attempt was the last."""
    if not failed:
        return False
    return any(e.final for e in failed) or all(e.final is None for e in failed)


def one_direct_per_shared_endpoint(obs: Observation) -> Verdict:
    """Nodes sharing a public endpoint behind one router (topology `p2p_port:` explicit)
    and another group sharing one behind another router: exactly one pair between the two
    groups is direct through both NATs, and every other pair that was relayed tried DCUtR,
    gave up and stayed relayed. Why: every direct connection between the groups is the
    same public 4-tuple (router-a:port <-> router-b:port), which the routers can map once."""
    groups = shared_endpoints(obs)
    keys = sorted(groups)
    pairs: list[tuple[str, str]] = []
    for i, ka in enumerate(keys):
        for kb in keys[i + 1 :]:
            if ka.split(":")[0] == kb.split(":")[0]:
                continue
            pairs += [(a, b) for a in groups[ka] for b in groups[kb]]
    if not pairs:
        return Verdict(
            False,
            f"no two groups of nodes sharing a public endpoint behind different routers "
            f"(shared: {groups or 'none'})",
            cause="topology: give two nodes behind each of two routers the same explicit "
            "`p2p_port:`",
            data={"final": True},
        )
    direct: list[str] = []
    failed: list[str] = []
    pending: list[str] = []
    quiet: list[str] = []  # relayed and left alone, or gone: they neither prove nor block
    untried: list[str] = []
    for a, b in pairs:
        h = pair_history(obs, a, b)
        across, how = _direct_across_nat(obs, h)
        outside = direct_through_nats(obs, a, b)
        if across or outside:
            direct.append(f"{a}<->{b} direct ({how if across else outside[0]})")
        elif _gave_up(h.dcutr_failed):
            reasons = sorted({str(e.reason) for e in h.dcutr_failed})
            failed.append(
                f"{a}<->{b} DCUtR failed {len(h.dcutr_failed)}x ({', '.join(reasons)}), "
                + ("relayed" if h.relayed_now else "not connected now")
            )
        elif h.relayed_now and (
            h.dcutr_started
            or h.dcutr_failed
            or h.relayed_at is None
            or obs.t - h.relayed_at < SETTLE_S
        ):
            pending.append(f"{a}<->{b} relayed, DCUtR not decided")
        elif h.relayed_now:
            quiet.append(f"{a}<->{b} relayed, DCUtR never tried")
        elif h.had_relayed:
            quiet.append(f"{a}<->{b} relayed earlier, not connected now")
        else:
            untried.append(f"{a}<->{b}")
    shared = " and ".join(f"{k} ({', '.join(groups[k])})" for k in keys)
    why = (
        f"{shared} each share one public "
        "endpoint: every direct connection between the groups is the same public 4-tuple, "
        "which the routers' conntrack can hold once; a second punch is mapped to another "
        f"port and misses (the same 5-tuple collision as {RUST_3889}, where port reuse "
        "makes the OS refuse the second connection with AddrNotAvailable)"
    )
    seen = "; ".join(direct + failed + pending + quiet) + (
        f"; never relayed: {', '.join(untried)}" if untried else ""
    )
    if len(direct) > 1:
        return Verdict(
            False,
            f"{len(direct)} direct pairs between shared endpoints: {seen}",
            cause="the routers gave each node its own public port after all (a NAT that "
            "does not preserve ports?), so the shared endpoint is not shared",
        )
    if not direct:
        return Verdict(
            False,
            f"no direct pair between the shared endpoints yet: {seen}",
            cause="no hole punch between the groups has succeeded yet: punches between the "
            "groups at the same time block each other (a losing punch leaves an unreplied "
            "conntrack entry on the shared 4-tuple for 120 s), so let one pair punch first "
            "(scenarios/library/shared-port.yaml holds the others back); else DCUtR off, or no "
            "relayed connection between them?",
        )
    if pending or not failed:
        return Verdict(
            False,
            f"1 direct pair, the others not decided: {seen}",
            cause="waiting for DCUtR between the other pairs to give up (or for them to be "
            "relayed at all)",
        )
    detail = f"exactly 1 of {len(pairs)} cross-NAT pairs is direct: {seen}. Why: {why}"
    return Verdict(True, detail, since=obs.t, data={"direct": 1, "failed": len(failed)})
