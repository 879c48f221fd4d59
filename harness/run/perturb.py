"""Perturbations of a running testnet: containers, links, partitions, NAT type, loss, latency.

How each one works, and why:
- kill / pause / unpause / restart / start: the Docker engine, on the node's container.
- disconnect / reconnect NODE NET: iptables DROP on the node's interface on NET (INPUT,
  OUTPUT, FORWARD), inside the container. Not `docker network disconnect` and not link down:
  both lose the routes the setup script installed (link down flushes routes through the
  interface; a Docker reconnect also brings the Docker default route back). With iptables
  the addresses and routes survive and `reconnect` restores exactly the previous state.
- partition / heal NET_A NET_B: iptables in every container on either network, dropping
  packets to and from the addresses by which the other network is seen (its subnet, its
  NAT router's public address, the public addresses of its multi-homed sentries). A
  container on both networks (a router between a private network and the public one)
  drops forwarding between them; a node on both stays reachable from both sides.
- nat NET PRESET (full-cone, restricted-cone, port-restricted-cone alias cone, symmetric):
  the router's MASQUERADE rule gains or loses `--random-fully` (the mapping), its nftables
  table sn_cone is replaced (the filtering, harness/infra/natrules.py), then its
  conntrack table is flushed (over netlink: the image has no conntrack tool) so old
  mappings cannot keep the previous behaviour alive.
- loss NET PCT: iptables `statistic --mode random` DROP on every container's inbound
  interface on NET, so each packet crossing NET is dropped once with probability PCT.
- latency NET MS: `tc qdisc netem` on every interface on NET; where the kernel has no
  sch_netem ("Specified qdisc kind is unknown"), an NFQUEUE rule and a small delayer in the
  container's namespace that holds each packet for MS (harness/infra/delayer.py).
- cpu NODE CORES: the CFS quota of the node's container, changed on the running container
  (`docker update`): the node gets at most CORES CPUs, as on a loaded or small machine,
  without a CPU hog that would also slow the harness and the other nodes. 0 removes it.
Every iptables rule carries a comment `sn:<kind>:<args>` so undoing removes exactly it.
Stopped and paused containers: a paused one is cut like a running one (docker exec
refuses a frozen container, so the rules go in from the host through its namespaces,
harness/infra/docker.exec_in). A stopped one has no network namespace: partition, loss and
latency skip it and say so, heal has nothing to remove there, disconnect refuses it; when
it starts again (`start`, `restart`) the partitions and loss still in force on its
networks (read from the other containers' rule comments: the kernel is the record) are
put into its new namespace, so a node restarted during a partition stays cut off.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from docker.models.containers import Container

from harness.errors import SentrynetError
from harness.infra import delayer, natrules
from harness.infra import docker as docker_ops
from harness.model import Node, Router, Testnet
from harness.model.nat import ALIASES, EIM, PRESETS, canonical, model


def require_net(testnet: Testnet, net: str) -> None:
    """A data network of this testnet (perturbations never touch the control network)."""
    names = [n.name for n in testnet.networks]
    if net == "control":
        raise SentrynetError(
            "the control network carries only the harness's API reads; "
            "perturbations apply to data networks: " + ", ".join(names)
        )
    if net not in names:
        raise SentrynetError(f"no network {net!r}; known: {', '.join(names)}")


def _host(testnet: Testnet, name: str) -> Node | Router:
    try:
        return testnet.host(name)
    except KeyError:
        known = sorted(h.name for h in testnet.hosts())
        raise SentrynetError(f"no node or router {name!r}; known: {', '.join(known)}") from None


def _on(testnet: Testnet, net: str) -> list[Node | Router]:
    require_net(testnet, net)
    return testnet.hosts_on(net)


def seen_as(testnet: Testnet, net: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The addresses by which hosts elsewhere see `net`: its subnet, its NAT router's
    public IP, and the other addresses of multi-homed nodes on it (a sentry's public IP),
    except addresses on the `exclude` networks (the other side of a partition)."""
    network = testnet.network(net)
    out = [network.subnet]
    if network.router_public_ip:
        out.append(f"{network.router_public_ip}/32")
    for node in testnet.nodes_on(net):
        for other, ip in node.addresses.items():
            if other != net and other not in exclude:
                out.append(f"{ip}/32")
    return out


