"""Post-up safety checks: wired as docs/design.md "Safety rules" says, or `up` fails loudly.

What is checked, and why each matters:
- networks: the public and control networks are `internal` (Docker gives them no way out);
  private networks do not masquerade (only our routers NAT); every network carries the label.
  On `--engine swarm` every data network is an internal overlay (one that is not internal
  would attach each container to docker_gwbridge, a way off the machine).
- routes (every router's and node's main routing table): no route via any Docker gateway
  on this machine (that would be a path off the testnet); routers and nodes with a public
  interface have no default route; nodes behind a NAT router, and routers behind another
  (nested NAT), have exactly `default via <router>`.
- listeners (every node's TCP LISTEN sockets, IPv4 and IPv6): p2p listens on data-network
  IPs only, never on a wildcard or the control IP; the API listens on the control IP only.
- control path (node /status): no p2p connection uses a control-network address, none goes
  to an address outside the testnet, and the node listens where the model says.
Routes and listeners are the kernel's own tables (/proc/net/route, tcp, tcp6) of each
container's network namespace, read from the host through its init pid
(harness/infra/netstate.py; `docker exec cat` on a remote engine): no tool is needed in
the image, and no `docker exec` either (at 64 nodes ~136 of them made the audit take
16-53 s on a loaded 2-core machine).
Each failure names the container and what is wrong; all failures are reported together.
This is the audit stage of a run (nothing leaves the testnet); scenario checks are another
thing and live in harness/checks/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import docker.errors
from docker.models.containers import Container

from harness.client import TestnetStatus
from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra import netstate
from harness.model.testnet import API_PORT, Node, Router, Testnet
from harness.progress import Progress
from harness.run.testnet import RunningTestnet


class AuditError(SentrynetError):
    """One or more safety checks failed; the message lists every finding."""

    def __init__(self, testnet: str, findings: list[str]) -> None:
        self.findings = findings
        body = "\n".join(f"  - {f}" for f in findings)
        super().__init__(f"testnet {testnet}: {len(findings)} safety check(s) failed:\n{body}")


@dataclass
class Report:
    """What passed (one line per check group), for the `up` progress output."""

    passed: list[str]


def _ip_of_multiaddr(addr: str) -> str | None:
    parts = addr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


# --------------------------------------------------------------------------- networks


def check_networks(testnet: Testnet) -> list[str]:
    findings = []
    client = docker_ops.client()
    for net in (*testnet.networks, testnet.control):
        try:
            dn = client.networks.get(net.docker_name)
        except docker.errors.NotFound:
            findings.append(f"network {net.docker_name}: missing")
            continue
        attrs = dn.attrs
        labels = attrs.get("Labels") or {}
        if labels.get(docker_ops.LABEL_TESTNET) != testnet.name:
            findings.append(
                f"network {net.docker_name}: label {docker_ops.LABEL_TESTNET}="
                f"{labels.get(docker_ops.LABEL_TESTNET)!r}, expected {testnet.name!r}"
            )
        internal = bool(attrs.get("Internal"))
        # the control network too is an overlay when the testnet spans hosts
        overlay = testnet.engine == "swarm" and (
            net.kind != "control" or testnet.control_gateway is not None
        )
        if (net.kind in ("public", "control") or overlay) and not internal:
            findings.append(
                f"network {net.docker_name} ({net.kind}): not internal — Docker would route "
                "it off the machine"
                + (" (an overlay that is not internal joins docker_gwbridge)" if overlay else "")
            )
        want = "overlay" if overlay else "bridge"
        if attrs.get("Driver") != want:
            findings.append(
                f"network {net.docker_name} ({net.kind}): driver {attrs.get('Driver')!r}, "
                f"engine {testnet.engine} expects {want}"
            )
        if net.kind == "private" and not overlay:
            masq = (attrs.get("Options") or {}).get(
                "com.docker.network.bridge.enable_ip_masquerade", "true"
            )
            if masq != "false":
                findings.append(
                    f"network {net.docker_name} (private): Docker masquerades it "
                    "(enable_ip_masquerade is not false); only the NAT router may"
                )
        subnets = [str(s) for s in docker_ops.network_subnets(dn)]
        if subnets != [str(ipaddress.ip_network(net.subnet))]:
            findings.append(
                f"network {net.docker_name}: subnet {subnets}, the model says {net.subnet}"
            )
    return findings


def docker_gateways(testnet: str | None = None) -> set[str]:
    """Every Docker network gateway on this machine, and on the other hosts of a multi-host
    testnet (any of them is a way off the testnet)."""
    gws: set[str] = set()
    for eng in docker_ops.engines(testnet):
        for net in eng.networks.list():  # the list already carries IPAM
            gws.update(docker_ops.network_gateways(net))
    return gws


# --------------------------------------------------------------------------- routes


def parse_routes(text: str) -> list[dict[str, str]]:
    """`ip -4 route` lines -> [{"dest": ..., "via": ..., "dev": ...}]: the shape
    netstate.parse_proc_route gives the audit, for the Docker tests that ask `ip` itself."""
    routes = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        r = {"dest": parts[0], "line": line.strip()}
        for key in ("via", "dev"):
            if key in parts and parts.index(key) + 1 < len(parts):
                r[key] = parts[parts.index(key) + 1]
        routes.append(r)
    return routes


T = TypeVar("T")


def read_each(
    containers: list[str], read: Callable[[Container], T], testnet: str | None = None
) -> dict[str, T | None]:
    """`read` of many containers at once, each looked up on every engine of the testnet (a
    multi-host testnet's too); None: the container is missing."""
    clients = docker_ops.engines(testnet)

    def one(name: str) -> T | None:
        for client in clients:
            try:
                container = client.containers.get(name)
            except docker.errors.NotFound:
                continue
            return read(container)
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(containers, pool.map(one, containers), strict=True))


