"""Reachability from the model alone: who reaches whom over IP, which relays each node can
reserve on, and whether a direct dial, a relayed circuit or a DCUtR hole punch between two
nodes is possible — each with the reason.

Why: the seed's testnet failed because node0 (network a) and node4 (network b) shared no relay
both could reach over IP; no amount of relay code fixes that. This answers it before anything
starts (`sentrynet analyse TOPOLOGY`), and render uses the same rules to choose which of a relay
server's addresses a client is configured with.

The IP rules mirror what the rendered testnet does (templates/netsetup.sh.j2, router.sh.j2):
- two nodes on a common network reach each other directly (on-link, both ways);
- a node on a private network with a NAT router reaches the PUBLIC addresses of other nodes
  through the router (outbound; what comes back unasked depends on the router's filtering,
  harness/model/nat.py);
- behind a full cone (endpoint-independent filtering) a node is reached at its router's
  public address and its own p2p port (mappings keep the port) by anyone with a path to the
  public network; behind the other presets unsolicited inbound packets are dropped;
- nothing else: private networks never route to each other, a private network with
  `nat: none` has no path out at all, public nodes have no route into private networks.
Circuit relay v2: the listener must hold a reservation on a relay it can reach (it reserves on
its configured `relay_servers`), and the dialer must reach that relay too.
DCUtR: needs a relayed connection first, then TCP simultaneous open between the two NATed
public addresses: works when both are behind a cone (endpoint-independent, port-preserving
mapping); fails when either side is symmetric (the mapping for the peer differs from the one
the relay observed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.model.nat import model, openness
from harness.model.topology import (
    NodeSpec,
    Topology,
    nat_chain,
    nat_router_network,
    outside_network,
    public_router_network,
    router_public_ips,
)


@dataclass(frozen=True)
class Path:
    """How `src` reaches `dst` over IP: the destination address and the reason."""

    src: str
    dst: str
    addr: str  # dst's IP that src dials
    network: str  # dst's network the address is on
    via_router: str | None  # router-<net> when the path goes through src's NAT router
    reason: str
    port: int | None = None  # the TCP port src dials when not dst's p2p port (a forward)


def ip_path(topo: Topology, src: NodeSpec, dst: NodeSpec) -> Path | None:
    """The path from src to dst over IP, or None. Same network first, then via src's NAT."""
    for net in src.addresses:
        if net in dst.addresses:
            return Path(src.name, dst.name, dst.addresses[net], net, None, f"same network {net}")
    public = topo.public_network
    for net in src.addresses:
        spec = topo.network(net)
        if not spec.has_router:
            continue
        # out through the router, and the routers above it (nested NAT), outermost last
        crossed: list[str] = []
        for hop in nat_chain(net, topo.networks):
            hop_spec = topo.network(hop)
            crossed.append(f"{hop_spec.router_name} ({hop_spec.nat})")
            outside = outside_network(hop_spec, topo.networks)
            if outside not in dst.addresses:
                continue
            where = "public address" if outside == public.name else f"address on {outside}"
            how = (
                f"{spec.router_name} ({spec.nat} NAT)"
                if len(crossed) == 1
                else f"{' then '.join(crossed)} (nested NAT)"
            )
            return Path(
                src.name,
                dst.name,
                dst.addresses[outside],
                outside,
                spec.router_name,
                f"{dst.name}'s {where} through {how}",
            )
    inbound = _forward_entry(topo, dst) or _full_cone_entry(topo, dst)
    if inbound is None:
        return None
    router, addr, port = inbound
    via = None
    if public.name not in src.addresses:
        routed = [topo.network(n) for n in src.addresses if topo.network(n).has_router]
        if not routed:
            return None
        via = routed[0].router_name
    how = (
        f"{router}'s public address: a full cone lets anyone in to {dst.name}'s port {dst.p2p_port}"
        if port is None
        else f"{router}'s public port {port}, forwarded to {dst.name}'s port {dst.p2p_port}"
    )
    return Path(src.name, dst.name, addr, public.name, via, how, port)


def _full_cone_entry(topo: Topology, node: NodeSpec) -> tuple[str, str, None] | None:
    """(router, its public IP, None) when `node` has no public address and sits behind a
    full cone: that router's public address and the node's p2p port reach it."""
    net = nat_router_network(node, topo.networks)
    if net is None or not model(topo.network(net).nat).inbound_open:
        return None
    if topo.network(net).upstream is not None:
        return None  # behind nested NAT: the outer router filters too
    return f"router-{net}", router_public_ips(topo.networks)[net], None


