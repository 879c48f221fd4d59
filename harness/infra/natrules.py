"""The nftables table that gives a router the filtering of its NAT preset.

Why here, once: the router's setup script (templates/router.sh.j2) loads it at start and
`sentrynet perturb nat` replaces it at run time; both must say the same thing. The mapping
stays iptables MASQUERADE (with `--random-fully` for symmetric) and conntrack lets replies
in; this table only adds what conntrack cannot: packets that come in unasked.

Table `ip sn_cone` (none for port-restricted cone and symmetric, where conntrack is the
filter):
- map `owner`: mapped port -> the node behind the router whose port it is. Every node has
  its p2p port and its own ephemeral range (harness/model/testnet.py), and mappings keep the
  port, so the port alone says whose mapping it is.
- chain `cone_in` (nat prerouting, after the iptables forwards): a packet from outside to the
  router's public address and a mapped port is DNATed to the port's owner. Full cone: from
  anyone. Restricted cone: only from an address the owner sent to from that very port (set
  `seen`, keyed address . port, kept for the router's mapping timeout, FILTER_MEMORY_S
  when it has none, after the last packet out).
- chain `seen_out` (filter forward): records address . source port of what leaves for the
  outside, for the restricted cone.
- hairpin (topology `hairpin: true`): behind a full cone, the nodes behind the router reach
  each other's mapped ports at the public address too (the SNAT to the public address is
  the iptables rule router.sh.j2 writes for every hairpinned connection).

See harness/model/nat.py for the model and its limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model.nat import ADM, APDM, EIM, FILTER_MEMORY_S, model
from harness.model.testnet import Router, Testnet

TABLE = "sn_cone"
# nat prerouting: iptables' nat table is at -100 (dstnat); after it, so the forwards win
CONE_IN_PRIORITY = -99
SEEN_OUT_PRIORITY = -10


@dataclass(frozen=True)
class Inside:
    """A node behind the router: its address there and the ports its mappings use."""

    name: str
    ip: str
    p2p_port: int
    port_range: tuple[int, int]

    @property
    def ports(self) -> str:
        lo, hi = self.port_range
        return f"{self.p2p_port}, {lo}-{hi}"


def inside_nodes(testnet: Testnet, router: Router) -> list[Inside]:
    """The nodes whose traffic this router translates, file order, each at the address this
    router sees it from: its own, or behind nested NAT the inner router's outside address
    (its ports are the node's: every router on the way keeps them)."""
    out = []
    for n in testnet.nodes:
        if n.router is None or n.port_range is None:
            continue
        hop = testnet.router(n.router)
        ip = n.addresses[hop.network]
        while hop.name != router.name:
            up = testnet.router_of(hop.public_network)
            if up is None:
                break
            ip, hop = hop.public_ip, up
        if hop.name == router.name:
            out.append(Inside(n.name, ip, n.p2p_port, n.port_range))
    return out


def table(
    nat: str,
    inside: list[Inside],
    public_ip: str,
    lan: str,
    hairpin: bool,
    memory_s: int | None = None,
) -> str:
    """The nft script (for `nft -f -`) that creates the table; "" when the preset needs
    none (conntrack filters address-and-port-dependently by itself). `memory_s`: how long
    the restricted cone remembers whom a port sent to (the router's mapping timeout, else
    FILTER_MEMORY_S)."""
    filtering = model(nat).filtering
    if filtering == APDM or not inside:
        return ""
    owners = ", ".join(
        f"{port} : {n.ip}"
        for n in inside
        for port in (n.p2p_port, f"{n.port_range[0]}-{n.port_range[1]}")
    )
    lines = [
        f"table ip {TABLE} {{",
        "  map owner {",
        "    type inet_service : ipv4_addr; flags interval;",
        f"    elements = {{ {owners} }}",
        "  }",
    ]
    gate = ""
    if filtering == ADM:
        gate = " ip saddr . th dport @seen"
        lines += [
            "  set seen {",
            "    type ipv4_addr . inet_service; flags dynamic,timeout;",
            f"    timeout {memory_s or FILTER_MEMORY_S}s;",
            "  }",
            "  chain seen_out {",
            f"    type filter hook forward priority {SEEN_OUT_PRIORITY}; policy accept;",
            f"    ip saddr {lan} ip daddr != {lan} meta l4proto {{ tcp, udp }} "
            "update @seen { ip daddr . th sport }",
            "  }",
        ]
    to_owner = "meta l4proto { tcp, udp } th dport @owner"
    lines += [
        "  chain cone_in {",
        f"    type nat hook prerouting priority {CONE_IN_PRIORITY}; policy accept;",
        f"    ip daddr {public_ip} ip saddr != {lan} {to_owner}{gate} dnat to th dport map @owner",
    ]
    if hairpin and filtering == EIM:
        lines.append(
            f"    ip daddr {public_ip} ip saddr {lan} {to_owner} dnat to th dport map @owner"
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def replace_script(script: str) -> str:
    """Shell that swaps the router's table for `script` (empty: just removes it)."""
    out = f"nft delete table ip {TABLE} 2>/dev/null || true\n"
    if script:
        out += f"nft -f - <<'SN_NFT'\n{script}SN_NFT\n"
    return out


def describe(nat: str, inside: list[Inside]) -> str:
    """One line for the router script and `perturb`: who gets in, to which ports."""
    filtering = model(nat).filtering
    ports = "; ".join(f"{n.name} {n.ports}" for n in inside) or "no nodes"
    if filtering == EIM:
        return f"anyone reaches the mapped ports ({ports})"
    if filtering == ADM:
        return f"an address a node sent to from a port reaches that port ({ports})"
    return "only the endpoint a mapping was made for gets in (conntrack)"
