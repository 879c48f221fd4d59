"""Relay checks: reservations, relayed circuits, DCUtR upgrades and relay failover.

Each function reads an `Observation` and returns a `Verdict`; when the condition does not
hold, `cause` names the failure mode from the relay integration that never worked
(docs/design.md "Why sentrynet exists"): no IP path to the relay, RESERVE never sent, a
reservation with no addresses, no relay both ends can reach, no circuit address advertised
or dialed, DCUtR not tried or defeated by the NAT, a relayed connection left open after the
upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.checks import Check, Observation, Verdict, earliest, ip_of, latest
from harness.checks.outside import direct_through_nats
from node.contract import Connection, DcutrAttempt, Event, Grant, Reservation


@dataclass(frozen=True)
class Good:
    """A reservation that counts, with the relay's name and the address it was found at."""

    res: Reservation
    relay_name: str
    candidate_addr: str | None


@dataclass(frozen=True)
class DcutrSeen:
    """One DCUtR outcome a node reported (an event or a /status row), in harness time."""

    node: str
    ts: float | None
    role: str | None = None
    reason: str | None = None
    duration_s: float | None = None
    addr: str | None = None
    final: bool | None = None  # None: the node did not say whether it was the last attempt

    @classmethod
    def of(cls, node: str, ts: float | None, e: Event | DcutrAttempt) -> DcutrSeen:
        return cls(node, ts, e.role, e.reason, e.duration_s, e.addr, e.final)


# ---------------------------------------------------------------------------------------
# reservations
# ---------------------------------------------------------------------------------------
def _good_reservations(obs: Observation, name: str) -> tuple[list[Good], list[str]]:
    """A client's reservations that count, and what is wrong with the ones that do not.

    Counts: on a relay whose peer id the node learned at run time — a relay_candidates entry
    from a configured address without /p2p/<id> (source `config`, matched via identify) or
    one found through identify alone (source `identify`) — with addresses to hand out.
    """
    st = obs.status_of(name)
    cands = {c.peer: c for c in st.relay_candidates}
    good: list[Good] = []
    problems: list[str] = []
    for r in st.reservations:
        relay = r.relay
        rname = obs.name_of(relay)
        cand = cands.get(relay)
        addrs = [str(a) for a in r.addrs]
        if cand is None:
            problems.append(f"reservation on {rname} but {rname} is not among relay_candidates")
        elif "/p2p/" in str(cand.addr or ""):
            problems.append(
                f"{rname} was configured with its peer id ({cand.addr}), not discovered"
            )
        elif cand.source not in ("config", "identify"):
            problems.append(f"{rname} candidate source is {cand.source!r}")
        elif not addrs:
            problems.append(f"reservation on {rname} carries no addresses")
        elif any("/0.0.0.0/" in a or "/::/" in a for a in addrs):
            problems.append(f"reservation on {rname} hands out a wildcard address {addrs}")
        else:
            good.append(Good(r, rname, cand.addr))
    return good, problems


def _reservation_cause(obs: Observation, name: str, problems: list[str]) -> str:
    """Why `name` holds no usable reservation, in terms of the known failure modes."""
    if name not in obs.status:
        return f"{name} is not answering /status ({obs.unreachable.get(name, 'not started')})"
    cands = obs.status[name].relay_candidates
    denied = obs.events_of(name, "reservation_denied")
    if any("no addresses" in p or "wildcard" in p for p in problems):
        return (
            "the relay answered with no usable addresses: a relay with no confirmed external "
            "address (or listening on 0.0.0.0) sends empty reservations; rust clients fail "
            "with NoAddressesInReservation"
        )
    if any("configured with its peer id" in p for p in problems):
        return "relay_servers carry /p2p/<id>: the scenario requires discovery via identify"
    reachable = (obs.marks.get("reach_relays") or {}).get(name)
    if not cands and reachable:
        return (
            f"{name} never identified a relay, although the topology gives it an IP path to "
            f"{', '.join(reachable)} (harness/model/reach.py): the connection or the identify "
            "exchange with the relay never completed (see its connection events and log)"
        )
    if not cands:
        return (
            f"{name} never identified a relay at its relay_servers address: no IP path from "
            f"network {obs.home(name)} to the relay, or the relay is down (the seed testnet: "
            "a validator in A had no route to any relay B could reach)"
        )
    if denied:
        last = denied[-1]
        return f"relay {obs.name_of(last.relay)} denied the reservation: {last.reason}"
    relays = ", ".join(f"{obs.name_of(c.peer)} ({c.addr})" for c in cands)
    return (
        f"{name} identified {relays} but no reservation was accepted and none denied: RESERVE "
        "was never sent or never answered (the seed: listen_on(<relay>/p2p-circuit) returned "
        "Ok and nothing reached the relay — the relay client behaviour was not being polled)"
    )


def granted_by_relays(obs: Observation, name: str) -> list[tuple[str, Grant]]:
    """(relay, grant) for every reservation a relay's /status says it holds for `name`:
    the evidence for a client that serves no API (`api: none`)."""
    pid = obs.peer_id(name)
    found: list[tuple[str, Grant]] = []
    for relay in sorted(obs.status):
        rs = obs.status[relay].relay_server
        for g in rs.granted if rs is not None and pid else ():
            if g.peer == pid:
                found.append((relay, g))
    return found