def _forward_entry(topo: Topology, node: NodeSpec) -> tuple[str, str, int] | None:
    """(router, its public IP, public port) when `node` has no public address and its
    router forwards a public TCP port to the node's p2p port (a sentry behind NAT)."""
    net = nat_router_network(node, topo.networks)
    if net is None or topo.network(net).upstream is not None:
        return None  # behind nested NAT the outer router would need the forward too
    for f in topo.network(net).forwards:
        to_port = f.to_port if f.to_port is not None else node.p2p_port
        if f.to == node.name and f.proto == "tcp" and to_port == node.p2p_port:
            return f"router-{net}", router_public_ips(topo.networks)[net], f.port
    return None


def no_path_reason(topo: Topology, src: NodeSpec, dst: NodeSpec) -> str:
    """Why ip_path(src, dst) is None, in one phrase."""
    public = topo.public_network
    src_nets = ", ".join(src.addresses)
    dst_nets = ", ".join(dst.addresses)
    if public.name not in dst.addresses:
        routed = [topo.network(n) for n in dst.addresses if topo.network(n).has_router]
        why = (
            f"{', '.join(str(n.router_name) for n in routed)} drops unsolicited inbound packets"
            if routed
            else "no router connects it to anything"
        )
        return (
            f"{dst.name} is only on private network {dst_nets}, which {src.name} (on {src_nets}) "
            f"is not on, and {why}"
        )
    nats = [topo.network(n) for n in src.addresses]
    no_router = [n.name for n in nats if not n.public and not n.has_router]
    if no_router:
        return (
            f"{src.name}'s network {', '.join(no_router)} has nat: none (no router), so it has "
            f"no IP path to {dst.name}'s public address"
        )
    return f"no common network ({src.name}: {src_nets}; {dst.name}: {dst_nets})"


def nat_of(topo: Topology, node: NodeSpec) -> str:
    """`public` when the node has a public address, else the NAT type of its networks."""
    if topo.public_network.name in node.addresses:
        return "public"
    best = min(node.addresses, key=lambda n: openness(topo.network(n).nat))
    chain = nat_chain(best, topo.networks) if topo.network(best).has_router else [best]
    # behind nested NAT the path is as good as its worst router (a symmetric one anywhere
    # changes the mapping a peer sees)
    return max((topo.network(n).nat for n in chain), key=openness)


@dataclass(frozen=True)
class Reservation:
    """A relay `node` can reserve on: configured or not, reachable or not, and why."""

    node: str
    relay: str
    configured: bool
    reachable: bool
    addr: str | None
    reason: str


def reservations(topo: Topology, node: NodeSpec) -> list[Reservation]:
    """Every relay server in the testnet as seen from `node` (configured ones first)."""
    if not node.is_relay_client:
        return []
    relays = [topo.node(n) for n in node.relay_servers] + [
        r
        for r in topo.nodes
        if r.is_relay_server and r.name != node.name and r.name not in node.relay_servers
    ]
    out = []
    for relay in relays:
        configured = relay.name in node.relay_servers
        path = ip_path(topo, node, relay)
        if path is None:
            out.append(
                Reservation(
                    node.name,
                    relay.name,
                    configured,
                    False,
                    None,
                    no_path_reason(topo, node, relay),
                )
            )
        else:
            addr = path.addr if path.port is None else f"{path.addr}:{path.port}"
            out.append(Reservation(node.name, relay.name, configured, True, addr, path.reason))
    return out


def reservable(topo: Topology, node: NodeSpec) -> list[str]:
    """Relays `node` really holds a reservation on: configured and reachable over IP."""
    return [r.relay for r in reservations(topo, node) if r.configured and r.reachable]


@dataclass(frozen=True)
class PairVerdict:
    a: str
    b: str
    direct: bool
    direct_reason: str
    circuit: bool
    circuit_relays: tuple[str, ...]
    circuit_reason: str
    holepunch: bool
    holepunch_reason: str

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["circuit_relays"] = list(self.circuit_relays)
        return d


def _circuit_relays(topo: Topology, dialer: NodeSpec, listener: NodeSpec) -> list[str]:
    """Relays on which `listener` holds a reservation and which `dialer` reaches over IP.

    The dialer needs relaying enabled (relay_mode not off): that is what gives the node its
    circuit transport (relay.enabled in node.toml)."""
    if dialer.relay_mode == "off":
        return []
    out = []
    for relay in reservable(topo, listener):
        if relay == dialer.name:
            continue
        if ip_path(topo, dialer, topo.node(relay)) is not None:
            out.append(relay)
    return out


