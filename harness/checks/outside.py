"""Evidence from outside the nodes: what the kernel's tables say about a pair of nodes.

A node with `api: none` (or any node we did not write) cannot be asked what it did. Its
network namespace's TCP table and its NAT router's conntrack table say it anyway
(harness/infra/netstate.py reads them into `Observation.sockets` and `Observation.flows`).

The strongest fact they give is a direct TCP connection through both NATs. Nodes a and b
live behind routers A and B. When a's connection to b is direct, router A tracks a flow
`ip_a:pa -> B_pub:pb'` that it translated to `A_pub:pa'`, and router B tracks
`ip_b:pb -> A_pub:pa'` translated to `B_pub:pb'`: each flow's destination is the other's
translation. Both routers drop unsolicited inbound packets, so only a simultaneous open
(a hole punch) makes such a pair of flows; a relayed connection never does (its flows go to
the relay). That join is what `direct_through_nats` looks for; a node's TCP table naming
the other router's public address is the weaker, one-sided evidence.
"""

from __future__ import annotations

from harness.checks import Observation
from harness.infra.netstate import Flow

LIVE = ("ESTABLISHED",)


def _endpoint(obs: Observation, name: str) -> tuple[str, str, str] | None:
    """(home network, node IP on it, the home router's public IP) for a node behind NAT."""
    home = obs.home(name)
    node = obs.nodes.get(name)
    net = obs.nets.get(home) if home else None
    if node is None or net is None or not net.router_public_ip or home not in node.addresses:
        return None
    return home, node.addresses[home], net.router_public_ip


def _flow_text(router: str, f: Flow) -> str:
    mapped_ip, mapped_port = f.translated
    return (
        f"{router} conntrack {f.src}:{f.sport} -> {f.dst}:{f.dport} {f.state}, "
        f"mapped to {mapped_ip}:{mapped_port}"
    )


def direct_through_nats(obs: Observation, a: str, b: str) -> list[str]:
    """Evidence lines for a live direct a<->b TCP connection through both NAT routers;
    empty when the tables show none (or were not read)."""
    ea, eb = _endpoint(obs, a), _endpoint(obs, b)
    if ea is None or eb is None or ea[0] == eb[0]:
        return []
    (home_a, ip_a, pub_a), (home_b, ip_b, pub_b) = ea, eb
    out: list[str] = []
    flows_a = [f for f in obs.flows.get(home_a, []) if f.src == ip_a and f.dst == pub_b]
    flows_b = [f for f in obs.flows.get(home_b, []) if f.src == ip_b and f.dst == pub_a]
    for fa in flows_a:
        for fb in flows_b:
            joined = (fa.dst, fa.dport) == fb.translated and (fb.dst, fb.dport) == fa.translated
            if joined and fa.state in LIVE and fb.state in LIVE:
                out.append(
                    f"{_flow_text(f'router-{home_a}', fa)}; {_flow_text(f'router-{home_b}', fb)}"
                    " (each flow's destination is the other's mapping)"
                )
    for me, ip, other_pub in ((a, ip_a, pub_b), (b, ip_b, pub_a)):
        for s in obs.sockets.get(me, []):
            if s.state in LIVE and s.local_ip == ip and s.remote_ip == other_pub:
                out.append(
                    f"{me}'s TCP table {s.local_ip}:{s.local_port} -> "
                    f"{s.remote_ip}:{s.remote_port} {s.state}"
                )
    return out


def tables_read(obs: Observation, names: list[str]) -> str:
    """Which outside tables this observation has, for a verdict that found nothing."""
    routers = sorted(f"router-{n}" for n in obs.flows)
    socks = sorted(n for n in names if n in obs.sockets)
    errors = [f"{k}: {v}" for k, v in sorted(obs.outside_errors.items())]
    parts = [
        f"conntrack of {', '.join(routers) or 'no router'}",
        f"TCP tables of {', '.join(socks) or 'no node'}",
    ]
    if errors:
        parts.append("unreadable: " + "; ".join(errors[:3]))
    return ", ".join(parts)