def _api_less_reservation(obs: Observation, name: str) -> tuple[list[str], float | None, str]:
    """Relays holding a reservation for api-less `name`, when, and the cause if none."""
    grants = granted_by_relays(obs, name)
    if grants:
        since = earliest(obs.to_t(relay, g.accepted_at) for relay, g in grants)
        return sorted({relay for relay, _ in grants}), since, ""
    relays = [r for r in sorted(obs.status) if obs.status[r].relay_server is not None]
    return (
        [],
        None,
        f"{name} serves no API (`api: none`), and no relay that does "
        f"({', '.join(relays) or 'none'}) "
        f"records a reservation for its peer id {obs.peer_id(name)}: it never reserved, or "
        "reserved on a relay the harness cannot read",
    )


def reservations(obs: Observation) -> Verdict:
    """Every relay client holds >= 1 reservation on a relay discovered at run time.

    Evidence: the client's own /status (relay_candidates says the relay was found at run
    time); for a client with `api: none`, the relays' /status (`relay_server.granted`)."""
    clients = obs.clients()
    if not clients:
        return Verdict(False, "the topology has no relay clients", cause="topology")
    held: list[str] = []
    missing: list[str] = []
    cause: str | None = None
    per_client_since: list[float | None] = []
    data: dict[str, list[str]] = {}
    evidence: dict[str, str] = {}
    for name in clients:
        if not obs.nodes[name].has_api:
            relays, since, why = _api_less_reservation(obs, name)
            if not relays:
                missing.append(f"{name}: no relay records a reservation for it")
                cause = cause or why
                continue
            data[name] = relays
            evidence[name] = f"granted in {'+'.join(relays)}'s /status relay_server"
            held.append(f"{name}->{'+'.join(relays)} [relay records; {name} has api: none]")
            per_client_since.append(since)
            continue
        evidence[name] = f"{name}'s /status"
        good, problems = _good_reservations(obs, name)
        if not good:
            seen = "; ".join(problems) or "no reservations"
            missing.append(f"{name}: {seen}")
            cause = cause or _reservation_cause(obs, name, problems)
            continue
        relays = sorted({g.relay_name for g in good})
        data[name] = relays
        held.append(f"{name}->{'+'.join(relays)}")
        relay_ids = {g.res.relay for g in good}
        accepted = [
            e.ts for e in obs.events_of(name, "reservation_accepted") if e.relay in relay_ids
        ]
        from_status = [obs.to_t(name, g.res.accepted_at) for g in good]
        per_client_since.append(earliest([*accepted, *from_status]))
    if missing:
        detail = f"{len(held)}/{len(clients)} clients hold a reservation; missing: " + "; ".join(
            missing
        )
        if held:
            detail += f" (held: {', '.join(held)})"
        return Verdict(False, detail, cause=cause, data={"held": data, "evidence": evidence})
    detail = f"all {len(clients)} clients hold reservations on relays identified at run time: "
    detail += ", ".join(held)
    first = next((n for n in data if obs.nodes[n].has_api), None)
    if first is not None:
        example = _good_reservations(obs, first)[0][0]
        detail += (
            f" (e.g. {first}: {example.relay_name} identified at {example.candidate_addr} "
            f"[no peer id configured], circuit addrs {list(example.res.addrs)})"
        )
    since = None if None in per_client_since else latest(per_client_since)
    return Verdict(True, detail, since=since, data={"held": data, "evidence": evidence})


# ---------------------------------------------------------------------------------------
# relayed circuits
# ---------------------------------------------------------------------------------------
@dataclass
class PairHistory:
    """What the nodes reported about one cross-network pair (a, b)."""

    a: str
    b: str
    relayed_at: float | None = None  # first evidence of a relayed connection/circuit
    relays: set[str] = field(default_factory=set)
    relayed_now: list[str] = field(default_factory=list)  # "a sees relayed via X"
    direct_now: list[tuple[str, Connection]] = field(default_factory=list)
    relayed_closed_at: float | None = None
    dcutr_ok: list[DcutrSeen] = field(default_factory=list)
    dcutr_failed: list[DcutrSeen] = field(default_factory=list)
    dcutr_started: list[DcutrSeen] = field(default_factory=list)

    @property
    def had_relayed(self) -> bool:
        return self.relayed_at is not None or bool(self.relayed_now)