def pair_verdict(topo: Topology, a: NodeSpec, b: NodeSpec) -> PairVerdict:
    ab, ba = ip_path(topo, a, b), ip_path(topo, b, a)
    if ab and ba:
        direct, direct_reason = True, f"both ways: {ab.reason}"
    elif ab:
        direct, direct_reason = True, f"{a.name} dials {b.name}: {ab.reason}"
    elif ba:
        direct, direct_reason = True, f"{b.name} dials {a.name}: {ba.reason}"
    else:
        direct, direct_reason = False, no_path_reason(topo, a, b)

    a_to_b = _circuit_relays(topo, a, b)  # b listens
    b_to_a = _circuit_relays(topo, b, a)
    relays = tuple(dict.fromkeys(a_to_b + b_to_a))
    if relays:
        parts = []
        if a_to_b:
            parts.append(f"{a.name}->{b.name} via {', '.join(a_to_b)}")
        if b_to_a:
            parts.append(f"{b.name}->{a.name} via {', '.join(b_to_a)}")
        circuit, circuit_reason = True, "; ".join(parts)
    elif direct:
        circuit = False
        circuit_reason = "not needed: a direct path exists (and no relay serves both)"
    elif a.relay_mode == "off" and b.relay_mode == "off":
        circuit = False
        circuit_reason = f"relaying is off on both {a.name} and {b.name} (relay_mode: off)"
    else:
        circuit = False
        ra, rb = reservable(topo, a), reservable(topo, b)
        reach_a = _reachable_relays(topo, a)
        reach_b = _reachable_relays(topo, b)
        circuit_reason = (
            f"no relay both can use: {a.name} reaches relays {_list(reach_a)} "
            f"(reserved on {_list(ra)}), {b.name} reaches relays {_list(reach_b)} "
            f"(reserved on {_list(rb)})"
        )

    na, nb = nat_of(topo, a), nat_of(topo, b)
    if ab is not None and ba is not None:
        holepunch, hp_reason = False, "not needed: both dial each other directly"
    elif not circuit:
        holepunch, hp_reason = False, "needs a relayed connection first, and there is none"
    elif direct:
        holepunch, hp_reason = False, "not needed: one side dials the other directly"
    elif _dcutr_off(a) or _dcutr_off(b):
        who = ", ".join(n.name for n in (a, b) if _dcutr_off(n))
        holepunch, hp_reason = False, f"DCUtR disabled on {who} (config dcutr.enabled = false)"
    elif "none" in (na, nb):
        who = a.name if na == "none" else b.name
        holepunch, hp_reason = False, f"{who} has no NAT router (nat: none): no path out to punch"
    elif not (_punchable(na) and _punchable(nb)):
        who = ", ".join(n.name for n, k in ((a, na), (b, nb)) if not _punchable(k))
        holepunch, hp_reason = (
            False,
            f"symmetric NAT ({who}): the port mapped for the peer differs from the one "
            "identify observed, so simultaneous open misses",
        )
    else:
        holepunch, hp_reason = True, f"both behind {na}/{nb} NAT with a relayed connection"
        shared = [(n, others) for n in (a, b) if (others := _sharing(topo, n))]
        if shared:
            hp_reason += "; but " + "; ".join(
                f"{n.name} shares its router's public port {n.p2p_port} with "
                f"{', '.join(others)}: only one such pair can be direct at a time"
                for n, others in shared
            )
    return PairVerdict(
        a.name, b.name, direct, direct_reason, circuit, relays, circuit_reason, holepunch, hp_reason
    )


def shared_public_endpoints(topo: Topology) -> dict[str, list[str]]:
    """`router-<net>:<port>` -> the nodes behind that router listening on that port, where
    there are several: a port-preserving NAT gives them one public endpoint, so at most one
    pair of them across two routers can be direct at a time (harness/model/topology.py)."""
    groups: dict[str, list[str]] = {}
    for node in topo.nodes:
        net = public_router_network(node, topo.networks)
        if net is not None:
            groups.setdefault(f"router-{net}:{node.p2p_port}", []).append(node.name)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _sharing(topo: Topology, node: NodeSpec) -> list[str]:
    """Other nodes behind node's router on node's p2p port."""
    for names in shared_public_endpoints(topo).values():
        if node.name in names:
            return [n for n in names if n != node.name]
    return []


