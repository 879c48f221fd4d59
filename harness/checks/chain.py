"""Chain checks: consensus across networks, cross-network sync, no forks, convergence.

Same rules as harness/checks/relay.py: pure functions of an `Observation`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from harness.checks import Check, Observation, Verdict, earliest, ip_of
from node.contract import Chain, Connection, Event


def _heights(obs: Observation, names: list[str]) -> str:
    return " ".join(f"{n}={obs.height(n) if obs.height(n) is not None else '-'}" for n in names)


def _readable_validators(obs: Observation) -> tuple[list[str], str]:
    """Validators whose height the checks can read, and a note on the others (`api: none`
    or no chain): their votes still count, and the blocks they proposed show in the others'
    block_committed events."""
    readable = set(obs.chain_nodes())
    vals = [v for v in obs.validators() if v in readable]
    blind = [v for v in obs.validators() if v not in readable]
    note = f" ({', '.join(blind)}: not readable, judged by the blocks they propose)"
    return vals, note if blind else ""


def consensus(min_blocks: int = 5, base_mark: str | None = None) -> Check:
    """Every validator committed `min_blocks` blocks (beyond the heights recorded in
    marks[base_mark], if given) and the proposers of committed blocks include validators on
    at least two different networks: blocks are made with validators in both networks.
    Validators that serve no API are not asked; the blocks they proposed are seen in the
    others' events."""

    def check(obs: Observation) -> Verdict:
        vals, blind_note = _readable_validators(obs)
        if not vals:
            return Verdict(False, "the topology has no readable validators", cause="topology")
        base: dict[str, int] = dict(obs.marks.get(base_mark, {})) if base_mark else {}
        missing = obs.missing(vals)
        if missing:
            return Verdict(
                False,
                f"validators without status: {', '.join(missing)}",
                cause="a validator is down or its API is unreachable",
            )
        lagging = [v for v in vals if (obs.height(v) or 0) < base.get(v, 0) + min_blocks]
        proposers: dict[str, set[str]] = defaultdict(set)  # home network -> proposer names
        for v in vals:
            for e in obs.events_of(v, "block_committed"):
                if int(e.height or 0) <= base.get(v, 0):
                    continue
                pname = obs.name_of(e.proposer)
                proposers[obs.home(pname) or "public"].add(pname)
        homes = {obs.home(v) or "public" for v in obs.validators()}
        heights = _heights(obs, vals)
        by_net = "; ".join(f"{net}: {','.join(sorted(p))}" for net, p in sorted(proposers.items()))
        if lagging:
            stuck = all(obs.height(v) == base.get(v, obs.height(v)) for v in vals)
            heights += _rounds(obs, vals)
            return Verdict(
                False,
                f"heights {heights} (need +{min_blocks}"
                + (f" over {base}" if base else "")
                + f"); proposers seen: {by_net or 'none'}",
                cause=_unheard_cause(obs, vals)
                + (
                    "no validator commits: quorum needs more than 2/3 of the validators, so "
                    "votes must cross the networks (gossip through the sentries)"
                    if stuck
                    else f"{', '.join(lagging)} lag behind: not receiving blocks/votes"
                ),
            )
        if len(homes) > 1 and len(set(proposers) & homes) < 2:
            return Verdict(
                False,
                f"heights {heights}, but committed blocks were proposed only from "
                f"{by_net or 'nowhere'}",
                cause="proposals from one network never commit on the other side",
            )
        return Verdict(
            True,
            f"validators at {heights}{blind_note}; committed blocks proposed from {by_net}",
            since=_reached_at(obs, vals, {v: base.get(v, 0) + min_blocks for v in vals}),
            data={"heights": {v: obs.height(v) for v in vals}},
        )

    return check


def _reached_at(obs: Observation, names: list[str], need: dict[str, int]) -> float | None:
    """When every node in `names` had committed height need[node] (from block_committed
    events); None when some node's event is missing (then the poll time counts)."""
    times = []
    for n in names:
        hits = [e.ts for e in obs.events_of(n, "block_committed") if int(e.height or 0) >= need[n]]
        if not hits or None in hits:
            return None
        times.append(min(t for t in hits if t is not None))
    return max(times) if times else None


def _conn_to(obs: Observation, me: str, peer_id: str | None) -> list[Connection]:
    return obs.status_of(me).connections_to(peer_id)