def pair_history(obs: Observation, a: str, b: str) -> PairHistory:
    h = PairHistory(a, b)
    ids = {a: obs.peer_id(a), b: obs.peer_id(b)}
    times: list[float | None] = []
    for me, other in ((a, b), (b, a)):
        pid = ids[other]
        if pid is None:
            continue
        for c in obs.connections(me, other):
            if c.kind == "relayed":
                relay = obs.name_of(c.relay) if c.relay else "?"
                h.relays.add(relay)
                h.relayed_now.append(f"{me} sees {other} relayed via {relay}")
                times.append(obs.to_t(me, c.opened_at))
            elif c.kind == "direct":
                h.direct_now.append((me, c))
        for e in obs.events_of(me, "connection_opened"):
            if e.peer == pid and e.kind == "relayed":
                times.append(e.ts)
        for e in obs.events_of(me, "circuit_opened"):
            if {e.src, e.dst} == {ids[a], ids[b]}:
                times.append(e.ts)
        for e in obs.events_of(me, "connection_closed"):
            if e.peer == pid and e.kind == "relayed":
                h.relayed_closed_at = latest([h.relayed_closed_at, e.ts])
        for e in obs.events_of(me, "dcutr_succeeded"):
            if e.peer == pid:
                h.dcutr_ok.append(DcutrSeen.of(me, e.ts, e))
        for e in obs.events_of(me, "dcutr_failed"):
            if e.peer == pid:
                h.dcutr_failed.append(DcutrSeen.of(me, e.ts, e))
        for e in obs.events_of(me, "dcutr_started"):
            if e.peer == pid:
                h.dcutr_started.append(DcutrSeen.of(me, e.ts, e))
        for d in obs.status_of(me).dcutr:
            if d.peer != pid:
                continue
            seen = DcutrSeen.of(me, obs.to_t(me, d.at), d)
            if d.outcome == "succeeded" and not h.dcutr_ok:
                h.dcutr_ok.append(seen)
            elif d.outcome == "failed" and not h.dcutr_failed:
                h.dcutr_failed.append(seen)
    # the relay's own view: circuits it carries between a and b; when neither end serves
    # an API (`api: none`), it is also the only evidence that they are relayed right now
    blind = not obs.nodes[a].has_api and not obs.nodes[b].has_api
    for relay in obs.relays():
        for e in obs.events_of(relay, "circuit_opened"):
            if {e.src, e.dst} == {ids[a], ids[b]}:
                h.relays.add(relay)
                times.append(e.ts)
        for circ in obs.status_of(relay).circuits:
            if {circ.src, circ.dst} == {ids[a], ids[b]}:
                h.relays.add(relay)
                times.append(obs.to_t(relay, circ.opened_at))
                if blind:
                    h.relayed_now.append(f"{relay} relays a circuit {a}<->{b} (its /status)")
    h.relayed_at = earliest(times)
    if h.relayed_at is None and h.relayed_now:
        h.relayed_at = obs.t
    return h


def _held_relays(obs: Observation, name: str) -> set[str]:
    return {obs.name_of(r.relay) for r in obs.status_of(name).reservations}


def _circuit_cause(obs: Observation, pairs: list[tuple[str, str]]) -> str:
    """Why no cross-network pair has a relayed connection."""
    if not pairs:
        return "the topology has no validators on two different private networks"
    causes = []
    for a, b in pairs:
        ra, rb = _held_relays(obs, a), _held_relays(obs, b)
        if not ra and not rb:
            lost = [
                f"{x}: {obs.name_of(e.relay)} {e.reason or 'expired'}"
                for x in (a, b)
                for e in obs.events_of(x, "reservation_expired")
            ]
            causes.append(
                f"neither {a} nor {b} holds a reservation"
                + (
                    f"; they held some and lost them ({'; '.join(lost[:4])}) and did not "
                    "get them back"
                    if lost
                    else " (see check reservations)"
                )
            )
        elif not (ra & rb):
            causes.append(
                f"no common relay: {a} holds {sorted(ra) or 'none'}, {b} holds "
                f"{sorted(rb) or 'none'}; a one-hop circuit needs both ends to reach the same "
                "relay over IP"
            )
        else:
            adv = [
                x
                for x in (a, b)
                if not any("p2p-circuit" in str(ad) for ad in obs.status_of(x).advertised_addrs)
            ]
            if adv:
                causes.append(
                    f"{'/'.join(adv)} reserved on {sorted(ra & rb)} but advertises no "
                    "/p2p-circuit address, so the other side has nothing to dial (py-libp2p "
                    "identify does not advertise relay addresses on its own)"
                )
            else:
                closed = [
                    e for r in obs.relays() for e in obs.events_of(r, "circuit_closed") if e.reason
                ]
                hop = sum(int(obs.status_of(r).rejected.get("hop", 0)) for r in obs.relays())
                extra = f"; relays closed circuits: {closed[-1].reason}" if closed else ""
                extra += f"; relays rejected {hop} hop messages" if hop else ""
                causes.append(
                    f"{a} and {b} share relay {sorted(ra & rb)} and advertise circuit "
                    "addresses, but no circuit was opened: nobody dialed the /p2p-circuit "
                    "address (host.connect drops relay addrs; dial with "
                    f"CircuitV2Transport.dial){extra}"
                )
    return causes[0] if len(causes) == 1 else "; ".join(sorted(set(causes))[:3])


