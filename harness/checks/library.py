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
- `connection_lost` / `back_at_configured_address`: a node behind NAT loses its link to a
  sentry that is itself behind NAT (reached through a port forward), then gets it back;
  it must reconnect to the forwarded public address it was configured with, not to an
  address the sentry advertises that it cannot reach (tendermint #1720: a validator
  redialed its sentry's internal address after a link loss and never recovered).

Pure functions of an `Observation`, like every check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.checks import Check, Observation, Verdict, ip_of, tcp_endpoint_of
from harness.checks.outside import direct_through_nats
from harness.checks.relay import (
    DcutrSeen,
    _direct_across_nat,
    _good_reservations,
    pair_history,
)
from node.contract import Event

GO_2963 = "go-libp2p #2963"
TENDERMINT_1720 = "tendermint #1720"
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


# ---------------------------------------------------------------------------------------
# reservation-refresh (js-libp2p #3571) and advertised-addrs (rust-libp2p #4618, #6165)
# ---------------------------------------------------------------------------------------
JS_3571 = "js-libp2p #3571"
RUST_4618 = "rust-libp2p #4618"
RUST_6165 = "rust-libp2p #6165"
REFRESH_BUG = (
    f"{JS_3571} (circuit-relay-v2: a refresh removed the still-connected reservation "
    "before re-making it and withdrew the advertised /p2p-circuit address; fixed by "
    "js-libp2p PR #3582, which keeps the reservation in place across a refresh)"
)
STALE_BUG = (
    f"{RUST_6165} (relay: the external /p2p-circuit address not removed when the "
    f"reservation's listener is gone) and {RUST_4618} (a reservation should add the "
    "external address and its expiry remove it)"
)


def circuit_relay(addr: str) -> str | None:
    """The relay peer id of `<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<us>]`, else None."""
    head, sep, _ = addr.partition("/p2p-circuit")
    if not sep or "/p2p/" not in head:
        return None
    return head.rpartition("/p2p/")[2] or None


def _relays_of(addrs: tuple[str, ...] | list[str] | None) -> set[str]:
    return {r for a in addrs or () if (r := circuit_relay(a))}


def _epoch_events(obs: Observation, name: str, epoch: int | None = None) -> list[Event]:
    """`name`'s events of one process epoch (the latest, by default)."""
    evs = obs.events_of(name)
    if not evs:
        return []
    want = max((e.epoch or 0) for e in evs) if epoch is None else epoch
    return [e for e in evs if (e.epoch or 0) == want]


def _names(obs: Observation, relays: set[str]) -> str:
    return "+".join(sorted(obs.name_of(r) for r in relays)) or "none"


@dataclass(frozen=True)
class Withdrawal:
    """An addrs_advertised event that dropped the circuit addresses through `relay`."""

    client: str
    relay: str
    ts: float | None
    expired: Event | None  # the reservation_expired that came before it, if any
    refreshed: Event | None  # the last reservation_refreshed of that relay before it


def withdrawals(obs: Observation, client: str, since: float | None = None) -> list[Withdrawal]:
    """Every withdrawal of a relay's circuit addresses from `client`'s advertised
    addresses (its addrs_advertised events, process by process), from `since` on."""
    out: list[Withdrawal] = []
    epochs = sorted({e.epoch or 0 for e in obs.events_of(client)})
    for ep in epochs:
        adv: set[str] = set()
        expired: dict[str, Event] = {}
        refreshed: dict[str, Event] = {}
        for e in _epoch_events(obs, client, ep):
            if e.type == "reservation_expired" and e.relay:
                expired[e.relay] = e
            elif e.type == "reservation_refreshed" and e.relay:
                refreshed[e.relay] = e
            elif e.type == "reservation_accepted" and e.relay:
                expired.pop(e.relay, None)
            elif e.type == "addrs_advertised":
                now = _relays_of(e.addrs)
                for r in sorted(adv - now):
                    if since is None or (e.ts is not None and e.ts >= since):
                        out.append(Withdrawal(client, r, e.ts, expired.get(r), refreshed.get(r)))
                adv = now
    return out


def _advertising(obs: Observation, client: str) -> bool:
    """`client` reports its advertised circuit addresses as events (addrs_advertised)."""
    return bool(obs.events_of(client, "addrs_advertised"))


def _refreshes(obs: Observation, client: str, relay: str, since: float | None) -> list[Event]:
    """`client`'s refreshes of its current reservation on `relay` (this process, after the
    reservation was made, from `since` on)."""
    evs = _epoch_events(obs, client)
    made = max(
        (i for i, e in enumerate(evs) if e.type == "reservation_accepted" and e.relay == relay),
        default=-1,
    )
    return [
        e
        for e in evs[made + 1 :]
        if e.type == "reservation_refreshed"
        and e.relay == relay
        and (since is None or (e.ts is not None and e.ts >= since))
    ]


def _mark_time(obs: Observation, since: str | None) -> tuple[float | None, Verdict | None]:
    if since is None:
        return None, None
    t0 = obs.marks.get(since)
    if not isinstance(t0, int | float):
        return None, Verdict(
            False,
            f"no time mark {since!r}",
            cause=f"add `- mark: time` with `as: {since}` before this step",
            data={"final": True},
        )
    return float(t0), None


def reservations_refreshed(min_refreshes: int = 2, since: str | None = None) -> Check:
    """Every relay client refreshed each reservation it holds at least `min_refreshes`
    times (its reservation_refreshed events since the reservation was made, and since
    marks[since] when given), renewing it in place: no reservation_expired and
    reservation_accepted again on the same relay instead (js-libp2p #3571)."""

    def check(obs: Observation) -> Verdict:
        t0, bad = _mark_time(obs, since)
        if bad is not None:
            return bad
        clients = [c for c in obs.clients() if obs.nodes[c].has_api]
        missing = obs.missing(clients)
        if missing:
            return Verdict(False, f"no /status from {', '.join(missing)}")
        short: list[str] = []
        done: list[str] = []
        remade: list[str] = []
        times: list[float] = []
        for c in clients:
            held = [r.relay for r in obs.status_of(c).reservations]
            if not held:
                short.append(f"{c} holds no reservation")
            for rel in held:
                refs = _refreshes(obs, c, rel, t0)
                label = f"{c}->{obs.name_of(rel)} {len(refs)}x"
                if len(refs) >= min_refreshes:
                    done.append(label)
                    if refs[min_refreshes - 1].ts is not None and min_refreshes > 0:
                        times.append(float(refs[min_refreshes - 1].ts))  # type: ignore[arg-type]
                else:
                    short.append(label)
            for e in _epoch_events(obs, c):
                if e.type != "reservation_expired" or not (e.reason or "").startswith("refresh"):
                    continue
                if t0 is not None and (e.ts is None or e.ts < t0):
                    continue
                remade.append(f"{c}->{obs.name_of(e.relay)} at {e.ts or 0:.1f}s ({e.reason})")
        after = f" since {t0:.1f}s" if t0 is not None else ""
        head = f"refreshes of each held reservation{after} (want >= {min_refreshes})"
        if remade:
            return Verdict(
                False,
                f"{head}: a refresh dropped the reservation: {'; '.join(remade[:4])}",
                cause=f"the refresh failed and the reservation went with it; if the relay "
                f"was still connected, this is {REFRESH_BUG}",
            )
        if short:
            return Verdict(
                False,
                f"{head}: short: {', '.join(short)}; done: {', '.join(done) or 'none'}",
                cause="a refresh is due at 3/4 of the reservation TTL (the relays' "
                "relay.reservation_ttl_s): not due yet, or the client does not refresh "
                "(no reservation_refreshed: a node without the event, or reservations "
                "re-made instead of renewed)",
            )
        return Verdict(
            True,
            f"every client refreshed each reservation in place{after} "
            f"(>= {min_refreshes}x, no reservation dropped by a refresh): {', '.join(done)}",
            since=max(times) if times else obs.t,
        )

    return check


def _behind(obs: Observation, relay_id: str, network: str) -> bool:
    """Is this relay reached through `network`'s router (not on that network itself)?"""
    relay = obs.nodes.get(obs.name_of(relay_id))
    return relay is None or network not in relay.addresses


def reservations_recovered(network: str, since: str) -> Check:
    """After marks[since] (a rebind of `network`'s router: a new public address, every
    mapping gone, so every connection through it is dead), each relay client behind that
    router holds a reservation on each relay it reaches through the router (those it
    reserved on in the run or holds now), on a connection opened after the mark: reserved
    again (reservation_accepted), or kept across a new connection that was up before the old
    one closed (a relay keeps a reservation while any connection to the peer lives, circuit
    relay v2). Relays on the client's own network are not behind the router: nothing asked."""

    def check(obs: Observation) -> Verdict:
        t0, bad = _mark_time(obs, since)
        if bad is not None:
            return bad
        assert t0 is not None
        clients = [
            c
            for c in obs.clients()
            if obs.nodes[c].has_api and obs.only_private(c) and obs.home(c) == network
        ]
        if not clients:
            return Verdict(
                False,
                f"no relay client lives behind {network}'s router",
                cause="name the private network whose router was rebound",
                data={"final": True},
            )
        missing = obs.missing(clients)
        if missing:
            return Verdict(False, f"no /status from {', '.join(missing)}")
        done: list[str] = []
        short: list[str] = []
        times: list[float] = []
        for c in clients:
            held = {r.relay for r in obs.status_of(c).reservations}
            accepted = obs.events_of(c, "reservation_accepted")
            # the relays it reserved on in this run or holds now, however it found them
            ids = held | {e.relay for e in accepted if e.relay}
            through = sorted(obs.name_of(rid) for rid in ids if _behind(obs, rid, network))
            if not through:
                short.append(f"{c} had no reservation through the router to judge")
            for relay in through:
                verdict, at = _recovered(obs, c, relay, t0, obs.peer_id(relay) in held)
                (done if at is not None else short).append(verdict)
                if at is not None:
                    times.append(at)
        head = f"reservations through {network}'s router since {since} ({t0:.1f}s)"
        if short:
            return Verdict(
                False,
                f"{head}: missing {', '.join(short)}; done: {', '.join(done) or 'none'}",
                cause="the client did not notice that its connection through the rebound "
                "router died (no keepalive failure, no redial), so the reservation it lists "
                "lives on a connection that is gone; or it redialled without reserving again",
            )
        return Verdict(True, f"{head}: {', '.join(done)}", since=max(times) if times else obs.t)

    return check


def _recovered(
    obs: Observation, client: str, relay: str, t0: float, held: bool
) -> tuple[str, float | None]:
    """(what happened to client's reservation on relay after t0, when it was whole again)."""
    rid = obs.peer_id(relay)
    after = [(float(e.ts), e) for e in obs.events_of(client) if e.ts is not None and e.ts >= t0]
    renewed = ("reservation_accepted", "reservation_refreshed")  # a refresh moves it too
    made = [ts for ts, e in after if e.type in renewed and e.relay == rid]
    opened = [ts for ts, e in after if e.type == "connection_opened" and e.peer == rid]
    label = f"{client}->{relay}"
    if held and made:
        return f"{label} reserved again at +{made[0] - t0:.1f}s", made[0]
    if held and opened:
        return f"{label} kept on a new connection from +{opened[0] - t0:.1f}s", opened[0]
    if made:
        return f"{label} reserved again at +{made[0] - t0:.1f}s but not held now", None
    if held:
        return f"{label} still listed as held, on no connection opened since", None
    return f"{label} not held and not reserved again", None


def circuit_addrs_kept(since: str | None = None) -> Check:
    """The circuit addresses of every relay client stayed advertised across its refreshes:
    no addrs_advertised event of the run (from marks[since] when given) dropped a relay's
    /p2p-circuit address except because the connection to that relay closed (a withdrawal
    that must happen, listed in the detail), each held reservation's address is in /status
    advertised_addrs now, and at least one refresh happened (else nothing was shown)."""

    def check(obs: Observation) -> Verdict:
        t0, bad = _mark_time(obs, since)
        if bad is not None:
            return bad
        clients = [c for c in obs.clients() if obs.nodes[c].has_api]
        silent = [c for c in clients if c in obs.status and not _advertising(obs, c)]
        if silent:
            return Verdict(
                False,
                f"no addrs_advertised events from {', '.join(silent)}",
                cause="the node does not report its advertised circuit addresses as events "
                "(an image from before addrs_advertised? rebuild it)",
                data={"final": True},
            )
        lost: list[str] = []
        dropped: list[str] = []  # withdrawn because the relay connection went: not a refresh
        now_missing: list[str] = []
        refreshes = 0
        kept: list[str] = []
        for c in clients:
            for w in withdrawals(obs, c, t0):
                if w.expired is not None and w.expired.reason == "connection_closed":
                    dropped.append(
                        f"{c} lost its connection to {obs.name_of(w.relay)} at {w.ts or 0:.1f}s "
                        "(withdrawn for that, then reserved again)"
                    )
                    continue
                why = (
                    f"after reservation_expired ({w.expired.reason})"
                    if w.expired is not None
                    else "with no reservation_expired"
                )
                near = (
                    f", {(w.ts or 0) - (w.refreshed.ts or 0):.1f}s after a refresh"
                    if w.refreshed is not None and w.refreshed.ts is not None
                    else ""
                )
                lost.append(f"{c} withdrew {obs.name_of(w.relay)} at {w.ts or 0:.1f}s {why}{near}")
            st = obs.status_of(c)
            held = {r.relay for r in st.reservations}
            adv = _relays_of(st.advertised_addrs)
            if held - adv:
                now_missing.append(f"{c}: holds {_names(obs, held)}, advertises {_names(obs, adv)}")
            n = sum(
                1
                for e in obs.events_of(c, "reservation_refreshed")
                if t0 is None or (e.ts is not None and e.ts >= t0)
            )
            refreshes += n
            kept.append(f"{c} {_names(obs, adv)} ({n} refreshes)")
        if lost or now_missing:
            return Verdict(
                False,
                "circuit addresses withdrawn: " + "; ".join(lost[:4] + now_missing[:4]),
                cause=f"a reservation renewed at its refresh must stay advertised; a "
                f"withdrawal next to a refresh while the relay stayed connected is "
                f"{REFRESH_BUG}",
                data={"final": bool(lost)},
            )
        if refreshes == 0:
            return Verdict(
                False,
                "no refresh yet, so nothing shows the addresses surviving one",
                cause="wait past 3/4 of the relays' relay.reservation_ttl_s",
            )
        return Verdict(
            True,
            f"no circuit address withdrawn by any of {refreshes} refreshes "
            f"(addrs_advertised events, /status advertised_addrs now): {', '.join(kept)}"
            + (f"; not refreshes: {'; '.join(dropped)}" if dropped else ""),
            since=obs.t,
        )

    return check


def _probes(obs: Observation, key: str) -> list[dict[str, Any]]:
    recs = obs.marks.get(key)
    return [r for r in recs if isinstance(r, dict)] if isinstance(recs, list) else []


def _no_probe(key: str, action: str) -> Verdict:
    """The verdict when no `action` recorded anything under marks[key]: final."""
    return Verdict(
        False,
        f"no probe recorded as {key!r}",
        cause=f"add `- action: {action}` with `as: {key}` before this check",
        data={"final": True},
    )


def circuit_dial_ok(probe: str) -> Check:
    """Every probe recorded under marks[probe] (action `probe`, mode dial: a new host with
    a fresh key dialed the target's advertised circuit address through the relay and
    pinged it) succeeded, and each came after a refresh of the target's reservation on that
    relay, or a new one (between the previous probe and this one): the dial proves that
    very reservation."""

    def check(obs: Observation) -> Verdict:
        recs = _probes(obs, probe)
        if not recs:
            return _no_probe(probe, "probe")
        said: list[str] = []
        failed: list[str] = []
        prev = None
        for i, r in enumerate(recs, 1):
            target, relay = str(r.get("target")), str(r.get("via"))
            at = float(r.get("at") or 0.0)
            rid = obs.peer_id(relay)
            refs = [
                e.ts
                for e in obs.events_of(target, "reservation_refreshed", "reservation_accepted")
                if e.relay == rid
                and e.ts is not None
                and e.ts <= at
                and (prev is None or e.ts > prev)
            ]
            prev = at
            what = f"#{i} {r.get('from')} -> {target} via {relay} at {at:.1f}s"
            if not r.get("ok"):
                failed.append(f"{what}: {r.get('error')} (dialed {r.get('addr')})")
                continue
            if not refs:
                failed.append(
                    f"{what}: ok, but no refresh or new reservation of {target} on {relay} "
                    "before it"
                )
                continue
            said.append(
                f"{what} ok, rtt {float(r.get('rtt_s') or 0) * 1000:.1f} ms, "
                f"{at - max(refs):.1f}s after a refresh"
            )
        if failed:
            return Verdict(
                False,
                "fresh circuit dials: " + "; ".join(failed + said),
                cause="the circuit address peers are told did not take a new peer to the "
                "target: the relay lost the reservation at the refresh (NO_RESERVATION), or "
                f"the target stopped answering over it ({REFRESH_BUG})"
                if any(not r.get("ok") for r in recs)
                else "the probe ran before the target's refresh: wait for "
                "reservations_refreshed first",
                data={"final": any(not r.get("ok") for r in recs)},
            )
        return Verdict(
            True,
            f"{len(recs)} fresh circuit dial(s), a new peer id each, through the advertised "
            f"address after a refresh: {'; '.join(said)}",
            since=float(recs[-1].get("at") or obs.t),
        )

    return check


def advertised_while_reserved(obs: Observation) -> Verdict:
    """Every relay client advertises a relay's /p2p-circuit address exactly while it holds
    a reservation on that relay: in /status now (advertised_addrs against reservations),
    and at every change of the run (each addrs_advertised event against the reservations
    held at that moment, from reservation_accepted / reservation_expired)."""
    clients = [c for c in obs.clients() if obs.nodes[c].has_api]
    missing = obs.missing(clients)
    if missing:
        return Verdict(False, f"no /status from {', '.join(missing)}")
    without: list[str] = []  # advertised with no reservation (#6165)
    unsaid: list[str] = []  # a reservation not advertised (#4618)
    shown: list[str] = []
    changes = 0
    for c in clients:
        st = obs.status_of(c)
        held = {r.relay for r in st.reservations}
        adv = _relays_of(st.advertised_addrs)
        if adv - held:
            without.append(f"{c} advertises {_names(obs, adv - held)} now without a reservation")
        if held - adv:
            unsaid.append(f"{c} holds {_names(obs, held - adv)} now but does not advertise it")
        for ep in sorted({e.epoch or 0 for e in obs.events_of(c)}):
            hold: set[str] = set()
            for e in _epoch_events(obs, c, ep):
                if e.type == "reservation_accepted" and e.relay:
                    hold.add(e.relay)
                elif e.type == "reservation_expired" and e.relay:
                    hold.discard(e.relay)
                elif e.type == "addrs_advertised":
                    changes += 1
                    a = _relays_of(e.addrs)
                    if a - hold:
                        without.append(
                            f"{c} advertised {_names(obs, a - hold)} at {e.ts or 0:.1f}s "
                            "without a reservation"
                        )
                    if hold - a:
                        unsaid.append(
                            f"{c} held {_names(obs, hold - a)} at {e.ts or 0:.1f}s "
                            "without advertising it"
                        )
        shown.append(f"{c} {_names(obs, held)}")
    if without or unsaid:
        cause = []
        if without:
            cause.append(f"a circuit address outlived its reservation: {STALE_BUG}")
        if unsaid:
            cause.append(
                f"a reservation was not advertised: {RUST_4618} (a reservation must add the "
                "external address, or peers are never told how to reach the node)"
            )
        return Verdict(False, "; ".join((without + unsaid)[:6]), cause="; ".join(cause))
    if changes == 0:
        return Verdict(
            False,
            "no addrs_advertised event from any client",
            cause="the node does not report its advertised circuit addresses as events "
            "(an image from before addrs_advertised? rebuild it)",
        )
    return Verdict(
        True,
        f"circuit addresses advertised exactly while reserved, now (/status) and at all "
        f"{changes} changes of the run (addrs_advertised vs reservation events): "
        + ", ".join(shown),
        since=obs.t,
    )


def circuit_addrs_withdrawn(relay: str, within: int = 30) -> Check:
    """After action kill-relay killed `relay` (marks reserved_on / killed_at), every client
    that held a reservation on it stopped advertising its circuit addresses through it
    within `within` seconds (its addrs_advertised events, and /status now), while it kept
    advertising those of every relay it still holds a reservation on."""

    def check(obs: Observation) -> Verdict:
        killed = (obs.marks.get("killed_at") or {}).get(relay)
        holders = (obs.marks.get("reserved_on") or {}).get(relay)
        if not isinstance(killed, int | float) or holders is None:
            return Verdict(
                False,
                f"no kill of {relay} recorded",
                cause=f"add `- action: kill-relay` with `node: {relay}` before this check",
                data={"final": True},
            )
        if not holders:
            return Verdict(
                False,
                f"no client held a reservation on {relay} when it was killed",
                cause="kill the relay after the clients reserved on it (check reservations first)",
                data={"final": True},
            )
        rid = obs.peer_id(relay) or ""
        late: list[str] = []
        pending: list[str] = []
        done: list[str] = []
        lost_other: list[str] = []
        worst = 0.0
        for c in holders:
            gone = [w for w in withdrawals(obs, c, killed) if w.relay == rid and w.ts is not None]
            st = obs.status_of(c)
            adv_now = _relays_of(st.advertised_addrs)
            if not gone and rid not in adv_now and c in obs.status:
                # restarted meanwhile, or the event came in an older process: /status says
                gone_at = None
            elif not gone:
                waited = obs.t - killed
                if waited > within:
                    late.append(f"{c} still advertises {relay} {waited:.0f}s after the kill")
                else:
                    pending.append(f"{c} still advertises {relay} ({waited:.0f}s)")
                continue
            else:
                gone_at = gone[0].ts
            took = (gone_at - killed) if gone_at is not None else None
            if took is not None and took > within:
                late.append(f"{c} withdrew {relay} only {took:.1f}s after the kill")
                continue
            if took is not None:
                worst = max(worst, took)
            # the relays it still holds stayed advertised since the kill
            still = {r.relay for r in st.reservations} - {rid}
            dropped = {w.relay for w in withdrawals(obs, c, killed) if w.relay in still} | (
                still - adv_now
            )
            if dropped:
                lost_other.append(f"{c} lost {_names(obs, dropped)} too")
            how = f"in {took:.1f}s" if took is not None else "(gone from /status)"
            reason = next(
                (
                    e.reason
                    for e in obs.events_of(c, "reservation_expired")
                    if e.relay == rid and e.ts is not None and e.ts >= killed
                ),
                None,
            )
            done.append(
                f"{c} withdrew {relay} {how}"
                + (f" (reservation_expired: {reason})" if reason else "")
                + f", still advertises {_names(obs, adv_now - {rid})}"
            )
        if late:
            return Verdict(
                False,
                f"{relay} killed at {killed:.1f}s: " + "; ".join(late + pending + done),
                cause=f"the client kept telling peers a circuit address through a dead relay "
                f"past {within}s: {STALE_BUG}",
                data={"final": True},
            )
        if lost_other:
            return Verdict(
                False,
                f"{relay} killed at {killed:.1f}s: " + "; ".join(lost_other + done),
                cause="the withdrawal also took the circuit addresses of relays the client "
                "still holds a reservation on",
                data={"final": True},
            )
        if pending:
            return Verdict(
                False,
                f"{relay} killed at {killed:.1f}s: " + "; ".join(pending + done),
                cause=f"waiting for the clients to notice the dead relay (liveness pings); "
                f"past {within}s this is {STALE_BUG}",
            )
        return Verdict(
            True,
            f"{relay} killed at {killed:.1f}s: every client that held a reservation on it "
            f"withdrew its circuit addresses within {within}s (slowest {worst:.1f}s): "
            + "; ".join(done),
            since=killed + worst,
        )

    return check


def identify_agrees(probe: str) -> Check:
    """The last identify probe recorded under marks[probe] (a new host asked the target for
    identify over a circuit): the /p2p-circuit addresses the target tells peers name
    exactly the relays it held a reservation on at that moment (its /status around the
    probe)."""

    def check(obs: Observation) -> Verdict:
        recs = [r for r in _probes(obs, probe) if r.get("mode") == "identify"]
        if not recs:
            return Verdict(
                False,
                f"no identify probe recorded as {probe!r}",
                cause=f"add `- action: probe` with `mode: identify`, `as: {probe}`",
                data={"final": True},
            )
        r = recs[-1]
        target = str(r.get("target"))
        what = f"identify of {target} from {r.get('from')} via {r.get('via')} at " + (
            f"{float(r.get('at') or 0):.1f}s"
        )
        if not r.get("ok"):
            return Verdict(
                False,
                f"{what} failed: {r.get('error')} (dialed {r.get('addr')})",
                cause="the probe could not reach the target through the circuit address it "
                "advertises",
                data={"final": True},
            )
        told = _relays_of(r.get("listen_addrs") or [])
        sets = [set(x) for x in (r.get("held_before") or [], r.get("held_after") or [])]
        names = [_names(obs, s) for s in sets]
        if told not in sets:
            extra = told - sets[0] - sets[1]
            cause = (
                f"identify tells peers a circuit address without a reservation: {STALE_BUG}"
                if extra
                else f"identify leaves out a held reservation: {RUST_4618}"
            )
            return Verdict(
                False,
                f"{what}: identify names relays {_names(obs, told)}, reservations held "
                f"{names[0]} (before) / {names[1]} (after)",
                cause=cause,
                data={"final": True},
            )
        return Verdict(
            True,
            f"{what}: identify tells peers circuit addresses through {_names(obs, told)}, "
            f"exactly the relays {target} holds a reservation on "
            f"({len(r.get('listen_addrs') or [])} listen addrs)",
            since=float(r.get("at") or obs.t),
        )

    return check


def connection_lost(node: str, peer: str, since: str) -> Check:
    """`node` closed its connection to `peer` after marks[since] (its link was cut: ping
    failures end the connection), so what follows is a reconnection, not the old one."""

    def check(obs: Observation) -> Verdict:
        t0, bad = _mark_time(obs, since)
        if bad is not None:
            return bad
        assert t0 is not None
        pid = obs.peer_id(peer)
        closed = [
            e
            for e in obs.events_of(node, "connection_closed")
            if e.peer == pid and e.ts is not None and e.ts >= t0
        ]
        if not closed:
            left = [c.remote_addr for c in obs.connections(node, peer)]
            return Verdict(
                False,
                f"{node} still has {len(left)} connection(s) to {peer} since the cut at "
                f"{t0:.1f}s ({', '.join(map(str, left)) or 'none listed'}) and closed none",
                cause=f"{node}'s liveness pings have not given up on {peer} yet "
                "(p2p.ping_interval_s x failures), or the cut did not take",
            )
        first = min(float(e.ts or 0.0) for e in closed)
        reasons = sorted({str(e.reason) for e in closed})
        return Verdict(
            True,
            f"{node} closed its connection to {peer} at {first:.1f}s ({', '.join(reasons)}), "
            f"{first - t0:.1f}s after the cut",
            since=first,
        )

    return check


def back_at_configured_address(node: str, relay: str, since: str) -> Check:
    """After its link came back (a cut marked at marks[since]), `node` holds a reservation
    on `relay` over a direct connection opened after the mark to the address it was
    configured with (the model's path: behind NAT, the router's forwarded public port),
    not to another address the relay advertises (tendermint #1720). A connection the relay
    opened to the node from the same router (DCUtR through another relay, from its own
    mapping) also passes, when the node itself dialed no other address since the mark."""

    def check(obs: Observation) -> Verdict:
        t0, bad = _mark_time(obs, since)
        if bad is not None:
            return bad
        assert t0 is not None
        model = obs.nodes[node]
        if relay not in model.relay_servers:
            return Verdict(
                False,
                f"{relay} is not among {node}'s relay_servers {list(model.relay_servers)}",
                cause="name a relay the node is configured with",
                data={"final": True},
            )
        want = model.relay_server_addrs[model.relay_servers.index(relay)]
        if node not in obs.status:
            return Verdict(False, f"no /status from {node} ({obs.unreachable.get(node, '')})")
        pid = obs.peer_id(relay)
        opened = [
            e
            for e in obs.events_of(node, "connection_opened")
            if e.peer == pid and e.ts is not None and e.ts >= t0 and e.kind == "direct"
        ]
        tried = sorted({str(e.remote_addr) for e in opened})
        live = [
            c
            for c in obs.connections(node, relay)
            if c.kind == "direct" and (obs.to_t(node, c.opened_at) or -1.0) >= t0
        ]
        good = [c for c in live if tcp_endpoint_of(c.remote_addr) == tcp_endpoint_of(want)]
        held = any(r.relay == pid for r in obs.status_of(node).reservations)
        # The relay may reach the node first (its circuit through another relay, then a DCUtR
        # punch from its own mapping on the same router): an inbound connection from the
        # configured address's host is no address the node chose. It passes when the node
        # dialed nothing else since the cut; its own dials are what #1720 is about.
        dialed = sorted({str(e.remote_addr) for e in opened if e.direction == "outbound"})
        dialed_elsewhere = [a for a in dialed if tcp_endpoint_of(a) != tcp_endpoint_of(want)]
        reached = [
            c for c in live if c.direction == "inbound" and ip_of(c.remote_addr) == ip_of(want)
        ]
        if not good and reached and held and not dialed_elsewhere:
            at = min(obs.to_t(node, c.opened_at) or t0 for c in reached)
            return Verdict(
                True,
                f"{relay} reached {node} first, {at - t0:.1f}s after the cut, inbound from "
                f"{reached[0].remote_addr} (its own mapping on the same router, e.g. a DCUtR "
                f"punch), and {node} holds a reservation on it; {node} dialed "
                f"{', '.join(dialed) or 'nothing'} since the cut, no other address of {relay}",
                since=at,
            )
        if good and held:
            at = min(obs.to_t(node, c.opened_at) or t0 for c in good)
            return Verdict(
                True,
                f"{node} is back on {relay} at its configured address {want} (connection "
                f"opened at {at:.1f}s, {at - t0:.1f}s after the cut) and holds a "
                f"reservation on it; connections opened since the cut: {', '.join(tried)}",
                since=at,
            )
        elsewhere = [a for a in tried if tcp_endpoint_of(a) != tcp_endpoint_of(want)]
        if elsewhere and not good:
            cause = (
                f"{node} reconnected to {relay} at {', '.join(elsewhere)}, not at the "
                f"configured {want}: it redials an address the relay advertises instead "
                f"of the one it was given ({TENDERMINT_1720})"
            )
        elif not opened:
            cause = (
                f"{node} has not reconnected to {relay} since the cut: it does not redial "
                f"a configured relay it lost, or dials an address it cannot reach "
                f"({TENDERMINT_1720}: a validator redials its sentry's internal address)"
            )
        else:
            cause = f"{node} is connected to {relay} at {want} but holds no reservation on it"
        return Verdict(
            False,
            f"{node} -> {relay} since the cut at {t0:.1f}s: live connections at "
            f"{[str(c.remote_addr) for c in live] or 'none'}, reservation "
            f"{'held' if held else 'not held'}; want {want}",
            cause=cause,
        )

    return check


def forward_dial_ok(probe: str) -> Check:
    """Every probe recorded under marks[probe] (action `probe-forward`: a new host dialed
    the target at its router's port forward and pinged it) succeeded. From behind the
    same router that is hairpinning (RFC 4787 REQ-9; spacemesh #5510, hoprnet #4450: nodes
    behind one NAT that learn each other only by the public address); a failure there on
    a router with `hairpin: false` is what that router does, and the verdict says so."""

    def check(obs: Observation) -> Verdict:
        recs = _probes(obs, probe)
        if not recs:
            return _no_probe(probe, "probe-forward")
        said: list[str] = []
        failed: list[str] = []
        no_hairpin = False
        for r in recs:
            side = "from behind it (hairpin)" if r.get("same_side") else "from outside"
            what = (
                f"{r.get('from')} -> {r.get('target')} at {r.get('addr')} via {r.get('via')} {side}"
            )
            if r.get("ok"):
                said.append(f"{what}: ok, rtt {float(r.get('rtt_s') or 0) * 1000:.1f} ms")
            else:
                failed.append(f"{what}: {r.get('error')}")
                no_hairpin |= bool(r.get("same_side")) and not r.get("hairpin")
        if failed:
            cause = (
                "the router does not hairpin (topology `hairpin: false`): a host behind it "
                "cannot reach the router's public address; peers behind one NAT must use "
                "each other's private addresses"
                if no_hairpin
                else "the forward did not reach the node: see the probe's error (the "
                "router's DNAT rule, the node's listener on the forwarded port)"
            )
            return Verdict(
                False,
                f"{len(failed)} of {len(recs)} failed: {'; '.join(failed)}",
                cause=cause,
                data={"final": True},
            )
        return Verdict(True, "; ".join(said))

    return check
