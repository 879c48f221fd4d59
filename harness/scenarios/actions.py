"""The named step kinds scenario files use: actions that perturb the testnet and record
marks for later checks, timing steps, and report conclusions.

Each action here is a factory taking the node names a scenario file's selectors resolved to
(harness/scenarios/loader.py); nothing here names a node. The perturbations themselves are
harness/run/perturb.py's; an action adds what the checks need to judge them afterwards
(heights when a node stopped, which clients held a reservation on a killed relay).
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from typing import Any

from harness.checks import Observation
from harness.errors import SentrynetError
from harness.model import Testnet
from harness.run.steps import CheckOutcome, RunContext


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


PROBE_MODES = ("dial", "identify")


def _probe_addr(obs: Observation, source: str, target: str, relay: str) -> str | None:
    """The circuit address through `relay` that `target` advertises (its /status, what
    identify tells peers), preferring one whose relay address is on a network of
    `source` (reachable without a NAT), else the first."""
    rid = obs.peer_id(relay)
    addrs = [a for a in obs.status_of(target).advertised_addrs if f"/p2p/{rid}/p2p-circuit" in a]
    home = set(obs.nodes[source].networks) if source in obs.nodes else set()
    for a in addrs:
        net = obs.net_of_ip(a.split("/")[2] if a.count("/") > 2 else None)
        if net is not None and net.name in home:
            return a
    return addrs[0] if addrs else None


def _held(obs: Observation, node: str) -> list[str]:
    return sorted(r.relay for r in obs.status_of(node).reservations)


def probe(source: str, target: str, relay: str, mode: str, key: str) -> Callable[[RunContext], str]:
    """Run node/probe.py inside `source`'s container (docker exec; our node image ships
    it): a new host with a fresh key reaches `target` through the circuit address through
    `relay` that `target` advertises, and pings it (mode dial) or also asks it for
    identify (mode identify). Appends the result to marks[key] (a list, one per run):
    from, target, via, mode, addr, at (harness s), ok, rtt_s, error, listen_addrs
    (identify), held_before / held_after (the relay peer ids `target` held a reservation
    on just before and after)."""

    def run(ctx: RunContext) -> str:
        obs = ctx.observe()
        addr = _probe_addr(obs, source, target, relay)
        rec: dict[str, Any] = {
            "from": source,
            "target": target,
            "via": relay,
            "mode": mode,
            "addr": addr,
            "at": ctx.observer.now(),
            "held_before": _held(obs, target),
            "ok": False,
            "rtt_s": None,
            "error": None,
        }
        if addr is None:
            rec["error"] = f"{target} advertises no circuit address through {relay}"
        else:
            rec.update(_exec_probe(ctx, source, mode, addr))
        rec["held_after"] = _held(ctx.observe(), target)
        ctx.marks.setdefault(key, []).append(rec)
        said = (
            f"ok, rtt {float(rec['rtt_s'] or 0) * 1000:.1f} ms"
            if rec["ok"]
            else f"FAILED: {rec['error']}"
        )
        told = (
            f"; identify: {len(rec.get('listen_addrs') or [])} listen addrs, circuits via "
            + ", ".join(
                sorted(
                    {
                        a.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[-1][-6:]
                        for a in rec.get("listen_addrs") or []
                        if "/p2p-circuit" in a
                    }
                )
            )
            if mode == "identify" and rec["ok"]
            else ""
        )
        return f"probe {mode} {source} -> {target} via {relay} ({addr}): {said}{told}"

    return run


def _exec_probe(ctx: RunContext, source: str, mode: str, addr: str) -> dict[str, Any]:
    """node/probe.py `mode` `addr` inside `source`'s container: its JSON result (ok,
    rtt_s, error, ...), or the error of a probe that printed none."""
    import json

    from harness.infra import docker as docker_ops

    c = docker_ops.node_container(_testnet(ctx).name, source)
    res = docker_ops.exec_in(c, ["python", "-m", "node.probe", mode, addr])
    lines = [ln for ln in res.output.splitlines() if ln.startswith("{")]
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        out = {"error": f"probe exit {res.exit_code}: {res.output.strip()[-300:]}"}
    keys = ("ok", "rtt_s", "error", "listen_addrs", "probe_peer", "duration_s")
    return {k: out[k] for k in keys if k in out}


def probe_forward(source: str, target: str, key: str) -> Callable[[RunContext], str]:
    """A new host with a fresh key in `source`'s container dials `target` at the public
    address of the port forward its router has for it (router public IP : forwarded
    port), and pings it. From behind that same router the dial needs the router to
    hairpin. Appends to marks[key]: from, target, via (the router), addr, hairpin,
    same_side (source behind that router), at, ok, rtt_s, error."""

    def run(ctx: RunContext) -> str:
        tn = _testnet(ctx)
        node = tn.node(target)
        found = [
            (r, f)
            for r in tn.routers
            for f in r.forwards
            if f.to == target and f.proto == "tcp" and f.to_port == node.p2p_port
        ]
        if not found:
            raise SentrynetError(
                f"no router forwards a TCP port to {target}'s p2p port {node.p2p_port}; "
                "add a `forwards:` entry for it to its network in the topology"
            )
        router, fwd = found[0]
        addr = f"/ip4/{router.public_ip}/tcp/{fwd.port}/p2p/{node.peer_id}"
        rec: dict[str, Any] = {
            "from": source,
            "target": target,
            "via": router.name,
            "mode": "dial",
            "addr": addr,
            "hairpin": router.hairpin,
            "same_side": router.network in tn.node(source).addresses,
            "at": ctx.observer.now(),
            "ok": False,
            "rtt_s": None,
            "error": None,
        }
        rec.update(_exec_probe(ctx, source, "dial", addr))
        ctx.marks.setdefault(key, []).append(rec)
        said = (
            f"ok, rtt {float(rec['rtt_s'] or 0) * 1000:.1f} ms"
            if rec["ok"]
            else f"FAILED: {rec['error']}"
        )
        side = "from behind the same router" if rec["same_side"] else "from outside"
        return f"probe dial {source} -> {target} at {router.name}'s forward {addr} ({side}): {said}"

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


def analyse_reach(sync_node: str) -> Callable[[RunContext], str]:
    """Record, from the model alone (harness/model/reach.py, as `sentrynet analyse`), why a
    cross-network circuit and cross-network sync to `sync_node` are impossible, if they are
    (marks['reach'], read by harness/checks/expect.py's expected negatives)."""

    def run(ctx: RunContext) -> str:
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
        home = obs.home(sync_node)
        for other in sorted(obs.nodes):
            if obs.only_private(other) and obs.home(other) != home:
                v = reach.pair_verdict(topo, topo.node(sync_node), topo.node(other))
                if v.direct or v.circuit:
                    sync_reasons = []
                    break
                sync_reasons.append(f"{sync_node}-{other}: {v.direct_reason}; {v.circuit_reason}")
        out["cross_network_sync"] = (
            f"no connection of any kind from {sync_node} to a peer behind the other network "
            f"(first: {sync_reasons[0]})"
            if sync_reasons
            else None
        )
        ctx.marks["reach"] = out
        return "; ".join(f"{k}: {'impossible' if v else 'possible'}" for k, v in out.items())

    return run


def perturbation(kind: str, **args: Any) -> Callable[[RunContext], str]:
    """One harness/run/perturb.py call (as `sentrynet perturb` makes it), on resolved names:
    kill|pause|unpause|restart|start nodes=[...]; disconnect|reconnect nodes=[...] network=;
    partition|heal networks=(a, b); nat network= nat= flush=; rebind network=;
    loss network= pct=;
    latency network= ms= jitter=; rate network= kbit=; cpu nodes=[...] cores=; clear."""

    def run(ctx: RunContext) -> str:
        p, tn = _perturb(), _testnet(ctx)
        if kind in CONTAINER_ACTIONS:
            return "; ".join(p.container_action(tn, n, kind) for n in args["nodes"])
        if kind in ("disconnect", "reconnect"):
            fn = p.disconnect if kind == "disconnect" else p.reconnect
            return "; ".join(str(fn(tn, n, args["network"])) for n in args["nodes"])
        if kind in ("partition", "heal"):
            a, b = args["networks"]
            return str((p.partition if kind == "partition" else p.heal)(tn, a, b))
        if kind == "nat":
            return str(p.set_nat(tn, args["network"], args["nat"], flush=args.get("flush", True)))
        if kind == "rebind":
            rebound = p.rebind(tn, args["network"])
            ctx.model_changed(rebound.testnet)
            ctx.marks.setdefault("rebinds", {})[args["network"]] = rebound.said
            return rebound.said
        if kind == "loss":
            return str(p.set_loss(tn, args["network"], float(args["pct"])))
        if kind == "latency":
            jitter = float(args.get("jitter") or 0.0)
            return str(p.set_latency(tn, args["network"], float(args["ms"]), jitter))
        if kind == "rate":
            return str(p.set_rate(tn, args["network"], int(args["kbit"])))
        if kind == "cpu":
            return "; ".join(p.set_cpu(tn, n, float(args["cores"])) for n in args["nodes"])
        if kind == "clear":
            return str(p.clear(tn))
        raise SentrynetError(f"unknown perturbation {kind!r}")

    return run


CONTAINER_ACTIONS = ("kill", "pause", "unpause", "restart", "start")
LINK_ACTIONS = ("disconnect", "reconnect")
NETWORK_ACTIONS = (
    "partition",
    "heal",
    "nat",
    "rebind",
    "loss",
    "latency",
    "rate",
    "cpu",
    "clear",
)
PERTURBATIONS = (*CONTAINER_ACTIONS, *LINK_ACTIONS, *NETWORK_ACTIONS)


def mark(what: str, key: str, nodes: tuple[str, ...] = ()) -> Callable[[RunContext], str]:
    """Record for later checks: marks[key] = heights | addresses | time (harness seconds)
    of `nodes` (every node when empty)."""

    def run(ctx: RunContext) -> str:
        obs = ctx.observe()
        names = list(nodes) or sorted(obs.nodes)
        value: Any
        if what == "heights":
            value = {n: h for n, h in _heights(obs).items() if n in names}
        elif what == "addresses":
            value = {
                n: {
                    "listen": list(obs.status_of(n).listen_addrs),
                    "advertised": list(obs.status_of(n).advertised_addrs),
                }
                for n in names
                if n in obs.status
            }
        elif what == "time":
            value = ctx.observer.now()
        else:
            raise SentrynetError(f"unknown mark {what!r}")
        ctx.marks[key] = value
        return f"marks[{key!r}] = {value}"

    return run


MARKS = ("heights", "addresses", "time")


def sleep(seconds: float, because: str) -> Callable[[RunContext], str]:
    """A plain wait, for steps where time itself is the subject (span a reservation TTL)."""

    def run(ctx: RunContext) -> str:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 15.0))
            if end - time.monotonic() > 0:
                ctx.progress.say(
                    f"  waiting {seconds:g}s ({because}): {end - time.monotonic():.0f}s left"
                )
        return f"waited {seconds:g}s: {because}"

    return run


def pace(every_s: float, state: dict[str, float], first: bool) -> Callable[[RunContext], str]:
    """Start of one `repeat: {every: S}` iteration: wait until S seconds after the previous
    iteration started (the first one starts at once)."""

    def run(ctx: RunContext) -> str:
        now = time.monotonic()
        if first or "start" not in state:
            state["start"] = now
            return "first iteration"
        due = state["start"] + every_s
        if due > now:
            time.sleep(due - now)
        state["start"] = max(due, now)
        return f"next iteration ({every_s:g}s after the previous one started)"

    return run


# ---------------------------------------------------------------------------------------
# conclusions (named in a scenario file's `conclusion:`)
# ---------------------------------------------------------------------------------------
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


CONCLUSIONS: dict[str, Callable[[list[CheckOutcome]], str]] = {
    "seed-rust": seed_rust_conclusion,
}