def relayed_circuit(obs: Observation) -> Verdict:
    """A validator on one private network reaches one on another through a relay circuit."""
    pairs = obs.cross_pairs(obs.validators())
    found = [h for h in (pair_history(obs, a, b) for a, b in pairs) if h.had_relayed]
    if not found:
        seen = ", ".join(
            f"{v}: {sorted(_held_relays(obs, v)) or 'no reservation'}" for v in obs.validators()
        )
        return Verdict(
            False,
            f"no relayed connection between validators on different private networks "
            f"(pairs {', '.join(f'{a}-{b}' for a, b in pairs) or 'none'}; reservations {seen})",
            cause=_circuit_cause(obs, pairs),
        )
    found.sort(key=lambda h: h.relayed_at if h.relayed_at is not None else 1e18)
    first = found[0]
    parts = [
        f"{h.a} ({obs.home(h.a)}) <-> {h.b} ({obs.home(h.b)}) via "
        f"{'/'.join(sorted(h.relays)) or 'a relay'}"
        + (f" at {h.relayed_at:.1f}s" if h.relayed_at is not None else "")
        for h in found
    ]
    detail = (
        "relayed: "
        + "; ".join(parts[:4])
        + (f" (+{len(parts) - 4} more)" if len(parts) > 4 else "")
    )
    return Verdict(
        True,
        detail,
        since=first.relayed_at,
        data={"pairs": [[h.a, h.b] for h in found], "relays": sorted(first.relays)},
    )


# ---------------------------------------------------------------------------------------
# DCUtR
# ---------------------------------------------------------------------------------------
def _direct_across_nat(
    obs: Observation, h: PairHistory, transport: str | None = None
) -> tuple[bool, str]:
    """Is a direct a-b connection going through both NATs (remote = the peer's router)?
    With `transport` (tcp | quic) only a connection the nodes report on that transport
    counts.

    Evidence: a node's /status connection whose remote address is the peer's router; else,
    for nodes that serve no API, the routers' conntrack and the nodes' TCP tables
    (harness/checks/outside.py). The outside evidence, when present, is named as well."""
    outside = [] if transport is not None else direct_through_nats(obs, h.a, h.b)
    seen_outside = f" [outside: {outside[0]}]" if outside else ""
    notes = []
    for me, c in h.direct_now:
        if transport is not None and c.transport != transport:
            other = h.b if me == h.a else h.a
            notes.append(f"{me} reaches {other} over {c.transport or 'tcp'}, not {transport}")
            continue
        other = h.b if me == h.a else h.a
        ip = ip_of(c.remote_addr)
        router = obs.router_of_ip(ip)
        if router is not None and router.name == obs.home(other):
            return True, (
                f"{me} reaches {other} at {c.remote_addr} (router of {router.name})" + seen_outside
            )
        net = obs.net_of_ip(ip)
        if router is None and net is None and not obs.nets:
            return True, f"{me} reaches {other} at {c.remote_addr}"
        notes.append(
            f"{me} sees {other} at {c.remote_addr} "
            f"({'network ' + net.name if net else 'unknown address'}, not {other}'s router)"
        )
    if outside and not (obs.nodes[h.a].has_api and obs.nodes[h.b].has_api):
        return True, f"direct through both NATs, seen from outside: {outside[0]}"
    if not h.direct_now:
        return False, "no direct connection"
    return False, "; ".join(notes)


def _dcutr_failures(h: PairHistory) -> str:
    reasons = sorted({str(e.reason) for e in h.dcutr_failed})
    return f"{len(h.dcutr_failed)} failed attempt(s): {', '.join(reasons)}"


def dcutr_upgrade(obs: Observation) -> Verdict:
    """A relayed cross-network connection between validators became direct through both
    NATs; the relayed one closed."""
    return _dcutr_upgrade(obs, obs.cross_pairs(obs.validators()))


@dataclass(frozen=True)
class RelayedStall:
    """How much longer than its round trip the relayed path took to carry one upgrade's
    messages, from both ends' /status dcutr rows (their `at` and `phases`): the stream
    open beyond one RTT, and the SYNC beyond half an RTT one way (initiator's send to the
    responder's read, both in harness time)."""

    stream_s: float = 0.0
    sync_s: float = 0.0
    sync_one_way_s: float | None = None
    stream_open_s: float | None = None

    @property
    def total_s(self) -> float:
        return self.stream_s + self.sync_s

    def describe(self) -> str:
        parts = []
        if self.stream_s >= STALL_SHOWN_S and self.stream_open_s is not None:
            parts.append(f"stream open {self.stream_open_s:.2f}s")
        if self.sync_s >= STALL_SHOWN_S and self.sync_one_way_s is not None:
            parts.append(f"SYNC {self.sync_one_way_s:.2f}s one way")
        return ", ".join(parts)


STALL_SHOWN_S = 0.05  # a stall shorter than this is noise in the clock offsets; not named


def _row_of(obs: Observation, node: str, peer_id: str, e: Event) -> DcutrAttempt | None:
    """`node`'s /status dcutr row of the upgrade event `e` (same peer, role, duration)."""
    for d in obs.status_of(node).dcutr:
        if (
            d.peer == peer_id
            and d.outcome == "succeeded"
            and d.role == e.role
            and d.duration_s == e.duration_s
        ):
            return d
    return None