# --------------------------------------------------------------------------- in-container tools


def _iface_of(container: Container, ip: str) -> str:
    """The interface inside `container` that holds `ip`."""
    out = docker_ops.must_exec(container, ["ip", "-o", "-4", "addr", "show"])
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if addr == ip:
                return parts[1].split("@")[0]
    raise SentrynetError(f"{container.name}: no interface holds {ip}; `ip -4 addr`:\n{out}")


def _comment(kind: str, *args: str) -> str:
    return ":".join(["sn", kind, *args])


def _add_rules(container: Container, rules: list[str], comment: str) -> None:
    """Insert iptables rules (each an argument string after the chain op) at the top."""
    script = "set -e\n" + "\n".join(
        f"iptables -I {r} -m comment --comment {shlex.quote(comment)} -j DROP" for r in rules
    )
    docker_ops.must_exec(container, script)


def _remove_rules(container: Container, comment_prefix: str) -> int:
    """Delete every filter-table rule whose comment starts with `comment_prefix`; count them."""
    script = (
        "n=0; iptables -S | grep -F -- "
        + shlex.quote(f'--comment "{comment_prefix}')
        + " | sed 's/^-A /-D /' > /tmp/sn-undo || true\n"
        'while read -r rule; do eval iptables "$rule" && n=$((n+1)); done < /tmp/sn-undo\n'
        "echo $n"
    )
    out = docker_ops.must_exec(container, script).strip().splitlines()
    return int(out[-1]) if out and out[-1].isdigit() else 0


# --------------------------------------------------------------------------- containers


def _container(testnet: Testnet, node: str) -> Container:
    return docker_ops.node_container(testnet.name, node)


def _netns(testnet: Testnet, node: str) -> Container:
    """Where a node's links are cut (iptables, tc): the container owning its network
    namespace, the `<name>-net` beside anyone's own image (it has no iptables)."""
    host = _host(testnet, node)
    if isinstance(host, Node) and host.image:
        return docker_ops.node_container(testnet.name, f"{node}-net")
    return _container(testnet, node)


def container_action(testnet: Testnet, node: str, action: str) -> str:
    """kill | pause | unpause | restart | start one node (or router) container."""
    c = _container(testnet, node)
    actions: dict[str, Callable[[], object]] = {
        "kill": c.kill,
        "pause": c.pause,
        "unpause": c.unpause,
        "restart": lambda: c.restart(timeout=5),
        "start": c.start,
    }
    if action not in actions:
        raise SentrynetError(f"unknown container action {action!r}")
    try:
        actions[action]()
    except Exception as exc:  # docker.errors.APIError: the engine's reason is the message
        raise SentrynetError(f"{action} {node}: {exc}") from exc
    c.reload()
    out = f"{action} {node}: container {c.name} is now {c.status}"
    own_netns = _netns(testnet, node).name == c.name  # not a node beside a `-net` holder
    if action in ("start", "restart") and c.status == "running" and own_netns:
        out += "".join(f"\n  {line}" for line in restore_network_cuts(testnet, node))
    return out


# --------------------------------------------------------------------------- links


def disconnect(testnet: Testnet, node: str, net: str) -> str:
    require_net(testnet, net)
    host = _host(testnet, node)
    ip = host.addresses.get(net)
    if ip is None:
        nets = ", ".join(host.addresses)
        raise SentrynetError(f"{node} is not on network {net!r} (it is on {nets})")
    c = _require_live(testnet, node)
    iface = _iface_of(c, ip)
    comment = _comment("disconnect", net)
    _remove_rules(c, comment)
    _add_rules(
        c,
        [f"INPUT -i {iface}", f"OUTPUT -o {iface}", f"FORWARD -i {iface}", f"FORWARD -o {iface}"],
        comment,
    )
    return (
        f"disconnect {node} from {net}: iptables DROP on {iface} ({ip}) in {c.name}; "
        "address and routes kept"
    )


def reconnect(testnet: Testnet, node: str, net: str) -> str:
    require_net(testnet, net)
    c = _require_live(testnet, node)
    n = _remove_rules(c, _comment("disconnect", net))
    return f"reconnect {node} to {net}: removed {n} DROP rule(s) in {c.name}"


def _pair(a: str, b: str) -> tuple[str, str]:
    lo, hi = sorted((a, b))
    return lo, hi


