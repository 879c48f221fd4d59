"""The scenarios: which checks, in which order, with which perturbations in between.

One definition per scenario, used by `sentrynet scenario NAME` and by scenarios/test_*.py.
Deadlines are generous (they bound a failure, a passing check returns as soon as it holds);
the whole scenario shares one testnet.

    sentry          cone NAT both sides: reservations, relayed circuit, DCUtR upgrade,
                    consensus, cross-network sync of a wiped node, no forks
    seed-exact      the seed testnet (no NAT): consensus through the sentries' gossip; a
                    cross-network circuit and cross-network sync shown impossible, with the
                    reachability reason (expected negatives, not failures)
    symmetric-nat   DCUtR fails with a recorded reason, traffic stays relayed, sync still
                    crosses through the relay
    seed-rust       the seed's question asked of rust-libp2p 0.56: validators on the rust
                    reference node behind cone NAT, relays without peer id; reservations,
                    circuits, DCUtR rust<->rust and rust<->python, consensus, sync
    mixed-relay     the sentry scenario with both sentries on the rust-libp2p reference node:
                    our clients reserve, open circuits and hole-punch through relays we did
                    not write
    relay-failover  kill a sentry: its clients reserve elsewhere; restart it: they come back
    partition-heal  partition a|b, heal, every node converges on one chain, no forks
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from typing import Any

from harness.checks import Observation
from harness.checks import chain as chain_checks
from harness.checks import relay as relay_checks
from harness.checks.expect import impossible
from harness.errors import SentrynetError
from harness.model import Testnet
from harness.run.steps import (
    ActionStep,
    CheckOutcome,
    CheckStep,
    RunContext,
    Scenario,
    WaitStep,
)

SYNC_NODE = "node4"  # the validator wiped and re-synced (network b in every topology)
KILLED_RELAY = "node3"  # the sentry killed in relay-failover (network a's)


# ---------------------------------------------------------------------------------------
# actions (perturbations through harness/run/perturb.py; marks for the checks)
# ---------------------------------------------------------------------------------------
def _testnet(ctx: RunContext) -> Testnet:
    """The model the actions act on (the runner always passes one)."""
    if ctx.testnet is None:
        raise SentrynetError("this step acts on a running testnet; the context has none")
    return ctx.testnet


def _perturb() -> Any:
    from harness.run import perturb

    return perturb


def _heights(obs: Observation) -> dict[str, int]:
    return {n: h for n in obs.nodes if (h := obs.height(n)) is not None}


def _set_mark(ctx: RunContext, key: str, sub: str, value: Any) -> None:
    ctx.marks.setdefault(key, {})[sub] = value


# The block store's files per implementation: our node's sqlite database (a 0-byte file is
# an empty database, a 0-byte WAL/shm is ignored), the rust node's append-only block log
# (a 0-byte log is an empty chain; its signing log, signed.jsonl, is kept: a validator
# must not forget what it signed).
STORE_FILES = {
    "python": ("chain.sqlite", "chain.sqlite-wal", "chain.sqlite-shm"),
    "rust": ("chain.jsonl",),
}


def wipe_store(testnet: Testnet, node: str, data_dir: str = "/data") -> str:
    """Empty a STOPPED node's block store: overwrite its store files with empty ones
    (docker cp works on stopped containers). The node key lives elsewhere and is kept, so
    the node comes back with the same peer id and an empty chain."""
    from harness.infra import docker as docker_ops

    files = STORE_FILES[testnet.node(node).impl]
    c = docker_ops.node_container(testnet.name, node)
    c.reload()
    if c.status == "running":
        raise SentrynetError(f"wipe {node}: container {c.name} is still running; stop it first")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for fname in files:
            info = tarfile.TarInfo(fname)
            info.size = 0
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(b""))
    if not c.put_archive(data_dir, buf.getvalue()):
        raise SentrynetError(f"wipe {node}: docker cp into {c.name}:{data_dir} failed")
    return f"emptied {', '.join(files)} in {c.name}:{data_dir}"


def stop_and_wipe(node: str) -> Callable[[RunContext], str]:
    def run(ctx: RunContext) -> str:
        obs = ctx.observe()
        ctx.marks["stopped_heights"] = _heights(obs)
        _set_mark(ctx, "stopped_at", node, obs.t)
        said = _perturb().container_action(_testnet(ctx), node, "kill")
        wiped = wipe_store(_testnet(ctx), node)
        return f"{said}; {wiped}; heights then {ctx.marks['stopped_heights']}"

    return run


def start_node(node: str, sync_target: bool = False) -> Callable[[RunContext], str]:
    def run(ctx: RunContext) -> str:
        obs = ctx.observe()
        others = {n: h for n, h in _heights(obs).items() if n != node}
        if sync_target:
            _set_mark(ctx, "sync_target", node, max(others.values(), default=0))
        said = _perturb().container_action(_testnet(ctx), node, "start")
        _set_mark(ctx, "restarted_at", node, ctx.observer.now())
        extra = f"; sync target {ctx.marks['sync_target'][node]}" if sync_target else ""
        return said + extra

    return run


def kill_relay(relay: str) -> Callable[[RunContext], str]:
    def run(ctx: RunContext) -> str:
        obs = ctx.observe()
        rid = obs.peer_id(relay)
        holders = sorted(
            n for n in obs.clients() if any(r.relay == rid for r in obs.status_of(n).reservations)
        )
        _set_mark(ctx, "reserved_on", relay, holders)
        said = _perturb().container_action(_testnet(ctx), relay, "kill")
        _set_mark(ctx, "killed_at", relay, ctx.observer.now())
        return f"{said}; clients that held a reservation on it: {', '.join(holders) or 'none'}"

    return run


def partition(a: str, b: str, sentry: str) -> Callable[[RunContext], str]:
    """Cut a from b (perturb.partition drops each side's subnet and NAT router address) and
    cut `sentry` (a's sentry) off the public network, so the sentries' own public link
    cannot carry gossip across either: each side is really alone."""

    def run(ctx: RunContext) -> str:
        ctx.marks["partitioned_heights"] = _heights(ctx.observe())
        p, tn = _perturb(), _testnet(ctx)
        said = [str(p.partition(tn, a, b))]
        said.append(str(p.disconnect(tn, sentry, tn.public_network.name)))
        return "; ".join(said)

    return run


def heal(a: str, b: str, sentry: str) -> Callable[[RunContext], str]:
    def run(ctx: RunContext) -> str:
        p, tn = _perturb(), _testnet(ctx)
        said = f"{p.heal(tn, a, b)}; {p.reconnect(tn, sentry, tn.public_network.name)}"
        ctx.marks["healed_heights"] = _heights(ctx.observe())
        return f"{said}; heights at heal {ctx.marks['healed_heights']}"

    return run


def analyse_reach(ctx: RunContext) -> str:
    """Record, from the model alone (harness/model/reach.py, as `sentrynet analyse`), why a
    cross-network circuit and cross-network sync to SYNC_NODE are impossible, if they are."""
    from harness.model import reach

    topo = ctx.extra["topology"]
    obs = ctx.observer.last or ctx.observe()
    out: dict[str, str | None] = {}
    circuit_reasons: list[str] = []
    for a, b in obs.cross_pairs(obs.validators()):
        v = reach.pair_verdict(topo, topo.node(a), topo.node(b))
        if v.circuit or v.direct:
            circuit_reasons = []
            break
        circuit_reasons.append(f"{a}-{b}: {v.circuit_reason}")
    out["relayed_circuit"] = "; ".join(circuit_reasons[:2]) or None
    sync_reasons: list[str] = []
    home = obs.home(SYNC_NODE)
    for other in sorted(obs.nodes):
        if obs.only_private(other) and obs.home(other) != home:
            v = reach.pair_verdict(topo, topo.node(SYNC_NODE), topo.node(other))
            if v.direct or v.circuit:
                sync_reasons = []
                break
            sync_reasons.append(f"{SYNC_NODE}-{other}: {v.direct_reason}; {v.circuit_reason}")
    out["cross_network_sync"] = (
        f"no connection of any kind from {SYNC_NODE} to a peer behind the other network "
        f"(first: {sync_reasons[0]})"
        if sync_reasons
        else None
    )
    ctx.marks["reach"] = out
    return "; ".join(f"{k}: {'impossible' if v else 'possible'}" for k, v in out.items())


# ---------------------------------------------------------------------------------------
# the scenarios
# ---------------------------------------------------------------------------------------
def _sync_steps(expect_crossing: bool, deadline_s: float = 180.0) -> list[Any]:
    """Stop and wipe SYNC_NODE, let the others commit, restart it, check its sync."""
    sync_check: Any = chain_checks.cross_network_sync(SYNC_NODE)
    expect = "holds"
    if not expect_crossing:
        sync_check = impossible(sync_check, "cross_network_sync", chain_checks.caught_up(SYNC_NODE))
        expect = "impossible"
    return [
        ActionStep(f"stop {SYNC_NODE} and wipe its block store", stop_and_wipe(SYNC_NODE)),
        WaitStep(
            f"the others commit 2 blocks without {SYNC_NODE}",
            chain_checks.advanced(2, "stopped_heights", exclude=(SYNC_NODE,)),
            90,
            likely_cause="quorum lost without the stopped validator",
            requires=("consensus",),
        ),
        ActionStep(
            f"start {SYNC_NODE} with an empty store", start_node(SYNC_NODE, sync_target=True)
        ),
        CheckStep("cross_network_sync", sync_check, deadline_s, expect=expect),
    ]


def _relay_feature_steps() -> list[Any]:
    """The sentry scenario's steps: every relay feature end to end, then the chain."""
    return [
        CheckStep("reservations", relay_checks.reservations, 120),
        CheckStep("relayed_circuit", relay_checks.relayed_circuit, 90, requires=("reservations",)),
        CheckStep("dcutr_upgrade", relay_checks.dcutr_upgrade, 90, requires=("relayed_circuit",)),
        CheckStep("consensus", chain_checks.consensus(3), 120),
        *_sync_steps(expect_crossing=True),
        CheckStep("no_forks", chain_checks.no_forks, 30, always=True),
    ]


def sentry() -> Scenario:
    return Scenario(
        name="sentry",
        topology="sentry",
        description="cone NAT on both private networks: every relay feature end to end",
        steps=_relay_feature_steps(),
    )


def mixed_relay() -> Scenario:
    return Scenario(
        name="mixed-relay",
        topology="mixed-relay",
        description="the sentry scenario with both sentries on the rust-libp2p reference "
        "node: our nodes reserve, open circuits and hole-punch through relays we did not write",
        steps=_relay_feature_steps(),
    )


SEED_CONCLUDED = (
    "The seed (a rust-libp2p 0.56 relay integration) concluded that its relay client cannot "
    "reserve dynamically: listen_on(<relay>/p2p-circuit) returned Ok, yet no reservation "
    "request reached the relay (NO_RESERVATION), and that cross-network sync cannot work "
    "without direct connections."
)


def seed_rust_conclusion(outcomes: list[CheckOutcome]) -> str:
    """The seed's conclusion against what this run of rust-libp2p 0.56 showed, from the
    check rows (their details carry the evidence)."""
    rows = {o.name: o for o in outcomes}

    def said(name: str, shown: str, not_shown: str) -> str:
        o = rows.get(name)
        if o is None:
            return f"{name}: not run"
        return shown if o.passed else f"{not_shown} ({name}: {o.detail[:160]})"

    shown = [
        said(
            "reservations",
            "rust-libp2p 0.56 validators behind cone NAT reserved on relays configured "
            "without peer id and found through identify, with listen_on(<addr>/p2p/<id>/"
            "p2p-circuit)",
            "the rust validators did not all hold a reservation",
        ),
        said(
            "relayed_circuit",
            "circuits through those relays connected validators across the two NATs",
            "no relayed circuit crossed the networks",
        ),
        said(
            "dcutr_upgrade",
            "DCUtR upgraded rust<->rust pairs to direct connections",
            "DCUtR rust<->rust did not upgrade",
        ),
        said(
            "dcutr_rust_python",
            "and rust<->python pairs as well",
            "DCUtR rust<->python did not upgrade",
        ),
        said(
            "consensus",
            "consensus ran across the networks",
            "consensus did not run across",
        ),
        said(
            "cross_network_sync",
            "a wiped rust validator synced its history from peers behind the other NAT",
            "cross-network sync did not happen",
        ),
    ]
    ok = all(o.passed for o in outcomes) and bool(outcomes)
    verdict = (
        "This run shows the opposite: the capability is there when the relay client is "
        "driven (dial the relay, wait for identify, then listen_on the circuit address) and "
        "the relay has an address to hand out"
        if ok
        else "This run did not show all of it"
    )
    trap = (
        " One trap of 0.56 reproduces the seed's symptom and the reference node works "
        "around it: a relay first met over a relayed connection (a sentry that dialled the "
        "validator through another relay) counts as connected, so the relay client's own "
        "dial to it is refused, the listener closes and no RESERVE is sent; dialling the "
        "relay directly before listen_on avoids it (peers/rust/src/node/relays.rs)."
    )
    return f"{SEED_CONCLUDED} {verdict}: " + "; ".join(shown) + "." + trap


def seed_rust() -> Scenario:
    return Scenario(
        name="seed-rust",
        topology="seed-rust",
        description="the seed layout behind cone NAT with the validators on the rust-libp2p "
        "reference node: what the seed could not do, done by rust-libp2p 0.56",
        steps=[
            CheckStep("reservations", relay_checks.reservations, 120),
            CheckStep(
                "relayed_circuit", relay_checks.relayed_circuit, 90, requires=("reservations",)
            ),
            CheckStep(
                "dcutr_upgrade", relay_checks.dcutr_upgrade, 90, requires=("relayed_circuit",)
            ),
            CheckStep(
                "dcutr_rust_python",
                relay_checks.dcutr_upgrade_between("rust", "python"),
                90,
                requires=("reservations",),
            ),
            CheckStep("consensus", chain_checks.consensus(3), 120),
            *_sync_steps(expect_crossing=True),
            CheckStep("no_forks", chain_checks.no_forks, 30, always=True),
        ],
        conclusion=seed_rust_conclusion,
    )


def seed_exact() -> Scenario:
    return Scenario(
        name="seed-exact",
        topology="seed-exact",
        description="the seed testnet (no NAT): gossip consensus works; cross-network "
        "circuits and sync are impossible, and the report says why",
        steps=[
            ActionStep("analyse reachability (harness/model/reach.py)", analyse_reach),
            CheckStep("reservations", relay_checks.reservations, 120),
            CheckStep("consensus", chain_checks.consensus(3), 120),
            # after consensus held for 5 blocks, a possible circuit would have formed
            CheckStep(
                "relayed_circuit",
                impossible(relay_checks.relayed_circuit, "relayed_circuit"),
                30,
                expect="impossible",
            ),
            *_sync_steps(expect_crossing=False),
            CheckStep("no_forks", chain_checks.no_forks, 30, always=True),
        ],
    )


def symmetric_nat() -> Scenario:
    return Scenario(
        name="symmetric-nat",
        topology="symmetric-nat",
        description="symmetric NAT: DCUtR fails with a reason, traffic and sync stay relayed",
        steps=[
            CheckStep("reservations", relay_checks.reservations, 120),
            CheckStep(
                "relayed_circuit", relay_checks.relayed_circuit, 90, requires=("reservations",)
            ),
            CheckStep(
                "dcutr_fails",
                relay_checks.dcutr_fails,
                120,
                expect="fails",
                requires=("relayed_circuit",),
            ),
            CheckStep("consensus", chain_checks.consensus(3), 120),
            *_sync_steps(expect_crossing=True),
            CheckStep("no_forks", chain_checks.no_forks, 30, always=True),
        ],
    )


def relay_failover() -> Scenario:
    return Scenario(
        name="relay-failover",
        topology="sentry",
        description=f"kill sentry {KILLED_RELAY}: its clients hold reservations elsewhere; "
        "restart it: they reserve on it again",
        steps=[
            CheckStep("reservations", relay_checks.reservations, 120),
            ActionStep(f"kill relay {KILLED_RELAY}", kill_relay(KILLED_RELAY)),
            CheckStep("failover", relay_checks.reserved_elsewhere(KILLED_RELAY), 60),
            ActionStep(f"start relay {KILLED_RELAY}", start_node(KILLED_RELAY)),
            CheckStep("reservations_restored", relay_checks.reservations_back(KILLED_RELAY), 90),
        ],
    )


def partition_heal() -> Scenario:
    return Scenario(
        name="partition-heal",
        topology="sentry",
        description="partition network a from b, heal, converge on one chain without forks",
        steps=[
            CheckStep("consensus", chain_checks.consensus(3), 120),
            ActionStep("partition a | b", partition("a", "b", KILLED_RELAY)),
            CheckStep("partitioned", relay_checks.partitioned, 60),
            ActionStep("heal a | b", heal("a", "b", KILLED_RELAY)),
            CheckStep("converged", chain_checks.converged(3), 120),
            CheckStep("no_forks", chain_checks.no_forks, 30, always=True),
        ],
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "sentry": sentry,
    "mixed-relay": mixed_relay,
    "seed-rust": seed_rust,
    "seed-exact": seed_exact,
    "symmetric-nat": symmetric_nat,
    "relay-failover": relay_failover,
    "partition-heal": partition_heal,
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise SentrynetError(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