def check_routes(testnet: Testnet, gateways: set[str]) -> list[str]:
    findings = []
    hosts: list[Node | Router] = [*testnet.routers, *testnet.nodes]
    # the container owning the network namespace: for anyone's own image, the `-net` one
    tables = read_each([h.netns_container for h in hosts], netstate.routes, testnet.name)
    for host in hosts:
        got = tables[host.netns_container]
        if got is None:
            findings.append(f"{host.name} ({host.netns_container}): container missing")
            continue
        routes, err = got
        if routes is None:
            findings.append(f"{host.name}: routes not audited: {err}")
            continue
        findings += route_findings(host, routes, gateways)
    return findings


def route_findings(
    host: Node | Router, routes: list[dict[str, str]], gateways: set[str]
) -> list[str]:
    """What is wrong with one host's routes (netstate.parse_proc_route), given every Docker
    gateway: the audit's judgement, apart from reading the table."""
    findings = []
    # routers and public nodes have no default route; a NATed node's goes via its router
    default_via = host.default_via  # a nested NAT router's goes via the outer router
    defaults = [r for r in routes if r["dest"] == "default"]
    for r in routes:
        if r.get("via") in gateways:
            findings.append(
                f"{host.name}: route via Docker gateway {r['via']}: {r['line']!r} "
                "(a path off the testnet)"
            )
    if default_via is None:
        for r in defaults:
            if r.get("via") not in gateways:  # already reported above
                findings.append(
                    f"{host.name}: has a default route ({r['line']!r}); "
                    f"{'routers' if isinstance(host, Router) else 'nodes with no NAT router'} "
                    "must have none"
                )
    else:
        vias = [r.get("via") for r in defaults]
        if vias != [default_via]:
            findings.append(
                f"{host.name}: default route(s) {vias or 'none'}; expected exactly "
                f"`default via {default_via}` (its NAT router)"
            )
    for r in routes:
        if r["dest"] != "default" and "via" in r and r["via"] not in gateways:
            findings.append(f"{host.name}: unexpected routed prefix {r['line']!r}")
    return findings


# --------------------------------------------------------------------------- listeners


WILDCARDS = {"*", "0.0.0.0", "::"}


def check_listeners(testnet: Testnet) -> list[str]:
    findings = []
    tables = read_each([n.netns_container for n in testnet.nodes], netstate.listeners, testnet.name)
    for node in testnet.nodes:
        got = tables[node.netns_container]
        if got is None:
            continue  # reported by check_routes
        listening, err = got
        if listening is None:
            findings.append(f"{node.name}: listeners not audited: {err}")
            continue
        findings += listener_findings(node, listening)
    return findings


def listener_findings(node: Node, listening: list[tuple[str, int]]) -> list[str]:
    """What is wrong with where one node listens ((ip, port) of its LISTEN sockets, IPv4
    and IPv6): the audit's judgement, apart from reading the tables."""
    findings = []
    data_ips = set(node.addresses.values())
    api_seen = False
    for host, port in listening:
        if host.startswith("::ffff:"):
            host = host[len("::ffff:") :]
        where = f"{host}:{port}"
        if host in WILDCARDS:
            findings.append(
                f"{node.name}: listens on wildcard {where} (reachable over the control "
                "network); listen on data IPs only"
            )
        elif host == node.control_ip:
            if port == API_PORT:
                api_seen = True
            else:
                findings.append(
                    f"{node.name}: listens on the control IP at {where}; only the API "
                    f"(port {API_PORT}) may"
                )
        elif host in data_ips:
            if port == API_PORT:
                findings.append(f"{node.name}: the API listens on data IP {where}")
        elif not ipaddress.ip_address(host).is_loopback:
            findings.append(f"{node.name}: listens on {where}, which is not one of its IPs")
    if not api_seen and node.has_api:
        findings.append(
            f"{node.name}: no API listener on {node.control_ip}:{API_PORT} (its TCP tables)"
        )
    return findings