def _relayed_stall(obs: Observation, node: str, peer: str, e: Event, rtt: float) -> RelayedStall:
    """The relayed path's stall during the upgrade `node` reported as `e` (see
    RelayedStall); zero where a row or a phase is missing (a node without the API)."""
    ids = {n: obs.peer_id(n) or "" for n in (node, peer)}
    mine = _row_of(obs, node, ids[peer], e)
    if mine is None or mine.at is None:
        return RelayedStall()
    start = obs.to_t(node, mine.at)
    theirs = None
    for d in obs.status_of(peer).dcutr:
        t = obs.to_t(peer, d.at)
        # the other end's row of the same attempt: the other role, begun while ours ran
        if d.peer != ids[node] or d.role == mine.role or t is None or start is None:
            continue
        if start - 0.2 <= t <= start + float(mine.duration_s or 0) + 0.2:
            theirs = d
            break
    init, resp, init_node, resp_node = (
        (mine, theirs, node, peer) if mine.role == "initiator" else (theirs, mine, peer, node)
    )
    stall = RelayedStall()
    if init is not None and "stream" in init.phases:
        opened = float(init.phases["stream"])
        stall = RelayedStall(stream_s=max(0.0, opened - rtt), stream_open_s=opened)
    if init is None or resp is None or "sync" not in init.phases or "sync" not in resp.phases:
        return stall
    # both rows have `at`: ours was checked above, theirs was matched by it
    assert init.at is not None and resp.at is not None
    sent = obs.to_t(init_node, float(init.at) + float(init.phases["sync"]))
    read = obs.to_t(resp_node, float(resp.at) + float(resp.phases["sync"]))
    if sent is None or read is None:
        return stall
    one_way = max(0.0, read - sent)
    return RelayedStall(
        stream_s=stall.stream_s,
        stream_open_s=stall.stream_open_s,
        sync_s=max(0.0, one_way - rtt / 2),
        sync_one_way_s=one_way,
    )


def dcutr_within_rtts(base_s: float = 1.0, rtts: float = 3.0) -> Check:
    """Every DCUtR upgrade between nodes on two different private networks took at most
    `base_s` + `rtts` round trips of the relayed connection it upgraded (the event's
    rtt_s, measured by DCUtR's CONNECT exchange), plus whatever the relayed path itself
    stalled on the way (RelayedStall: a stream open or a SYNC that took longer than the
    path's RTT, read from both ends' /status rows, which share the harness clock): the hole
    punch is bounded by the path it had, not by timers or retries, which do not slow the
    relayed messages and so are never excused. Each pair is judged once, by the end that
    reported it first."""

    def check(obs: Observation) -> Verdict:
        ids = obs.peer_names()
        rows: list[tuple[float, str]] = []
        slow: list[str] = []
        stalls: list[str] = []
        seen: set[tuple[str, str]] = set()
        for node in sorted(obs.nodes):
            for e in obs.events_of(node, "dcutr_succeeded"):
                peer = ids.get(e.peer or "")
                if peer is None or (min(node, peer), max(node, peer)) not in obs.cross_pairs(
                    (node, peer)
                ):
                    continue
                key = (min(node, peer), max(node, peer))
                if key in seen or e.duration_s is None or e.rtt_s is None:
                    continue
                seen.add(key)
                rtt = float(e.rtt_s)
                stall = _relayed_stall(obs, node, peer, e, rtt)
                bound = base_s + rtts * rtt + stall.total_s
                named = stall.describe()
                said = (
                    f"{node}<->{peer} {float(e.duration_s):.2f}s (rtt {rtt * 1000:.0f} ms, "
                    + (f"relayed path stalled {stall.total_s:.2f}s: {named}; " if named else "")
                    + f"bound {bound:.2f}s)"
                )
                if named:
                    stalls.append(f"{node}<->{peer}")
                rows.append((float(e.duration_s) / bound, said))
                if float(e.duration_s) > bound:
                    slow.append(said)
        if not rows:
            return Verdict(
                False,
                "no DCUtR upgrade with a duration and an RTT between private networks yet",
                cause="see check dcutr_upgrade: nothing upgraded, or the node reports no rtt_s",
            )
        shown = ", ".join(s for _, s in sorted(rows, reverse=True)[:4])
        excused = f" ({len(stalls)} with the relayed path's stall added)" if stalls else ""
        if slow:
            return Verdict(
                False,
                f"{len(slow)} of {len(rows)} upgrades past {base_s:g}s + {rtts:g} RTTs"
                f"{excused}: {', '.join(slow[:4])}",
                cause="the punch waited on a timer or a retry instead of the path (a dial "
                "timeout, a second candidate after the first failed), or the relayed RTT DCUtR "
                "measured is far off",
                data={"final": True},
            )
        return Verdict(
            True,
            f"{len(rows)} upgrade(s) within {base_s:g}s + {rtts:g} RTTs{excused}, slowest "
            f"first: {shown}",
        )

    return check