def _upgraded(obs: Observation, node: str, peer: str) -> str | None:
    """Evidence that a direct node<->peer connection is a DCUtR-upgraded one across NAT."""
    pid, nid = obs.peer_id(peer), obs.peer_id(node)
    for me, other_id in ((node, pid), (peer, nid)):
        for e in obs.events_of(me, "dcutr_succeeded"):
            if e.peer == other_id:
                return f"DCUtR-upgraded ({me} dcutr_succeeded at {e.ts or 0.0:.1f}s)"
    for c in _conn_to(obs, node, pid):
        router = obs.router_of_ip(ip_of(c.remote_addr))
        if c.kind == "direct" and router is not None:
            return f"direct through router of {router.name} ({c.remote_addr})"
    return None


def cross_network_sync(node: str) -> Check:
    """`node` (stopped, wiped, restarted) caught up to marks['sync_target'][node] and got
    blocks from at least one peer living only on another private network, over a relayed
    or DCUtR-upgraded connection, as its /status chain.sync_peers shows. Sentries, configured
    not to serve sync, must not appear as serving peers."""

    def check(obs: Observation) -> Verdict:
        target = obs.marks.get("sync_target", {}).get(node)
        restarted = obs.marks.get("restarted_at", {}).get(node)
        st = obs.status.get(node)
        if st is None:
            return Verdict(
                False,
                f"{node} has no status ({obs.unreachable.get(node, 'not started')})",
                cause=f"{node} did not come back after the restart",
            )
        chain = st.chain or Chain()
        height = int(chain.height or 0)
        peers = [p for p in chain.sync_peers if int(p.blocks or 0) > 0]
        home = obs.home(node)
        served: list[str] = []
        crossing: list[str] = []
        sentries_served: list[str] = []
        for p in peers:
            pname = obs.name_of(p.peer)
            kind = p.kind
            rng = f"{p.from_height}..{p.to_height}"
            where = obs.home(pname) or "public"
            only = obs.only_private(pname)
            desc = f"{pname} [{where}{' only' if only else ''}] {p.blocks} blocks {rng} {kind}"
            served.append(desc)
            info = obs.nodes.get(pname)
            if info is not None and not info.serve_sync:
                sentries_served.append(pname)
            if only and obs.home(pname) != home:
                if kind == "relayed":
                    via = [
                        obs.name_of(c.relay)
                        for c in _conn_to(obs, node, obs.peer_id(pname))
                        if c.kind == "relayed" and c.relay
                    ]
                    crossing.append(desc + (f" via relay {via[0]}" if via else ""))
                elif kind == "direct":
                    how = _upgraded(obs, node, pname)
                    if how:
                        crossing.append(f"{desc}, {how}")
        heights = {n: obs.height(n) for n in obs.status if n != node and obs.height(n) is not None}
        seen = (
            f"{node} at height {height} (target {target}, {chain.sync_state}); "
            f"served by: {'; '.join(served) or 'nobody'}"
        )
        if sentries_served:
            return Verdict(
                False,
                seen,
                cause=f"{', '.join(sentries_served)} served sync although configured with "
                "serve_sync=false, so history did not have to cross the NATs",
            )
        if target is None:
            return Verdict(False, seen, cause="scenario did not record a sync target (harness bug)")
        if height < int(target):
            if not peers:
                cause = (
                    f"{node} found no peer that serves sync: the sentries do not serve, and "
                    f"{node} has no working connection to a serving peer"
                )
            else:
                top = max((h for h in heights.values() if h is not None), default=None)
                cause = f"{node} is still syncing (others at {top})"
            return Verdict(False, seen, cause=cause)
        if not crossing:
            # sync finished (synced, past the target, sync_completed since the restart): the
            # serving peers will not change any more, so waiting longer cannot help
            finished = chain.sync_state == "synced" and any(
                restarted is None or (e.ts or 0) >= restarted
                for e in obs.events_of(node, "sync_completed")
            )
            return Verdict(
                False,
                seen + ("; sync finished" if finished else ""),
                data={"final": True} if finished else {},
                cause=(
                    f"history came only from peers on {node}'s own side: nothing crossed the "
                    "NAT (the seed's 'sync peers only show local network peers'); the node "
                    "needs sync over relayed/upgraded connections to peers behind the other NAT"
                ),
            )
        done = [
            e.ts
            for e in obs.events_of(node, "sync_completed")
            if restarted is None or (e.ts or 0) >= restarted
        ]
        return Verdict(
            True,
            f"{node} caught up to {height} (target {target}); across the NAT: "
            + "; ".join(crossing)
            + (f"; all serving peers: {'; '.join(served)}" if len(served) > len(crossing) else ""),
            since=earliest(done),
            data={"height": height, "crossing": crossing, "served": served},
        )

    return check


def _hash_table(obs: Observation) -> dict[int, dict[str, set[str]]]:
    """height -> hash -> nodes that committed/report that hash (events + current tips)."""
    table: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name in obs.nodes:
        for e in obs.events_of(name, "block_committed"):
            if e.height is not None and e.hash:
                table[int(e.height)][str(e.hash)].add(name)
        chain = obs.status_of(name).chain
        if chain is not None and chain.height is not None and chain.tip_hash:
            table[int(chain.height)][str(chain.tip_hash)].add(name)
    return table


