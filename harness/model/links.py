"""Link conditions between two nodes (topology `links:`), and where each node applies them.

Why: a network's `latency_ms`/`loss_pct` touch every packet on it; real deployments also
have one slow or lossy path (a validator on another continent, one flaky peering) beside
fast ones. A link `{between: [node0, node4], latency_ms: 80}` delays node0's packets to
node4 and node4's to node0 by 80 ms each way (+- `jitter_ms`), and drops `loss_pct`
percent of what each receives from the other, on their direct path only: traffic through
a relay takes the relay's links.

Behind NAT a peer is not an address but a router's public address and the ports that are
the peer's own there: its p2p port and its ephemeral range (harness/model/testnet.py gives
every node behind a router its own block, and every preset but symmetric keeps ports), so
a rule matches exactly one peer also when several sit behind one router. A symmetric
router picks ports at random: a link across it cannot be matched and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.model.nat import model as nat_model
from harness.model.topology import (
    NodeSpec,
    Topology,
    jitter_ms,
    public_router_network,
    router_public_ips,
)

LINK_KEYS = ("between", "latency_ms", "jitter_ms", "loss_pct")


@dataclass(frozen=True)
class LinkSpec:
    """Conditions on the direct path between two nodes, each way."""

    a: str
    b: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


@dataclass(frozen=True)
class LinkRule:
    """What one node applies for one link: packets to `ip` (to one of `ports`, when the
    peer is behind NAT) are delayed on the way out; packets from there are dropped with
    `loss_pct` on the way in."""

    peer: str
    ip: str
    ports: tuple[tuple[int, int], ...] = ()  # () = any port (the peer's own address)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def multiport(self) -> str:
        """The ports as iptables -m multiport writes them: 4001,20000:20999."""
        return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ports)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LinkRule:
        return cls(**{**d, "ports": tuple(tuple(p) for p in d.get("ports", ()))})


def parse_links(c: Any, raw: Any, nodes: dict[str, NodeSpec]) -> tuple[LinkSpec, ...]:
    """`links: [{between: [A, B], latency_ms, jitter_ms, loss_pct}]` (c: the topology's
    field checker, so errors name the field and the fix)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise c.fail(
            "links",
            f"expected a list, got {raw!r}",
            "e.g. `- {between: [node0, node4], latency_ms: 80}`",
        )
    out: list[LinkSpec] = []
    seen: set[frozenset[str]] = set()
    for i, item in enumerate(raw):
        path = f"links[{i}]"
        spec = c.mapping(item, path, "a link: between, latency_ms, jitter_ms, loss_pct")
        c.keys(spec, path, LINK_KEYS)
        pair = spec.get("between")
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(n, str) for n in pair)
        ):
            raise c.fail(
                f"{path}.between", f"expected two node names, got {pair!r}", "write [node0, node4]"
            )
        for j, name in enumerate(pair):
            if name not in nodes:
                raise c.fail(
                    f"{path}.between[{j}]",
                    f"{name!r} is not a node",
                    f"known nodes: {', '.join(nodes)}",
                )
        if pair[0] == pair[1]:
            raise c.fail(f"{path}.between", "the same node twice", "name two different nodes")
        if frozenset(pair) in seen:
            raise c.fail(
                f"{path}.between",
                f"{pair[0]} - {pair[1]} has a link already",
                "merge the two entries",
            )
        seen.add(frozenset(pair))
        latency = c.number(
            spec.get("latency_ms", 0), f"{path}.latency_ms", 0, 60000, "milliseconds"
        )
        jitter = jitter_ms(c, spec, path, latency)
        loss = c.number(
            spec.get("loss_pct", 0), f"{path}.loss_pct", 0, 100, "percent of packets dropped"
        )
        if latency == 0 and loss == 0:
            raise c.fail(path, "no condition", "give it `latency_ms:` and/or `loss_pct:`")
        out.append(LinkSpec(pair[0], pair[1], latency, jitter, loss))
    return tuple(out)


def check_links(c: Any, topo: Topology) -> None:
    """Every link's endpoints can be matched: no symmetric NAT in front of either."""
    for i, link in enumerate(topo.links):
        for name in (link.a, link.b):
            net = public_router_network(topo.node(name), topo.networks)
            if net is not None and not nat_model(topo.network(net).nat).port_preserving:
                raise c.fail(
                    f"links[{i}].between",
                    f"{name} is behind router-{net} ({topo.network(net).nat}), whose mappings "
                    "take random ports: its packets cannot be told from its neighbours'",
                    f"link nodes behind port-preserving NAT (a cone preset), or give network "
                    f"{net} the latency instead",
                )


def endpoints(
    topo: Topology, dst: NodeSpec, port_range: tuple[int, int] | None, src: NodeSpec
) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
    """(ip, ports) at which `src`'s packets reach `dst` directly: a network they share (the
    peer's address there), the peer's public address, or, behind NAT, its outermost
    router's public address with the peer's own ports."""
    shared = [dst.addresses[n] for n in src.addresses if n in dst.addresses]
    if shared:
        return [(ip, ()) for ip in shared]
    public = topo.public_network.name
    if public in dst.addresses:
        return [(dst.addresses[public], ())]
    net = public_router_network(dst, topo.networks)
    if net is None:
        return []
    ports = [(dst.p2p_port, dst.p2p_port)]
    if port_range is not None:
        ports.append(port_range)
    return [(router_public_ips(topo.networks)[net], tuple(ports))]


def rules_for(
    topo: Topology, node: NodeSpec, port_ranges: dict[str, tuple[int, int] | None]
) -> tuple[LinkRule, ...]:
    """The rules `node` applies: one per link it is in and address of the peer."""
    out: list[LinkRule] = []
    for link in topo.links:
        if node.name not in (link.a, link.b):
            continue
        peer = topo.node(link.b if node.name == link.a else link.a)
        for ip, ports in endpoints(topo, peer, port_ranges.get(peer.name), node):
            out.append(
                LinkRule(peer.name, ip, ports, link.latency_ms, link.jitter_ms, link.loss_pct)
            )
    return tuple(out)
