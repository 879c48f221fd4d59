"""Generated topologies for the benchmarks, validated by the harness's own topology model.

Each function returns the YAML document (a dict in the format of docs/topology.md);
`write(doc, path)` dumps it and loads it back through `harness.model.load_topology`, so a
benchmark never runs a topology the harness would reject. Subnets here are defaults: the
runner moves any that are taken on this machine (harness.run.setup.free_subnet_overrides).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.model.topology import IMPLS, Topology, load_topology
from node.config import P2PSection

PUBLIC_SUBNET = "10.99.0.0/24"
VALIDATORS = 4  # a fixed validator set: the chain load is the same at every size


def _private_subnet(i: int) -> str:
    return f"172.{24 + i}.0.0/24"


def networks_for(n_nodes: int) -> int:
    """Private networks for a scale point: 2 for 8 or 16 nodes, then one per 8 nodes, at
    most 8 (8 -> 2, 16 -> 2, 32 -> 4, 64 -> 8)."""
    return max(2, min(8, n_nodes // 8))


PEER_BUDGET = 8  # connections a scale client keeps (see scale())
# A sentry's CPU share against a client's (topology cpu_weight) while the machine is short.
# 4 was tried at 64 nodes (docs/bench.md, 2026-12-06): the second reservations then waited on
# the clients' own backlog (a client at 0.02 cores answering its relay's pings and RESERVE
# replies more than 10 s late while the relay idled at 0.09), 56 of 64 ready at the deadline
# against 64 of 64 at weight 1 the same afternoon; so every node weighs the same here.
SENTRY_CPU_WEIGHT = 1
DEFAULT_BUDGET = P2PSection.max_connections  # the node's default p2p.max_connections


# Learnt peers a sentry dials, as few as a client wants (3/4 of PEER_BUDGET): its budget is
# room for the clients that reserve on it, not an appetite. With the default low watermark
# (3/4 of that budget, 27 at 64 nodes) every sentry chased the ~40 clients of other
# networks, all full, through a circuit and a hole punch each (docs/bench.md, 2026-12-07).
SENTRY_LOW_WATERMARK = -(-3 * PEER_BUDGET // 4)


def sentry_budget(clients_served: int) -> int:
    """A sentry's peer budget: room for every client that reserves on it twice over (the
    clients' own learnt-peer dials reach it too) plus 8, never below the node's default.
    At 128 nodes a sentry serves 30 clients: with the default 32 it was over budget from
    the start and closed the clients that had not reserved yet, first in line as the newest
    unprotected inbound connections."""
    return max(DEFAULT_BUDGET, 2 * clients_served + 8)


def scale(
    n_nodes: int, n_private: int, nat: str = "cone", block_interval_s: float = 1.0
) -> dict[str, Any]:
    """N nodes over P private networks behind `nat` routers, one sentry per network.

    The sentry of network i sits on it and on the public network (relay mode both) and uses
    the next network's sentry as its relay; every other node is a relay client of its local
    sentry and of the next network's sentry (reached through its NAT router), as in
    scenarios/sentry.yaml. Four validators, spread round-robin over the networks; the rest
    are full nodes.

    Clients keep a peer budget (`p2p.max_connections: PEER_BUDGET`), as deployed nodes do
    (a connection manager's watermarks): at the node's default of 32, every node of a
    32-node testnet connects to every other, so the work of keeping the network grows
    with the square of its size (pings, gossip copies, circuits through the sentries) and
    32 nodes saturated 2 cores. Sentries serve the reservations and circuits of two
    networks' clients and get a budget sized for them (sentry_budget; SENTRY_CPU_WEIGHT:
    why weight 1).
    """
    if n_private < 2:
        raise ValueError("n_private must be at least 2 (a sentry needs another to relay to)")
    if n_nodes < 2 * n_private:
        raise ValueError(f"{n_nodes} nodes cannot fill {n_private} networks (2 per network)")
    nets: dict[str, Any] = {
        f"p{i}": {"subnet": _private_subnet(i), "nat": nat} for i in range(n_private)
    }
    nets["public"] = {"subnet": PUBLIC_SUBNET, "public": True}
    members: list[list[str]] = [[] for _ in range(n_private)]
    for k in range(n_nodes):
        members[k % n_private].append(f"n{k:02d}")
    sentries = [m[-1] for m in members]
    clients_order = [
        name
        for i in range(max(map(len, members)))
        for m in members
        for name in m[i : i + 1]
        if name not in sentries
    ]
    validators = set(clients_order[:VALIDATORS])
    nodes: dict[str, Any] = {}
    for i, m in enumerate(members):
        nxt = sentries[(i + 1) % n_private]
        served = len(m) - 1 + len(members[i - 1]) - 1  # its network's clients, the previous'
        for name in m:
            if name == sentries[i]:
                nodes[name] = {
                    "role": "sentry",
                    "networks": [f"p{i}", "public"],
                    "relay_mode": "both",
                    "relay_servers": [nxt],
                    "cpu_weight": SENTRY_CPU_WEIGHT,
                    "config": {
                        "p2p": {
                            "max_connections": sentry_budget(served),
                            "low_watermark": SENTRY_LOW_WATERMARK,
                        }
                    },
                }
            else:
                nodes[name] = {
                    "role": "validator" if name in validators else "full",
                    "networks": [f"p{i}"],
                    "relay_mode": "client",
                    "relay_servers": [sentries[i], nxt],
                    "config": {"p2p": {"max_connections": PEER_BUDGET}},
                }
    ordered = {name: nodes[name] for name in sorted(nodes)}
    return {
        "name": f"scale{n_nodes}",
        "description": f"bench: {n_nodes} nodes over {n_private} private {nat} networks",
        "chain": {"block_interval_s": block_interval_s},
        "networks": nets,
        "nodes": ordered,
    }


def pairs(
    k: int,
    nat: str,
    dcutr: bool = True,
    relay_impl: str = "python",
    client_impls: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One public relay; k relay clients behind each of two `nat` routers (a0.., b0..).

    Every a-node learns the b-nodes through peer exchange and reaches them over a circuit
    through the relay: k*k cross pairs, each a hole-punch sample (dcutr) or a circuit that
    stays up (dcutr off). The relay is the only validator (the model needs one): a light,
    steady chain of one block per second gossiped to everyone besides the nodes' own traffic
    (identify, ping, gossipsub heartbeats, peer exchange), so CPU noise stays low.

    `relay_impl` is the relay's `impl:`; `client_impls[i]` (k entries) that of a<i> and b<i>,
    so both sides hold the same mix (bench/side_by_side.py). Defaults: every node ours.
    """
    if client_impls is not None and len(client_impls) != k:
        raise ValueError(f"client_impls has {len(client_impls)} entries for k={k}")
    nets = {
        "a": {"subnet": _private_subnet(0), "nat": nat},
        "b": {"subnet": _private_subnet(1), "nat": nat},
        "public": {"subnet": PUBLIC_SUBNET, "public": True},
    }
    nodes: dict[str, Any] = {
        "relay": {"role": "validator", "networks": ["public"], "relay_mode": "server"}
    }
    for side in ("a", "b"):
        for i in range(k):
            spec: dict[str, Any] = {
                "role": "full",
                "networks": [side],
                "relay_mode": "client",
                "relay_servers": ["relay"],
            }
            if not dcutr:
                spec["config"] = {"dcutr": {"enabled": False}}
            nodes[f"{side}{i}"] = spec
    impls = {"relay": relay_impl}
    for i, impl in enumerate(client_impls or ()):
        impls.update({f"a{i}": impl, f"b{i}": impl})
    with_impls(nodes, impls)
    return {
        "name": f"pairs{k}-{nat}",
        "description": f"bench: {k}x{k} cross pairs over one relay, {nat} NAT, dcutr {dcutr}",
        "chain": {"block_interval_s": 1.0},
        "networks": nets,
        "nodes": nodes,
    }