def partition(testnet: Testnet, net_a: str, net_b: str) -> str:
    require_net(testnet, net_a)
    require_net(testnet, net_b)
    if net_a == net_b:
        raise SentrynetError("partition needs two different networks")
    nodes = sorted(h.name for h in testnet.hosts() if set(h.addresses) & {net_a, net_b})
    lines = [f"  {node}: {_partition_node(testnet, node, net_a, net_b)}" for node in nodes]
    return f"partition {net_a} | {net_b}: iptables in {len(lines)} container(s)\n" + "\n".join(
        lines
    )


def _partition_node(testnet: Testnet, node: str, net_a: str, net_b: str) -> str:
    """The partition's rules in one container (what they do); a stopped one gets them
    when it starts."""
    comment = _comment("partition", *_pair(net_a, net_b))
    atts = [
        (net, ip) for net, ip in _host(testnet, node).addresses.items() if net in (net_a, net_b)
    ]
    c = _netns(testnet, node)
    if not _live(c):
        return NOT_RUNNING
    _remove_rules(c, comment)
    rules: list[str] = []
    if len(atts) == 2:  # on both networks: stop forwarding between them
        ia, ib = (_iface_of(c, ip) for _net, ip in atts)
        rules = [f"FORWARD -i {ia} -o {ib}", f"FORWARD -i {ib} -o {ia}"]
        what = f"no forwarding {ia}<->{ib}"
    else:
        other = net_b if atts[0][0] == net_a else net_a
        seen = seen_as(testnet, other, exclude=(net_a, net_b))
        for cidr in seen:
            rules += [f"INPUT -s {cidr}", f"OUTPUT -d {cidr}"]
            rules += [f"FORWARD -s {cidr}", f"FORWARD -d {cidr}"]
        what = "drop " + ", ".join(seen)
    _add_rules(c, rules, comment)
    return what


def heal(testnet: Testnet, net_a: str, net_b: str) -> str:
    require_net(testnet, net_a)
    require_net(testnet, net_b)
    comment = _comment("partition", *_pair(net_a, net_b))
    total = 0
    nodes = sorted({h.name for net in (net_a, net_b) for h in testnet.hosts_on(net)})
    for node in nodes:
        c = _netns(testnet, node)
        if _live(c):  # a stopped container's rules went with its network namespace
            total += _remove_rules(c, comment)
    return f"heal {net_a} | {net_b}: removed {total} rule(s) in {len(nodes)} container(s)"


# --------------------------------------------------------------------------- stopped containers

NOT_RUNNING = "not running: no rules now; they are put in when it starts (perturb start|restart)"
_ACTIVE_RULE = re.compile(r"--comment \"?sn:(partition|loss):([^\" ]+)\"?")
_PROBABILITY = re.compile(r"--probability (\S+)")


def _live(c: Container) -> bool:
    """Running or paused: its network namespace exists (a paused one is entered from the
    host, harness/infra/docker.exec_in). A stopped container has none: its cuts went with
    it, and Docker makes a new namespace when it starts."""
    c.reload()
    return c.status in ("running", "paused")


def _require_live(testnet: Testnet, node: str) -> Container:
    c = _netns(testnet, node)
    if not _live(c):
        raise SentrynetError(
            f"{node} is not running ({c.status}): it has no network namespace to cut or "
            "restore; a node that starts again starts connected"
        )
    return c


def network_cuts_in_force(
    testnet: Testnet, node: str
) -> tuple[set[tuple[str, str]], dict[str, float]]:
    """The partitions (pairs of networks) and the loss (network -> percent) in force on
    the networks `node` is on, read from the iptables comments of the other live
    containers there: the kernel is the record, so a separate `sentrynet perturb` process
    sees the same state."""
    mine = set(_host(testnet, node).addresses)
    partitions: set[tuple[str, str]] = set()
    loss: dict[str, float] = {}
    for other in testnet.hosts():
        if other.name == node or not mine & set(other.addresses):
            continue
        c = _netns(testnet, other.name)
        if not _live(c):
            continue
        for line in docker_ops.exec_in(c, ["iptables", "-S"]).output.splitlines():
            m = _ACTIVE_RULE.search(line)
            if m is None:
                continue
            kind, args = m.groups()
            if kind == "partition" and ":" in args:
                a, b = args.split(":", 1)
                if {a, b} & mine:
                    partitions.add(_pair(a, b))
            elif kind == "loss" and args in mine and args not in loss:
                p = _PROBABILITY.search(line)
                if p is not None:
                    loss[args] = round(float(p.group(1)) * 100, 4)
    return partitions, loss