def no_forks(obs: Observation) -> Verdict:
    """No two nodes ever reported different blocks at the same height."""
    table = _hash_table(obs)
    forks = {h: v for h, v in table.items() if len(v) > 1}
    if forks:
        h = min(forks)
        desc = "; ".join(f"{hs[:10]} at {','.join(sorted(n))}" for hs, n in forks[h].items())
        return Verdict(
            False,
            f"{len(forks)} forked heights, first at {h}: {desc}",
            cause="two blocks committed at one height: quorum was split (a partition with "
            "both sides committing) or a node accepted a block from sync without checking it",
        )
    # height 0 is the genesis every node starts from: agreeing on it proves nothing
    shared = [h for h, v in table.items() if h > 0 and len(next(iter(v.values()))) > 1]
    if not shared:
        return Verdict(
            False,
            "no committed height (above genesis) seen on two nodes: nothing to compare",
            cause="no blocks committed (see check consensus)",
        )
    nodes = {n for v in table.values() for ns in v.values() for n in ns}
    return Verdict(
        True,
        f"{len(table)} heights (up to {max(table)}) across {len(nodes)} nodes, "
        f"{len(shared)} seen on several nodes: one hash each",
    )


def _committed_up_to(evs: list[Event]) -> int | None:
    """The highest height one process epoch committed or synced (its events)."""
    hs = [int(e.height) for e in evs if e.type == "block_committed" and e.height is not None]
    hs += [int(e.to_height) for e in evs if e.type == "sync_completed" and e.to_height is not None]
    return max(hs, default=None)


def _first_new_height(evs: list[Event]) -> int | None:
    """The first height a process epoch obtained (committed or asked sync for), in order."""
    for e in sorted(evs, key=lambda e: e.seq):
        if e.type == "block_committed" and e.height is not None:
            return int(e.height)
        if e.type == "sync_completed" and e.from_height is not None:
            return int(e.from_height)
    return None


def blocks_kept(obs: Observation) -> Verdict:
    """Every node restarted on its own store went on from where it was: the first height
    a new process obtained (committed, or asked sync for) is above the highest its previous
    process committed. A restart that fetched or committed a height again lost that block
    from its store (a write not synced to disk, a store reopened empty)."""
    lost: list[str] = []
    kept: list[str] = []
    for name in obs.chain_nodes():
        evs = obs.events_of(name)
        epochs = sorted({e.epoch or 0 for e in evs})
        for before, after in itertools.pairwise(epochs):
            had = _committed_up_to([e for e in evs if (e.epoch or 0) == before])
            first = _first_new_height([e for e in evs if (e.epoch or 0) == after])
            if had is None or first is None:
                continue
            row = f"{name} epoch {after}: had {had}, went on at {first}"
            (lost if first <= had else kept).append(row)
    if lost:
        return Verdict(
            False,
            f"{len(lost)} restart(s) obtained a height again: {'; '.join(lost[:6])}",
            cause="a node restarted on its store lost committed blocks (the store's writes, "
            "or a store reopened empty)",
        )
    if not kept:
        return Verdict(
            False,
            "no node restarted and then obtained a block: nothing to compare",
            cause="the scenario restarted no chain node, or it never caught up after",
        )
    return Verdict(
        True, f"{len(kept)} restart(s), each went on above what it had: " + "; ".join(kept[:8])
    )


def converged(min_blocks: int = 3, base_mark: str = "healed_heights") -> Check:
    """After healing: every node is past max(marks[base_mark]) + min_blocks and all agree
    on the hash at the lowest current tip."""

    def check(obs: Observation) -> Verdict:
        names = obs.chain_nodes()
        missing = obs.missing(names)
        if missing:
            return Verdict(False, f"no status: {', '.join(missing)}", cause="node down")
        base = max(dict(obs.marks.get(base_mark, {})).values(), default=0)
        heights = {n: obs.height(n) or 0 for n in names}
        low = [n for n in names if heights[n] < base + min_blocks]
        if low:
            return Verdict(
                False,
                f"heights {_heights(obs, names)}; need >= {base + min_blocks}",
                cause=f"{', '.join(low)} not catching up after the heal",
            )
        floor = min(heights.values())
        table = _hash_table(obs).get(floor, {})
        known = {n for ns in table.values() for n in ns}
        if len(table) > 1:
            return Verdict(
                False, f"different blocks at height {floor}: {dict(table)}", cause="fork"
            )
        unknown = [n for n in names if n not in known]
        if unknown:
            return Verdict(
                False,
                f"heights {_heights(obs, names)}; hash at {floor} unknown for {', '.join(unknown)}",
                cause="waiting for a snapshot where every node reported height "
                f"{floor} (node committed it by sync without a block_committed event?)",
            )
        return Verdict(
            True,
            f"all {len(names)} nodes on one chain: heights {_heights(obs, names)}, "
            f"same block {next(iter(table))[:10]} at {floor}",
        )

    return check