def _punchable(nat: str) -> bool:
    return nat == "public" or model(nat).punchable


def _dcutr_off(node: NodeSpec) -> bool:
    return node.config.get("dcutr", {}).get("enabled", True) is False


def _reachable_relays(topo: Topology, node: NodeSpec) -> list[str]:
    return [
        r.name
        for r in topo.nodes
        if r.is_relay_server and r.name != node.name and ip_path(topo, node, r) is not None
    ]


def _list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]" if items else "[none]"


@dataclass(frozen=True)
class Report:
    topology: str
    reservations: dict[str, list[Reservation]]
    pairs: list[PairVerdict]

    def to_dict(self) -> dict[str, object]:
        return {
            "topology": self.topology,
            "reservations": {k: [asdict(r) for r in v] for k, v in self.reservations.items()},
            "pairs": [p.to_dict() for p in self.pairs],
        }


def analyse(topo: Topology, only: tuple[str, str] | None = None) -> Report:
    """Every node's relay view and a verdict for every pair (or only the given pair)."""
    res = {n.name: reservations(topo, n) for n in topo.nodes}
    pairs = []
    nodes = list(topo.nodes)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if only and {a.name, b.name} != set(only):
                continue
            pairs.append(pair_verdict(topo, a, b))
    return Report(topo.name, res, pairs)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def format_report(report: Report, topo: Topology) -> str:
    """The readable form: each node's relays, a table of pairs, the reasons, a summary."""
    shown = {p.a for p in report.pairs} | {p.b for p in report.pairs}
    lines = [f"testnet {topo.name} ({topo.source})", "", "Relays each node can reserve on:"]
    rows = [["NODE", "ROLE", "NAT", "RELAY", "SERVER", "ADDRESS", "STATUS", "WHY"]]
    for node in topo.nodes:
        if node.name not in shown:
            continue
        base = [node.name, node.role, nat_of(topo, node), node.relay_mode]
        rs = report.reservations[node.name]
        if not rs:
            rows.append([*base, "-", "-", "not a relay client", ""])
        for r in rs:
            if r.configured:
                status = "reserves" if r.reachable else "CONFIGURED, UNREACHABLE"
            else:
                status = "reachable, not configured" if r.reachable else "unreachable"
            rows.append([*base, r.relay, r.addr or "-", status, r.reason])
            base = ["", "", "", ""]
    lines += _table(rows)

    def yn(flag: bool) -> str:
        return "yes" if flag else "no"

    lines += ["", "Pairs:"]
    rows = [["PAIR", "DIRECT", "CIRCUIT", "HOLE PUNCH"]]
    for p in report.pairs:
        via = f"yes ({', '.join(p.circuit_relays)})" if p.circuit else "no"
        rows.append([f"{p.a} - {p.b}", yn(p.direct), via, yn(p.holepunch)])
    lines += _table(rows)
    if topo.links:
        lines += ["", "Links (each way, on the direct path; a circuit takes its relay's links):"]
        for link in topo.links:
            said = [f"{link.latency_ms:g} ms"] if link.latency_ms else []
            if link.jitter_ms:
                said[-1] += f" +- {link.jitter_ms:g} ms"
            if link.loss_pct:
                said.append(f"{link.loss_pct:g}% loss")
            lines.append(f"  {link.a} - {link.b}: {', '.join(said)}")
    lines += ["", "Why:"]
    for p in report.pairs:
        lines.append(f"  {p.a} - {p.b}")
        lines.append(f"    direct:     {p.direct_reason}")
        lines.append(f"    circuit:    {p.circuit_reason}")
        lines.append(f"    hole punch: {p.holepunch_reason}")
    cut = [f"{p.a}-{p.b}" for p in report.pairs if not p.direct and not p.circuit]
    relayed = [f"{p.a}-{p.b}" for p in report.pairs if not p.direct and p.circuit]
    punch = [f"{p.a}-{p.b}" for p in report.pairs if p.holepunch]
    lines += [
        "",
        f"Summary: {len(report.pairs)} pair(s); {sum(p.direct for p in report.pairs)} direct, "
        f"{len(relayed)} only through a relay circuit, {len(punch)} can hole-punch, "
        f"{len(cut)} with no path at all.",
    ]
    if cut:
        lines.append(f"  no path (neither direct nor a shared relay): {', '.join(cut)}")
    return "\n".join(lines)