def dcutr_upgrade_between(impl_a: str, impl_b: str) -> Check:
    """dcutr_upgrade over the cross-network pairs of any role whose ends run `impl_a` and
    `impl_b` (topology `impl:`), e.g. a rust-libp2p node and ours hole-punching each other."""

    def check(obs: Observation) -> Verdict:
        impl = {n.name: n.impl for n in obs.nodes.values()}
        pairs = [
            (a, b)
            for a, b in obs.cross_pairs(obs.nodes)
            if sorted((impl[a], impl[b])) == sorted((impl_a, impl_b))
        ]
        if not pairs:
            return Verdict(
                False,
                f"no {impl_a}<->{impl_b} pair on two different private networks",
                cause="topology: put an `impl: {impl_a}` and an `impl: {impl_b}` node behind "
                "different NAT routers",
            )
        return _dcutr_upgrade(obs, pairs)

    return check


def dcutr_upgrade_pair(a: str, b: str) -> Check:
    """dcutr_upgrade for one named pair on two different private networks: a scenario that
    stages its hole punches (one pair first, the others later) asks for each by itself."""

    def check(obs: Observation) -> Verdict:
        if (min(a, b), max(a, b)) not in obs.cross_pairs((a, b)):
            return Verdict(
                False,
                f"{a} and {b} are not on two different private networks",
                cause="scenario: pick one node behind each of two NAT routers",
                data={"final": True},
            )
        return _dcutr_upgrade(obs, [(min(a, b), max(a, b))])

    return check


def dcutr_upgrade_over(transport: str) -> Check:
    """dcutr_upgrade, and the direct connection is on `transport` (tcp | quic) at both ends'
    /status: a QUIC punch, not a TCP one beside it."""

    def check(obs: Observation) -> Verdict:
        return _dcutr_upgrade(obs, obs.cross_pairs(obs.validators()), transport)

    return check


def _dcutr_upgrade(
    obs: Observation, pairs: list[tuple[str, str]], transport: str | None = None
) -> Verdict:
    hist = [h for h in (pair_history(obs, a, b) for a, b in pairs) if h.had_relayed or h.dcutr_ok]
    if not hist:
        return Verdict(
            False,
            "no cross-network relayed connection to upgrade",
            cause="see check relayed_circuit: DCUtR only starts on a relayed connection",
        )
    seen = []
    best: tuple[int, str] | None = None
    for h in hist:
        across, how = _direct_across_nat(obs, h, transport)
        blind = not obs.nodes[h.a].has_api and not obs.nodes[h.b].has_api
        if blind and transport is None and across and h.had_relayed and not h.relayed_now:
            # neither end can report DCUtR; routers that drop unsolicited inbound let a
            # connection through both only by a simultaneous open: a hole punch
            detail = (
                f"{h.a} <-> {h.b} (both api: none): relayed via "
                f"{'/'.join(sorted(h.relays)) or 'a relay'}, now {how}; no relay carries "
                "their circuit any more: hole-punched (only a simultaneous open crosses two "
                "routers that drop unsolicited inbound)"
            )
            return Verdict(True, detail, since=h.relayed_at, data={"pair": [h.a, h.b]})
        if h.dcutr_ok and across and not h.relayed_now:
            ok = h.dcutr_ok[0]
            dur = ok.duration_s
            detail = (
                f"{h.a} <-> {h.b}: DCUtR succeeded"
                + (f" in {float(dur):.2f}s" if dur is not None else "")
                + f" ({ok.node} as {ok.role if ok.role is not None else '?'}"
                + (f", punched {ok.addr}" if ok.addr else "")
                + f"); {how}; relayed connection closed"
                + (f" at {h.relayed_closed_at:.1f}s" if h.relayed_closed_at is not None else "")
            )
            if h.dcutr_failed:
                detail += f" (after {_dcutr_failures(h)})"
            since = latest([ok.ts, h.relayed_closed_at])
            return Verdict(True, detail, since=since, data={"pair": [h.a, h.b]})
        phase = "succeeded" if h.dcutr_ok else "started" if h.dcutr_started else "not started"
        state = [f"dcutr {phase}", how]
        if h.dcutr_failed:
            state.append(_dcutr_failures(h))
        if h.relayed_now:
            state.append("still relayed: " + "; ".join(h.relayed_now))
        seen.append(f"{h.a}<->{h.b}: " + ", ".join(state))
        # the most telling explanation over all pairs wins (lower rank first)
        if h.dcutr_ok and across and h.relayed_now:
            cand = (
                0,
                "the hole punch worked but the relayed connection was never closed "
                "(the node must close it after the upgrade)",
            )
        elif h.dcutr_ok:
            cand = (1, f"DCUtR reported success but the direct connection is wrong: {how}")
        elif any(e.reason == "no_public_address" for e in h.dcutr_failed):
            cand = (
                2,
                f"DCUtR {_dcutr_failures(h)} ({h.a}<->{h.b}): a node had not learnt its "
                "router's public address (only peers on its own network had observed it: "
                "are the public relays and peers reachable from it? /status observed_addrs)",
            )
        elif any(e.reason == "peer_lan_only" for e in h.dcutr_failed):
            cand = (
                2,
                f"DCUtR {_dcutr_failures(h)} ({h.a}<->{h.b}): a node offered only its own "
                "LAN address (no peer outside its network had observed it yet; the initiator "
                "keeps trying for a while: /status observed_addrs of the responder)",
            )
        elif h.dcutr_failed:
            cand = (
                2,
                f"DCUtR {_dcutr_failures(h)} ({h.a}<->{h.b}): with symmetric NAT the mapped "
                "port is random; otherwise check that dials leave from the listen port "
                "(SO_REUSEPORT), that the observed public addresses (not private ones) are "
                "tried, and that the DCUtR streams over the circuit open in time",
            )
        elif h.dcutr_started:
            cand = (
                3,
                "DCUtR started but has neither succeeded nor failed yet (slow punch: "
                "unreachable private candidates tried first?)",
            )
        else:
            cand = (
                4,
                "DCUtR never started on the relayed connection (dcutr disabled, protocol "
                "not negotiated over the circuit, or no observed address from identify)",
            )
        if best is None or cand[0] < best[0]:
            best = cand
    return Verdict(False, "; ".join(seen), cause=best[1] if best else None)