def sync(relay_impl: str = "python") -> dict[str, Any]:
    """Four validators and `sync-direct` on network a (cone); `sync-relay` alone on network
    b behind a symmetric router with DCUtR off, so everything it gets comes over circuits
    through the public relay (which does not serve sync itself). Both sync the same chain
    from the same four validators. `relay_impl`: the relay's `impl:` (the others are ours)."""
    nets = {
        "a": {"subnet": _private_subnet(0), "nat": "cone"},
        "b": {"subnet": _private_subnet(1), "nat": "symmetric"},
        "public": {"subnet": PUBLIC_SUBNET, "public": True},
    }
    client = {"relay_mode": "client", "relay_servers": ["relay"]}
    # the relay follows the chain but must not serve sync: sync-relay reaches it directly
    nodes: dict[str, Any] = {
        "relay": {
            "role": "full",
            "networks": ["public"],
            "relay_mode": "server",
            "serve_sync": False,
        }
    }
    for i in range(VALIDATORS):
        nodes[f"v{i}"] = {"role": "validator", "networks": ["a"], **client}
    nodes["sync-direct"] = {"role": "full", "networks": ["a"], **client}
    nodes["sync-relay"] = {
        "role": "full",
        "networks": ["b"],
        **client,
        "config": {"dcutr": {"enabled": False}},
    }
    with_impls(nodes, {"relay": relay_impl})
    return {
        "name": "syncbench",
        "description": "bench: direct vs relayed sync of one chain",
        "chain": {"block_interval_s": 1.0},
        "networks": nets,
        "nodes": nodes,
    }


def with_impls(nodes: dict[str, Any], impls: dict[str, str]) -> dict[str, Any]:
    """Set `impl:` on the named node specs of a topology's `nodes` mapping (in place, and
    returned); "python" is the model's default, so it is left out and the document stays
    as it was without rust nodes."""
    for name, impl in impls.items():
        if impl not in IMPLS:
            raise ValueError(f"{name}: impl {impl!r} is not one of {', '.join(IMPLS)}")
        if name not in nodes:
            raise KeyError(f"no node {name!r}")
        if impl == "python":
            nodes[name].pop("impl", None)
        else:
            nodes[name]["impl"] = impl
    return nodes


def write(doc: dict[str, Any], path: Path) -> Topology:
    """Dump `doc` to `path` and validate it with the harness's loader (raises TopologyError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_topology(path)