def _rounds(obs: Observation, vals: list[str], connections: bool = False) -> str:
    """` (node0 round 3 prevote; ...)`: round/step are optional extras of /status chain;
    where the round is, is where the votes stop (a high round at an unchanged height =
    votes do not arrive); the connection count and the gossip mesh say whether they could."""
    rounds = [
        f"{v} round {c.round} {c.step or ''}".rstrip()
        + (
            f", {len(obs.status_of(v).connections)} connections, {len(c.mesh_peers)} in mesh"
            + (f" of {len(c.topic_peers)} on the topic" if "topic_peers" in c.given else "")
            if connections
            else ""
        )
        + _heard(c.heard)
        for v in vals
        if (c := obs.status_of(v).chain) is not None and c.round is not None
    ]
    return f" ({'; '.join(rounds)})" if rounds else ""


def _unheard_cause(obs: Observation, vals: list[str]) -> str:
    """`node0's votes reach no other validator (...); `: a validator that voted in its round
    while none of the others at its height and round has that vote (/status chain.heard).
    Its messages do not leave it: an empty gossip mesh, or no subscriber of the chain topic
    known to it. Empty when nothing says so."""
    chains = {v: c for v in vals if (c := obs.status_of(v).chain) is not None and c.heard}
    unheard = []
    for v, c in chains.items():
        mine = [t for t in ("prevote", "precommit") if v in c.heard.get(t, ())]
        others = [
            d for w, d in chains.items() if w != v and (d.height, d.round) == (c.height, c.round)
        ]
        if not mine or not others:
            continue
        if any(v in d.heard.get(t, ()) for d in others for t in mine):
            continue
        why = (
            "it knows no subscriber of the chain topic"
            if "topic_peers" in c.given and not c.topic_peers
            else f"{len(c.mesh_peers)} gossip mesh peers"
        )
        unheard.append(f"{v} ({why})")
    if not unheard:
        return ""
    return f"no other validator has the votes of {', '.join(unheard)}: they do not leave it; "


def _heard(heard: dict[str, tuple[str, ...]]) -> str:
    """`, heard proposal node1, prevotes node0+node1, precommits none`: whose messages of
    its round a validator has (/status chain.heard), so a stall names who is not heard."""
    if not heard:
        return ""
    parts = [
        f"{label} {'+'.join(heard.get(key, ())) or 'none'}"
        for key, label in (
            ("proposal", "proposal"),
            ("prevote", "prevotes"),
            ("precommit", "precommits"),
        )
    ]
    return ", heard " + ", ".join(parts)


def advanced(min_blocks: int, base_mark: str, exclude: tuple[str, ...] = ()) -> Check:
    """Every validator not in `exclude` is `min_blocks` past its height in marks[base_mark]
    (e.g. the others keep committing while node4 is down)."""

    def check(obs: Observation) -> Verdict:
        base: dict[str, int] = dict(obs.marks.get(base_mark, {}))
        vals = [v for v in _readable_validators(obs)[0] if v not in exclude]
        missing = obs.missing(vals)
        if missing:
            return Verdict(False, f"no status: {', '.join(missing)}", cause="validator down")
        low = [v for v in vals if (obs.height(v) or 0) < base.get(v, 0) + min_blocks]
        heights = _heights(obs, vals) + (_rounds(obs, low, connections=True) if low else "")
        if low:
            return Verdict(
                False,
                f"heights {heights}, need +{min_blocks} over {base}",
                cause=_unheard_cause(obs, vals) + f"{', '.join(low)} not committing: without "
                f"{', '.join(exclude) or 'them'} is there still a quorum (> 2/3 of validators)?",
            )
        return Verdict(True, f"heights {heights} (from {base})")

    return check


def caught_up(node: str) -> Check:
    """`node` reached marks['sync_target'][node] (whoever served it)."""

    def check(obs: Observation) -> Verdict:
        target = obs.marks.get("sync_target", {}).get(node)
        h = obs.height(node)
        if h is None:
            return Verdict(False, f"{node}: no status", cause=f"{node} not back up")
        if target is None or h < int(target):
            return Verdict(False, f"{node} at {h}, target {target}", cause=f"{node} still syncing")
        return Verdict(True, f"{node} at {h} (target {target})")

    return check