def dcutr_fails(obs: Observation) -> Verdict:
    """Symmetric NAT: DCUtR fails with a recorded reason and the pair stays relayed."""
    pairs = obs.cross_pairs(obs.validators())
    hist = [h for h in (pair_history(obs, a, b) for a, b in pairs) if h.had_relayed]
    if not hist:
        return Verdict(
            False,
            "no cross-network relayed connection, so no DCUtR attempt to fail",
            cause="see check relayed_circuit",
        )
    upgraded = [h for h in hist if h.dcutr_ok or _direct_across_nat(obs, h)[0]]
    if upgraded:
        h = upgraded[0]
        return Verdict(
            False,
            f"{h.a} <-> {h.b} was upgraded to direct ({_direct_across_nat(obs, h)[1]})",
            cause="a hole punch succeeded through what should be symmetric NAT: is the router "
            "using MASQUERADE --random-fully?",
        )
    for h in hist:
        reasons = [e for e in h.dcutr_failed if e.reason]
        # nodes that say whether an attempt was the last one (`final`): wait until DCUtR
        # gave up, so one slow attempt that a retry would fix is not taken for the NAT
        # defeating it
        if any(e.final is not None for e in reasons) and not any(e.final for e in reasons):
            continue
        if reasons and h.relayed_now:
            return Verdict(
                True,
                f"{h.a} <-> {h.b}: DCUtR {_dcutr_failures(h)}"
                + (", gave up" if any(e.final for e in reasons) else "")
                + "; traffic stays relayed ("
                + "; ".join(h.relayed_now)
                + ")",
                since=latest([e.ts for e in reasons]),
                data={"pair": [h.a, h.b], "reasons": sorted({str(e.reason) for e in reasons})},
            )
    seen = [
        f"{h.a}<->{h.b}: {_dcutr_failures(h) if h.dcutr_failed else 'no failure recorded'}, "
        f"{'relayed' if h.relayed_now else 'relayed connection gone'}"
        for h in hist
    ]
    lost = [h for h in hist if h.dcutr_failed and not h.relayed_now]
    cause = (
        "the relayed connection was closed after the failed punch: traffic must stay relayed"
        if lost
        else "no DCUtR failure with a reason recorded yet (DCUtR not attempted, or failures "
        "not reported as dcutr_failed events with a reason)"
    )
    return Verdict(False, "; ".join(seen), cause=cause)


# ---------------------------------------------------------------------------------------
# relay failover
# ---------------------------------------------------------------------------------------
def reserved_elsewhere(relay: str) -> Check:
    """After `relay` was killed: its clients hold a reservation on another, live relay and
    no longer list one on the dead relay. Uses marks['reserved_on'][relay] (clients that
    held a reservation on it when it was killed) and marks['killed_at'][relay]."""

    def check(obs: Observation) -> Verdict:
        clients = list(obs.marks.get("reserved_on", {}).get(relay) or [])
        if not clients:
            return Verdict(
                False,
                f"no client held a reservation on {relay} when it was killed",
                cause="nothing to fail over (check reservations held before the kill)",
            )
        dead_id = obs.peer_id(relay)
        killed_at = obs.marks.get("killed_at", {}).get(relay)
        ok, bad = [], []
        times: list[float | None] = []
        for name in clients:
            good, _ = _good_reservations(obs, name)
            stale = [g for g in good if g.res.relay == dead_id]
            others = [g for g in good if g.res.relay != dead_id]
            if name not in obs.status:
                bad.append(f"{name}: no status")
            elif stale:
                bad.append(f"{name}: still lists a reservation on dead {relay}")
            elif not others:
                bad.append(f"{name}: no reservation")
            else:
                rel = sorted({g.relay_name for g in others})
                new = [
                    e.ts
                    for e in obs.events_of(name, "reservation_accepted")
                    if killed_at is not None and (e.ts or 0) >= killed_at and e.relay != dead_id
                ]
                times.append(earliest(new) if new else killed_at)
                ok.append(f"{name}->{'+'.join(rel)}" + (" (new)" if new else " (already held)"))
        if bad:
            return Verdict(
                False,
                f"after killing {relay}: "
                + "; ".join(bad)
                + (f" (ok: {', '.join(ok)})" if ok else ""),
                cause="clients do not notice the lost relay or do not reserve on the other "
                "relay; each client needs a second relay in relay_servers it can reach",
            )
        return Verdict(True, f"after killing {relay}: " + ", ".join(ok), since=latest(times))

    return check