def restore_network_cuts(testnet: Testnet, node: str) -> list[str]:
    """Put the partitions and loss in force on `node`'s networks into its (new) network
    namespace after it started: a node restarted during a partition stays cut off."""
    partitions, loss = network_cuts_in_force(testnet, node)
    lines = [
        f"partition {a} | {b} kept: {_partition_node(testnet, node, a, b)}"
        for a, b in sorted(partitions)
    ]
    for net, pct in sorted(loss.items()):
        lines.append(f"loss {net} kept: {_loss_host(testnet, _host(testnet, node), net, pct)}")
    return lines


# --------------------------------------------------------------------------- NAT type

# Flush the conntrack table of the router's network namespace over netlink
# (IPCTNL_MSG_CT_DELETE with no attributes = flush; NFNL_SUBSYS_CTNETLINK = 1).
_CONNTRACK_FLUSH = r"""
import socket, struct, os
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
msg_type = (1 << 8) | 2
body = struct.pack("BBH", socket.AF_INET, 0, 0)
hdr = struct.pack("=LHHLL", 16 + len(body), msg_type, 0x1 | 0x4, 1, 0)
s.sendto(hdr + body, (0, 0))
data = s.recv(4096)
err = struct.unpack("=i", data[16:20])[0] if len(data) >= 20 else 0
print("flushed" if err == 0 else f"error {os.strerror(-err)}")
"""

NAT_TYPES = (*PRESETS, *ALIASES)


def set_nat(testnet: Testnet, net: str, nat: str, flush: bool = True) -> str:
    """Switch the router of private network `net` to another NAT preset at run time."""
    require_net(testnet, net)
    if nat not in NAT_TYPES:
        raise SentrynetError(f"nat type {nat!r} is not one of {', '.join(NAT_TYPES)}")
    preset = canonical(nat)
    symmetric = model(preset).mapping != EIM
    found = testnet.router_of(net)
    if found is None:
        raise SentrynetError(
            f"network {net!r} has no NAT router (routed private networks: "
            f"{', '.join(r.network for r in testnet.routers) or 'none'})"
        )
    router = found.name
    c = _container(testnet, router)
    current = docker_ops.must_exec(c, ["iptables", "-t", "nat", "-S", "POSTROUTING"])
    masq = [line for line in current.splitlines() if "-j MASQUERADE" in line]
    if not masq:
        raise SentrynetError(f"{router}: no MASQUERADE rule in nat POSTROUTING:\n{current}")
    cmds = []
    for line in masq:
        base = line.replace(" --random-fully", "")
        new = base + (" --random-fully" if symmetric else "")
        if new == line:
            continue
        cmds.append("iptables -t nat " + line.replace("-A ", "-D ", 1))
        cmds.append("iptables -t nat " + new)
    inside = natrules.inside_nodes(testnet, found)
    lan = testnet.network(net).subnet
    public_ip = public_ip_now(testnet, c)
    cone = natrules.table(preset, inside, public_ip, lan, found.hairpin, found.mapping_timeout_s)
    script = "set -e\n" + "".join(f"{cmd}\n" for cmd in cmds) + natrules.replace_script(cone)
    docker_ops.must_exec(c, script)
    note = (
        f"MASQUERADE{' --random-fully' * symmetric}; "
        f"{preset} filtering: {natrules.describe(preset, inside)}"
    )
    flushed = ""
    if flush:
        res = docker_ops.exec_in(c, ["python3", "-c", _CONNTRACK_FLUSH])
        flushed = f"; conntrack {res.output.strip() or 'flush failed'}"
    return f"nat {net} -> {preset}: {router}: {note}{flushed}"


def public_ip_now(testnet: Testnet, router: Container) -> str:
    """The router's address on the public network as its interface has it now (a rebind
    changes it; the model keeps the rendered one)."""
    subnet = ipaddress.IPv4Network(testnet.public_network.subnet)
    out = docker_ops.must_exec(router, ["ip", "-o", "-4", "addr", "show"])
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if ipaddress.IPv4Address(addr) in subnet:
                return addr
    raise SentrynetError(f"{router.name}: no address on the public network {subnet}:\n{out}")