# --------------------------------------------------------------------------- control path


def control_path_violations(testnet: Testnet, snapshot: TestnetStatus) -> list[str]:
    """p2p connections over control addresses or to addresses outside the testnet, and
    listen addresses that are not the node's data IPs, as reported by each node's /status."""
    control = ipaddress.ip_network(testnet.control.subnet)
    data = [ipaddress.ip_network(n.subnet) for n in testnet.networks]
    findings = []
    for ns in snapshot.nodes:
        if not ns.target.has_api:
            findings += _control_path_from_tcp_table(testnet, ns.target, control, data)
            continue
        if not ns.ok:
            findings.append(f"{ns.name}: /status unreadable ({ns.error})")
            continue
        node = testnet.node(ns.name)
        for la in ns.status.listen_addrs if ns.status else ():
            ip = _ip_of_multiaddr(str(la))
            if ip is not None and ip not in node.addresses.values():
                findings.append(f"{ns.name}: p2p listens on {la}, not on a data IP of this node")
        for conn in ns.connections:
            ra = str(conn.remote_addr or "")
            ip = _ip_of_multiaddr(ra)
            if ip is None:
                continue
            addr = ipaddress.ip_address(ip)
            if addr in control:
                findings.append(
                    f"{ns.name}: p2p connection to {conn.peer} over the control "
                    f"network ({ra}); p2p must never use it"
                )
            elif not any(addr in d for d in data):
                findings.append(
                    f"{ns.name}: p2p connection to {ra}, outside the testnet's data networks"
                )
    return findings


def _control_path_from_tcp_table(
    testnet: Testnet,
    node: Node,
    control: ipaddress.IPv4Network | ipaddress.IPv6Network,
    data: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> list[str]:
    """The control-path audit of a node with `api: none`, from its TCP table (read from
    the host, harness/infra/netstate.py): the harness never connects to it, so no
    connection may touch the control network, and none may leave the data networks."""
    socks, err = netstate.tcp_table(docker_ops.node_container(testnet.name, node.name))
    if socks is None:
        return [f"{node.name}: TCP table unreadable ({err}); api: none nodes are audited by it"]
    findings = []
    for s in socks:
        if s.state != "ESTABLISHED" or ipaddress.ip_address(s.remote_ip).is_loopback:
            continue
        local, remote = ipaddress.ip_address(s.local_ip), ipaddress.ip_address(s.remote_ip)
        where = f"{s.local_ip}:{s.local_port} -> {s.remote_ip}:{s.remote_port}"
        if local in control or remote in control:
            findings.append(f"{node.name}: connection over the control network ({where})")
        elif not any(remote in d for d in data):
            findings.append(f"{node.name}: connection outside the data networks ({where})")
    return findings


# --------------------------------------------------------------------------- all together


def audit_running(running: RunningTestnet, progress: Progress) -> None:
    """The audit stage of a run: every check below, what passed said as progress."""
    with progress.step("safety checks"):
        report = audit(running.testnet, _patient_snapshot(running))
    for line in report.passed:
        progress.say(f"  ok: {line}")


SLOW_READ_TIMEOUTS_S = (5.0, 15.0)  # second and third reads of a /status that timed out


def _patient_snapshot(running: RunningTestnet) -> TestnetStatus:
    """Every node's /status, a read that timed out asked again with longer timeouts: every
    node has just answered (the wait before this), so a timeout here is a loaded machine
    (64 nodes starting on 2 cores: one node in 64 took over 2 s), not a finding; a node
    that still does not answer stays one."""
    snap = running.snapshot()
    for timeout_s in SLOW_READ_TIMEOUTS_S:
        slow = {ns.name for ns in snap.nodes if ns.down}
        if not slow:
            break
        again = {ns.name: ns for ns in running.snapshot(timeout_s=timeout_s, only=slow).nodes}
        snap.nodes = [again.get(ns.name, ns) for ns in snap.nodes]
    return snap


def audit(testnet: Testnet, snapshot: TestnetStatus) -> Report:
    """Run every check; raise AuditError listing all findings, else return what passed."""
    groups: list[tuple[str, Iterable[str]]] = []
    gateways = docker_gateways(testnet.name)
    what = "networks internal/no-masquerade/labelled" + (
        " (data networks: internal overlays)" if testnet.engine == "swarm" else ""
    )
    groups.append((what, check_networks(testnet)))
    groups.append(
        (
            f"no route via any of {len(gateways)} Docker gateways; default routes as modelled",
            check_routes(testnet, gateways),
        )
    )
    groups.append(("p2p on data IPs only, API on control IP only", check_listeners(testnet)))
    groups.append(("no p2p over the control network", control_path_violations(testnet, snapshot)))
    findings: list[str] = []
    passed: list[str] = []
    for title, found in groups:
        items = list(found)
        findings += items
        if not items:
            passed.append(title)
    if findings:
        raise AuditError(testnet.name, findings)
    return Report(passed)