def reservations_on(relay: str) -> Check:
    """Every relay client that can reach `relay` (the model's reach_relays mark; every
    client when the mark is missing) holds a good reservation on it. A scenario that kills
    a relay waits for this first: `reservations` holds as soon as each client holds one
    reservation anywhere, which may all be on the other relay (then nothing fails over)."""

    def check(obs: Observation) -> Verdict:
        rid = obs.peer_id(relay)
        reach = obs.marks.get("reach_relays") or {}
        clients = [c for c in obs.clients() if obs.nodes[c].has_api]
        expected = [c for c in clients if not reach or relay in (reach.get(c) or [])]
        if not expected:
            return Verdict(
                False,
                f"no relay client can reach {relay}",
                cause="topology: no client has an IP path to this relay",
                data={"final": True},
            )
        on: list[str] = []
        missing: list[str] = []
        for name in expected:
            good, _ = _good_reservations(obs, name)
            (on if any(g.res.relay == rid for g in good) else missing).append(name)
        if missing:
            return Verdict(
                False,
                f"on {relay}: {', '.join(on) or 'none'}; not yet: {', '.join(missing)}",
                cause=f"the clients have not reserved on {relay} yet (slow start of the relay, "
                "or its connection/identify did not complete; see reservations)",
            )
        return Verdict(
            True, f"every client that can reach {relay} holds a reservation on it: {', '.join(on)}"
        )

    return check


def reservations_back(relay: str) -> Check:
    """After `relay` restarted: the clients that lost it hold a reservation on it again
    (py-libp2p's client does not re-reserve after a relay restart on its own)."""

    def check(obs: Observation) -> Verdict:
        clients = list(obs.marks.get("reserved_on", {}).get(relay) or [])
        restarted_at = obs.marks.get("restarted_at", {}).get(relay)
        rid = obs.peer_id(relay)
        if not clients:
            return Verdict(False, f"no client to come back to {relay}", cause="see failover")
        ok, bad = [], []
        times = []
        for name in clients:
            good, _ = _good_reservations(obs, name)
            on = [g for g in good if g.res.relay == rid]
            acc = [
                e.ts
                for e in obs.events_of(name, "reservation_accepted")
                if e.relay == rid and restarted_at is not None and (e.ts or 0) >= restarted_at
            ]
            if on and acc:
                ok.append(name)
                times.append(min(t for t in acc if t is not None))
            elif on:
                bad.append(f"{name}: lists {relay} but no reservation_accepted since its restart")
            else:
                bad.append(f"{name}: no reservation on {relay}")
        if bad:
            denied = [
                e
                for n in clients
                for e in obs.events_of(n, "reservation_denied")
                if e.relay == rid and restarted_at is not None and (e.ts or 0) >= restarted_at
            ]
            if denied:
                reasons = sorted({str(e.reason).strip() for e in denied})
                cause = (
                    f"the clients did ask again ({len(denied)} RESERVE since the restart) but "
                    f"{relay} refused or did not answer: {', '.join(reasons)}"
                )
            else:
                only_relayed = [
                    n
                    for n in clients
                    if (kinds := {c.kind for c in obs.connections(n, relay)})
                    and "direct" not in kinds
                ]
                cause = (
                    f"{', '.join(only_relayed)} reach {relay} only through a relayed "
                    "connection (it came back and dialed them through another relay): a "
                    "reservation needs a direct connection, and the client never redialed "
                    f"{relay} directly"
                    if only_relayed
                    else "the client does not re-reserve after a relay restart (py-libp2p "
                    "CircuitV2Transport only refreshes a live reservation): re-reserve when "
                    "the relay reconnects"
                )
            return Verdict(
                False, f"{len(ok)}/{len(clients)} back on {relay}: " + "; ".join(bad), cause=cause
            )
        return Verdict(
            True,
            f"all {len(ok)} clients reserved on {relay} again: {', '.join(ok)}",
            since=latest(times),
        )

    return check


def partitioned(obs: Observation) -> Verdict:
    """While partitioned: no connection of any kind between the two sides (a node's side is
    its private network; sentries belong to theirs), so the partition is real."""
    names = sorted(n for n in obs.nodes if obs.home(n))
    pairs = [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :] if obs.home(a) != obs.home(b)
    ]
    links = []
    for a, b in pairs:
        for me, other in ((a, b), (b, a)):
            for c in obs.connections(me, other):
                links.append(f"{me}->{other} {c.kind} {c.remote_addr}")
    heights = " ".join(f"{n}={obs.height(n)}" for n in names)
    if links:
        return Verdict(
            False,
            f"still connected across the partition: {'; '.join(links[:6])}"
            + (f" (+{len(links) - 6} more)" if len(links) > 6 else ""),
            cause="connections across the cut are not detected as dead (no keepalive/ping "
            "timeout closing them), or the partition did not cut every path",
        )
    return Verdict(True, f"no connection between the sides ({len(pairs)} pairs); heights {heights}")