def _free_public_ip(testnet: Testnet, taken: set[str]) -> str:
    """An address of the public subnet nobody uses: from just below the routers' block
    (allocated from the top, harness/model/topology.py) downwards."""
    subnet = ipaddress.IPv4Network(testnet.public_network.subnet)
    start = subnet.broadcast_address - 1 - len(testnet.routers)
    for k in range(int(start) - int(subnet.network_address) - 1):
        candidate = str(start - k)
        if candidate not in taken:
            return candidate
    raise SentrynetError(f"no free address left in the public subnet {subnet}")


@dataclass(frozen=True)
class Rebound:
    """What a rebind did (`said`) and the model after it (`testnet`): the caller adopts it
    (RunningTestnet.adopt, RunContext.model_changed) so that checks, later perturbations and
    testnet.json see the router's new address."""

    said: str
    testnet: Testnet


def _rewrite_address(c: Container, old: str, new: str) -> None:
    """Every iptables rule of `c`'s namespace that names `old` names `new` instead."""
    word = re.escape(old)
    docker_ops.must_exec(
        c,
        f"set -e; iptables-save | sed -E 's/(^|[^0-9.]){word}([^0-9.]|$)/\\1{new}\\2/g' "
        "| iptables-restore",
    )


def rebind(testnet: Testnet, net: str, new_ip: str | None = None) -> Rebound:
    """The router of `net` gets another public address and forgets every mapping, as a home
    router does when its ISP hands out a new address: connections through it die without a
    FIN, and peers that learned the old address can no longer reach it. Rules that named the
    old address (forwards' hairpin, the cone table, other nodes' pair links to a node behind
    it) are rewritten to the new one; node configs keep the old one, as deployed ones do."""
    require_net(testnet, net)
    found = testnet.router_of(net)
    if found is None:
        raise SentrynetError(f"network {net!r} has no NAT router to rebind")
    c = _container(testnet, found.name)
    old = public_ip_now(testnet, c)
    subnet = ipaddress.IPv4Network(testnet.public_network.subnet)
    taken = {old, *(r.public_ip for r in testnet.routers)}
    taken |= {ip for h in testnet.hosts() for ip in h.addresses.values()}
    taken |= {public_ip_now(testnet, _container(testnet, r.name)) for r in testnet.routers}
    if new_ip is None:
        new_ip = _free_public_ip(testnet, taken)
    elif ipaddress.IPv4Address(new_ip) not in subnet or new_ip in taken:
        raise SentrynetError(
            f"rebind {net} to {new_ip}: pick a free address of the public subnet {subnet} "
            f"(taken: {', '.join(sorted(taken))})"
        )
    script = "\n".join(
        [
            "set -e",
            f"dev=$(ip -o -4 addr show to {old}/32 | awk '{{print $2}}')",
            'dev="${dev%%@*}"',
            f'ip addr del {old}/{subnet.prefixlen} dev "$dev"',
            f'ip addr add {new_ip}/{subnet.prefixlen} dev "$dev"',
        ]
    )
    # the cone table again for the new address, for the preset it has now (perturb nat may
    # have changed it); its memory of who was contacted goes with the old mappings
    listing = docker_ops.exec_in(c, ["nft", "list", "table", "ip", natrules.TABLE])
    if listing.ok:
        preset = "restricted-cone" if "set seen" in listing.output else "full-cone"
        inside = natrules.inside_nodes(testnet, found)
        lan = testnet.network(net).subnet
        table = natrules.table(preset, inside, new_ip, lan, found.hairpin, found.mapping_timeout_s)
        script += "\n" + natrules.replace_script(table)
    docker_ops.must_exec(c, script)
    _rewrite_address(c, old, new_ip)
    res = docker_ops.exec_in(c, ["python3", "-c", _CONNTRACK_FLUSH])
    after = testnet.rebound(net, new_ip)  # the model decides which link rules moved
    linked = [a.name for a, b in zip(testnet.nodes, after.nodes, strict=True) if a.links != b.links]
    for name in linked:
        _rewrite_address(_netns(testnet, name), old, new_ip)
    links = f"; pair links of {', '.join(linked)} follow it" if linked else ""
    return Rebound(
        f"rebind {net}: {found.name} public address {old} -> {new_ip}; "
        f"conntrack {res.output.strip() or 'flush failed'}{links}",
        after,
    )


# --------------------------------------------------------------------------- loss / latency


def set_loss(testnet: Testnet, net: str, pct: float) -> str:
    if not 0 <= pct < 100:
        raise SentrynetError(f"loss {pct}: use a percentage 0 <= PCT < 100 (0 removes loss)")
    done = [_loss_host(testnet, host, net, pct) for host in _on(testnet, net)]
    verb = f"{pct:g}% inbound drop" if pct > 0 else "loss removed"
    return f"loss {net}: {verb} on {', '.join(done)} (iptables statistic)"


def _loss_host(testnet: Testnet, host: Node | Router, net: str, pct: float) -> str:
    comment = _comment("loss", net)
    c = _netns(testnet, host.name)
    if not _live(c):
        return f"{host.name} ({NOT_RUNNING})"
    iface = _iface_of(c, host.addresses[net])
    _remove_rules(c, comment)
    if pct > 0:
        p = f"{pct / 100:.4f}"
        stat = f"-m statistic --mode random --probability {p}"
        _add_rules(c, [f"INPUT -i {iface} {stat}", f"FORWARD -i {iface} {stat}"], comment)
    return f"{host.name}:{iface}"


NETEM_MISSING = (
    "Specified qdisc kind is unknown",
    "Unknown qdisc",
    "No such file or directory",
)


def _targets(testnet: Testnet, net: str) -> list[tuple[str, Container, str]]:
    """(host, its netns container, its interface on `net`) of every live host on `net`;
    a stopped container starts again without run-time conditions."""
    out = []
    for host in _on(testnet, net):
        c = _netns(testnet, host.name)
        if _live(c):
            out.append((host.name, c, _iface_of(c, host.addresses[net])))
    return out


def _qdiscs(c: Container, iface: str) -> tuple[bool, tuple[str, str] | None]:
    """What `iface` carries now, from one `tc qdisc show`: is netem its root (handle 1:),
    and the (rate, burst) of its rate limit (handle 2:) as tc prints them, or None."""
    res = docker_ops.exec_in(c, ["tc", "qdisc", "show", "dev", iface])
    text = res.output if res.ok else ""
    m = re.search(r"qdisc tbf 2: .*?rate (\S+) burst (\S+)", text)
    return "qdisc netem 1:" in text, (m.group(1), m.group(2)) if m else None


def _add_tbf(c: Container, iface: str, rate: tuple[str, str], under_netem: bool) -> None:
    """The rate limit (handle 2:): under netem's handle 1: when netem is the root."""
    parent = ["parent", "1:"] if under_netem else ["root"]
    cmd = ["tc", "qdisc", "replace", "dev", iface, *parent, "handle", "2:", "tbf"]
    res = docker_ops.exec_in(c, [*cmd, "rate", rate[0], "burst", rate[1], "latency", "200ms"])
    if not res.ok:
        raise SentrynetError(f"{c.name}: tc tbf on {iface} failed: {res.output.strip()}")


def set_latency(testnet: Testnet, net: str, ms: float, jitter_ms: float = 0.0) -> str:
    """Delay every packet leaving an interface on `net` by `ms` +- `jitter_ms` (0 removes
    it): netem where the kernel has it, else the NFQUEUE delayer. A rate limit stays."""
    if ms < 0 or not 0 <= jitter_ms <= max(ms, 0):
        raise SentrynetError(
            f"latency {ms:g} +- {jitter_ms:g}: use milliseconds >= 0 (0 removes it) and a "
            "jitter between 0 and the latency"
        )
    targets = _targets(testnet, net)
    if ms == 0:
        for _node, c, iface in targets:
            netem, rate = _qdiscs(c, iface)
            if netem:
                docker_ops.exec_in(c, ["tc", "qdisc", "del", "dev", iface, "root"])
                if rate is not None:
                    _add_tbf(c, iface, rate, under_netem=False)
            delayer.stop(c, iface)
        return f"latency {net}: removed on {len(targets)} interface(s)"
    done = []
    how = "netem"
    delay = ["delay", f"{ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
    for node, c, iface in targets:
        _netem, rate = _qdiscs(c, iface)
        res = docker_ops.exec_in(
            c, ["tc", "qdisc", "replace", "dev", iface, "root", "handle", "1:", "netem", *delay]
        )
        if res.ok:
            delayer.stop(c, iface)
            if rate is not None:  # replacing the root took the rate limit with it
                _add_tbf(c, iface, rate, under_netem=True)
            done.append(f"{node}:{iface}")
        elif any(m in res.output for m in NETEM_MISSING):
            # no sch_netem here: the NFQUEUE delayer (harness/infra/delayer.py) instead
            how = "nfqueue delayer: this kernel has no netem"
            done.append(f"{node}:{delayer.start(c, iface, ms, jitter_ms)}")
        else:
            raise SentrynetError(f"{node}: tc netem on {iface} failed: {res.output.strip()}")
    spread = f" +- {jitter_ms:g} ms" if jitter_ms else ""
    return f"latency {net}: {ms:g} ms{spread} egress delay on {', '.join(done)} ({how})"


def set_rate(testnet: Testnet, net: str, kbit: int) -> str:
    """Limit every interface on `net` to `kbit` kbit/s of egress (tc tbf, under netem when
    a latency uses it); 0 removes the limit."""
    from harness.infra.render import tbf_burst

    if kbit < 0 or 0 < kbit < 8:
        raise SentrynetError(f"rate {kbit}: use kbit/s >= 8 (0 removes it)")
    targets = _targets(testnet, net)
    if kbit == 0:
        n = 0
        for _node, c, iface in targets:
            netem, rate = _qdiscs(c, iface)
            if rate is None:
                continue
            parent = ["parent", "1:"] if netem else ["root"]
            docker_ops.exec_in(c, ["tc", "qdisc", "del", "dev", iface, *parent])
            n += 1
        return f"rate {net}: removed on {n} interface(s)"
    burst = f"{tbf_burst(kbit)}b"
    for _node, c, iface in targets:
        netem, _rate = _qdiscs(c, iface)
        _add_tbf(c, iface, (f"{kbit}kbit", burst), under_netem=netem)
    where = ", ".join(f"{node}:{iface}" for node, _c, iface in targets)
    return f"rate {net}: {kbit} kbit/s egress on {where} (tbf, burst {burst})"


# --------------------------------------------------------------------------- cpu

CPU_PERIOD_US = 100_000


def set_cpu(testnet: Testnet, node: str, cores: float) -> str:
    """Cap `node`'s container at `cores` CPUs (0 removes the cap)."""
    if not 0 <= cores <= 64:
        raise SentrynetError(f"cpu {cores}: use CPUs 0 <= CORES <= 64 (e.g. 0.2; 0 removes it)")
    if 0 < cores < 0.01:
        raise SentrynetError(f"cpu {cores}: the smallest cap is 0.01 CPUs (1 ms per 100 ms)")
    c = _container(testnet, node)
    quota = int(cores * CPU_PERIOD_US) if cores > 0 else -1
    try:
        c.update(cpu_period=CPU_PERIOD_US, cpu_quota=quota)
    except Exception as exc:  # docker.errors.APIError: the engine's reason is the message
        raise SentrynetError(f"cpu {node}: {exc}") from exc
    if cores > 0:
        return f"cpu {node}: at most {cores:g} CPU(s) (CFS quota {quota} us per {CPU_PERIOD_US} us)"
    return f"cpu {node}: cap removed"


def _cpu_capped(c: Container) -> bool:
    c.reload()
    return int(c.attrs.get("HostConfig", {}).get("CpuQuota") or 0) > 0


def clear(testnet: Testnet) -> str:
    """Undo every iptables perturbation (disconnects, partitions, loss) in every container,
    and every CPU cap."""
    total = 0
    nodes = sorted(h.name for h in testnet.hosts())
    for node in nodes:
        total += _remove_rules(_netns(testnet, node), "sn:")
    uncapped = [
        n for n in sorted(x.name for x in testnet.nodes) if _cpu_capped(_container(testnet, n))
    ]
    for node in uncapped:
        set_cpu(testnet, node, 0)
    return f"clear: removed {total} perturbation rule(s) in {len(nodes)} container(s)" + (
        f"; CPU cap removed on {', '.join(uncapped)}" if uncapped else ""
    )
