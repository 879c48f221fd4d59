"""The resolved testnet: the topology plus everything derived from it that something runs.

Like CometBFT's e2e runner (manifest -> testnet), the topology says what the user wants and
this says exactly what will exist: per node its data IPs, its control-network IP and API URL,
its p2p listen multiaddrs, its peer id (deterministic keys, harness/model/keys.py), the relay server
and persistent peer addresses it is configured with, its default route; plus the derived NAT
routers and the Docker names. Render writes it to `testnet.json` beside docker-compose.yml so
the runtime (up, wait, status, perturb, graph) works from a rendered directory alone:
`Testnet.load(out_dir)`.

Decisions, in one place:
- p2p listens on every data IP at the node's p2p port (harness/model/topology.py: 4001, and
  4002, 4003, ... for further nodes behind the same NAT router, so each has its own public
  endpoint); never on the control network.
- The node API listens on the node's control IP, port 9000 (API_PORT). The control network is
  an internal bridge per testnet; its subnet is derived from the testnet name
  (10.250.X.0/24, X from a hash) unless overridden (`--subnet control=CIDR`).
- Routers: `router-<net>` for each private network with a NAT preset (not `none`); private IP = the
  top host of the private subnet, public IP allocated downward from the top of the public
  subnet (harness/model/topology.py reserves both).
- Relay servers are configured by address WITHOUT peer id (the node matches them via
  identify), using the server's address reachable from the client: a shared network first,
  else its public address when the client's NAT router gives a path (harness/model/reach.py).
  An unreachable relay server is still rendered (at its public address: that reproduces the
  seed's bug) and recorded in `warnings`.
- persistent_peers: by default every node sharing a network with this one (sentries reach
  each other on the public network), with peer id; a topology can list them explicitly.
- Subnet overrides move a network to another subnet of the same size, keeping each host part,
  so the same topology can run twice side by side (with another testnet name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import SentrynetError
from harness.model.keys import node_key
from harness.model.links import LinkRule, rules_for
from harness.model.reach import ip_path, no_path_reason, shared_public_endpoints
from harness.model.topology import (
    NAME_RE,
    NetworkSpec,
    NodeSpec,
    Topology,
    node_placement,
    outside_network,
    public_router_network,
    router_private_ip,
    router_public_ips,
)

API_PORT = 9000
CONTROL_NETWORK = "control"
CONTROL_FIRST_HOST = 10
CONTROL_GATEWAY_HOST = 2  # the control gateway's address on a control overlay (multi-host)
GATEWAY_PREFIX = "10.251"  # its local bridge: 10.251.X.0/29, X as the control subnet's
TESTNET_FILE = "testnet.json"
FORMAT_VERSION = 11  # 2: per-node p2p_port; 3: router_public_ip per network; 4: node impl;
# 5: node api (sentrynet | none); 6: node image and command (anyone's own node);
# 7: router forwards and hairpin; 8: NAT presets (harness/model/nat.py), node port_range;
# 9: network jitter_ms and rate_kbit, node links (pair link conditions); 10: engine;
# 11: hosts (network, router and node `host`, engine_hosts, control_gateway)
# The engines a testnet runs on (docs/multi-host.md): `compose` puts every network on a local
# bridge; `swarm` puts the data networks on attachable overlay networks of a Docker Swarm
# (the control network stays a local bridge: the harness reaches the APIs there).
ENGINES = ("compose", "swarm")
DEFAULT_ENGINE = "compose"
# Ephemeral port ranges of the nodes behind a router: each its own block from here, so that
# port-preserving mappings never collide and the cone filters know whose port is whose.
EPHEMERAL_FIRST = 20000
EPHEMERAL_END = 60000  # exclusive
EPHEMERAL_BLOCK = 1000
EPHEMERAL_MIN_BLOCK = 64


@dataclass(frozen=True)
class Network:
    name: str  # topology name (or "control")
    subnet: str
    docker_name: str  # <testnet>_<name>
    kind: str  # public | private | control
    nat: str = "none"  # none or a preset of harness/model/nat.py
    loss_pct: float = 0.0
    latency_ms: float = 0.0
    router_public_ip: str | None = None  # public IP of its NAT router, when it has one
    jitter_ms: float = 0.0  # +- around latency_ms per packet
    rate_kbit: int | None = None  # egress rate limit per interface on the network
    host: str | None = None  # the host it is placed on (`--host`); None: this engine

    @property
    def public(self) -> bool:
        return self.kind == "public"

    @property
    def private(self) -> bool:
        """Behind a NAT router, or (with none) reachable only by the containers on it."""
        return self.kind == "private"

    @property
    def gateway(self) -> str:
        """Docker's bridge address on the host (.1); no container routes through it."""
        return str(ipaddress.IPv4Network(self.subnet).network_address + 1)


@dataclass(frozen=True)
class ControlGateway:
    """How the harness reaches node APIs on other hosts: the control network is an overlay
    then, and this container on the harness's engine sits on it and on a local bridge the
    harness's host is on, forwarding the harness's HTTP requests (an HTTP proxy)."""

    container: str
    control_ip: str  # on the control overlay
    local_subnet: str  # the local bridge, `<testnet>_ctlgw`
    local_ip: str
    docker_name: str
    port: int = 8888

    @property
    def proxy_url(self) -> str:
        return f"http://{self.local_ip}:{self.port}"


@dataclass(frozen=True)
class Forward:
    """The router's public `port` (`proto`) DNATed to node `to` at `to_ip`:`to_port`."""

    port: int
    proto: str
    to: str
    to_ip: str
    to_port: int


@dataclass(frozen=True)
class Router:
    name: str  # router-<net>
    network: str  # the private network it fronts
    nat: str  # a preset of harness/model/nat.py (full-cone ... symmetric)
    private_ip: str
    public_network: str
    public_ip: str
    container: str
    forwards: tuple[Forward, ...] = ()
    hairpin: bool = False  # the private side reaches the forwards at the public address
    mapping_timeout_s: int | None = None  # idle mappings forgotten after this; None: kernel's
    # nested NAT: the outer router's private address, the inner router's default route (its
    # outside is a private network: the public one is only reachable through the outer)
    default_via: str | None = None
    host: str | None = None  # the host it runs on (its network's placement); None: this engine

    @property
    def netns_container(self) -> str:
        """The container owning its network namespace (as Node.netns_container)."""
        return self.container

    @property
    def addresses(self) -> dict[str, str]:
        """network -> IP, like Node.addresses: its private side and its public side."""
        return {self.network: self.private_ip, self.public_network: self.public_ip}


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    peer_id: str
    addresses: dict[str, str]  # data network -> IP
    control_ip: str
    listen_addrs: tuple[str, ...]
    p2p_port: int
    api_url: str
    relay_mode: str  # off | client | server | both
    relay_servers: tuple[str, ...]  # node names
    relay_server_addrs: tuple[str, ...]  # multiaddrs without peer id, same order
    persistent_peers: tuple[str, ...]  # node names
    persistent_peer_addrs: tuple[str, ...]  # multiaddrs with /p2p/<id>, same order
    serve_sync: bool
    default_via: str | None  # router private IP when the node routes out through a NAT router
    router: str | None  # that router's name
    container: str
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra node.toml keys
    impl: str = "python"  # python (node/) | rust (peers/rust reference node)
    api: str = "sentrynet"  # sentrynet: the harness reads /status; none: judged from outside
    image: str | None = None  # anyone's own node (topology `image:`), else sentrynet's image
    command: tuple[str, ...] | None = None  # its command, placeholders expanded by render
    # behind a NAT router: the ephemeral ports its kernel picks from (sysctl
    # net.ipv4.ip_local_port_range), its own block (EPHEMERAL_FIRST); None elsewhere
    port_range: tuple[int, int] | None = None
    # conditions on its direct paths to given peers (topology `links:`)
    links: tuple[LinkRule, ...] = ()
    host: str | None = None  # the host it runs on (its private network's); None: this engine
    # the HTTP proxy its API is reached through: a multi-host testnet's control gateway
    api_proxy: str | None = None
    cpu_weight: int = 1  # topology `cpu_weight:`; rendered as cpu_shares 1024 x weight

    @property
    def netns_container(self) -> str:
        """The container that owns the node's network namespace: the node's own, or for
        anyone's own image the `<container>-net` beside it (render: our image sets up the
        routes there, so the user's image needs no shell and no tools)."""
        return f"{self.container}-net" if self.image else self.container

    @property
    def has_api(self) -> bool:
        """Does the harness read this node's /status and /events (topology `api:`)?"""
        return self.api == "sentrynet"

    @property
    def networks(self) -> tuple[str, ...]:
        """The data networks it has an interface on, topology order."""
        return tuple(self.addresses)

    @property
    def validator(self) -> bool:
        return self.role == "validator"

    @property
    def relay_client(self) -> bool:
        """Expected to hold reservations (relay mode client; sentries in `both` are not)."""
        return self.relay_mode == "client"

    @property
    def p2p_addr(self) -> str:
        """The first listen address with peer id (a convenient dial target)."""
        return f"{self.listen_addrs[0]}/p2p/{self.peer_id}"


@dataclass(frozen=True)
class Testnet:
    __test__ = False  # not a pytest test class, despite the name

    name: str  # Compose project name and the value of every `sentrynet.testnet` label
    topology_name: str
    source: str  # topology file it came from
    description: str
    block_interval_s: float
    networks: tuple[Network, ...]  # data networks, topology order
    control: Network
    routers: tuple[Router, ...]
    nodes: tuple[Node, ...]
    warnings: tuple[str, ...] = ()
    engine: str = DEFAULT_ENGINE  # one of ENGINES
    # the other hosts of a multi-host swarm this testnet has containers on: name -> engine API
    # URL (`--host NAME=URL`, topology `placement:`); empty: every container on this engine
    engine_hosts: dict[str, str] = field(default_factory=dict)
    control_gateway: ControlGateway | None = None  # with engine_hosts: the path to their APIs

    def network_labels(self, net: Network) -> dict[str, str]:
        """The labels of `net`'s Docker network, one set for the compose file and the
        overlays the harness creates itself on a multi-host swarm: `down` and the safety
        checks find the networks by them."""
        labels = {
            "sentrynet.testnet": self.name,
            "sentrynet.network": net.name,
            "sentrynet.kind": net.kind,
        }
        if net.kind == "private":
            labels["sentrynet.nat"] = net.nat
        return labels

    def dynamic_range(self, network: str) -> str:
        """The block of `network` the engine may hand out itself: on a swarm overlay every
        host's attachment takes a load-balancer address from the subnet, which must not be
        one the model gives a node, router or gateway ("Address already in use" when a
        container then asks for it). The largest aligned block of at most 16 addresses
        holding none of them (nor the network, gateway or broadcast address)."""
        net = self.network(network)
        subnet = ipaddress.IPv4Network(net.subnet)
        used = {subnet.network_address, subnet.network_address + 1, subnet.broadcast_address}
        for h in self.hosts():
            if network in h.addresses:
                used.add(ipaddress.IPv4Address(h.addresses[network]))
        if net.kind == "control":
            used |= {ipaddress.IPv4Address(n.control_ip) for n in self.nodes}
            if self.control_gateway is not None:
                used.add(ipaddress.IPv4Address(self.control_gateway.control_ip))
        for prefix in range(max(subnet.prefixlen, 28), 31):
            for block in subnet.subnets(new_prefix=prefix):
                if not any(ip in block for ip in used):
                    return str(block)
        raise SentrynetError(
            f"network {network} ({subnet}): no free block of addresses left for the swarm's "
            "own (load-balancer) addresses; use a larger subnet"
        )

    def host_of(self, name: str) -> str | None:
        """The host a node or router runs on (None: this engine)."""
        for r in self.routers:
            if r.name == name:
                return r.host
        for n in self.nodes:
            if n.name == name:
                return n.host
        return None

    @property
    def project(self) -> str:
        """The Compose project: prefixed, so that `up --remove-orphans` and `down` can only
        ever touch sentrynet's own project of this name, never a user's project that
        happens to share the testnet's name (issue 16)."""
        return f"sentrynet-{self.name}"

    @property
    def validators(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.role == "validator")

    @property
    def validator_ids(self) -> dict[str, str]:
        return {n.name: n.peer_id for n in self.nodes if n.role == "validator"}

    @property
    def public_network(self) -> Network:
        return next(n for n in self.networks if n.kind == "public")

    @property
    def rust_nodes(self) -> tuple[str, ...]:
        """Nodes run by the rust reference node: they need the rust image."""
        return tuple(n.name for n in self.nodes if n.impl == "rust")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def starts_after(self, node: Node) -> tuple[str, ...]:
        """The nodes a relay client starts after: its relay servers of this testnet (relay
        mode server or both; those start after nothing but the routers, so no cycle).
        A client started before its relay spends its first seconds dialing a closed port
        and backing off; in the 64-node bench the sentries, last by name, started up to a
        minute after some of their clients."""
        if not node.relay_client:
            return ()
        names = {n.name: n for n in self.nodes}
        return tuple(
            r
            for r in node.relay_servers
            if r in names and r != node.name and names[r].relay_mode in ("server", "both")
        )

    def network(self, name: str) -> Network:
        for n in (*self.networks, self.control):
            if n.name == name:
                return n
        raise KeyError(name)

    def router(self, name: str) -> Router:
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(name)

    def router_of(self, network: str) -> Router | None:
        """The NAT router fronting a private network (None: public, or no router)."""
        return next((r for r in self.routers if r.network == network), None)

    def nodes_on(self, network: str) -> list[Node]:
        return [n for n in self.nodes if network in n.addresses]

    def host(self, name: str) -> Node | Router:
        """A node or a router (both run in a container and have `addresses`)."""
        for h in self.hosts():
            if h.name == name:
                return h
        raise KeyError(name)

    def hosts(self) -> list[Node | Router]:
        """Every container of the testnet that is on a data network: nodes, then routers."""
        return [*self.nodes, *self.routers]

    def hosts_on(self, network: str) -> list[Node | Router]:
        """Every node and router with an interface on a data network."""
        return [h for h in self.hosts() if network in h.addresses]

    def peer_names(self) -> dict[str, str]:
        """peer id -> node name (to print names instead of ids)."""
        return {n.peer_id: n.name for n in self.nodes}

    def rebound(self, network: str, new_ip: str) -> Testnet:
        """This testnet after `network`'s router moved to public address `new_ip`
        (`sentrynet perturb rebind`): the router, every network that is reached through that
        address (its own and any nested behind it), and every pair-link rule that matched
        the old address. Node configs keep what they were rendered with, as a deployed
        node's config does."""
        router = self.router_of(network)
        if router is None:
            raise SentrynetError(f"network {network!r} has no NAT router")
        old = router.public_ip

        def moved(ip: str | None) -> str | None:
            return new_ip if ip == old else ip

        return dataclasses.replace(
            self,
            routers=tuple(
                dataclasses.replace(r, public_ip=new_ip) if r.name == router.name else r
                for r in self.routers
            ),
            networks=tuple(
                dataclasses.replace(n, router_public_ip=moved(n.router_public_ip))
                for n in self.networks
            ),
            nodes=tuple(
                dataclasses.replace(
                    n,
                    links=tuple(dataclasses.replace(k, ip=moved(k.ip) or k.ip) for k in n.links),
                )
                for n in self.nodes
            ),
        )

    # --- serialisation (testnet.json) ---

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format"] = FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Testnet:
        if d.get("format") != FORMAT_VERSION:
            raise SentrynetError(
                f"testnet.json format {d.get('format')!r} is not {FORMAT_VERSION}; "
                "re-render the testnet with this version of sentrynet"
            )

        def tuples(obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
            return {k: tuple(v) if k in keys and v is not None else v for k, v in obj.items()}

        node_tuples = (
            "listen_addrs",
            "relay_servers",
            "relay_server_addrs",
            "persistent_peers",
            "persistent_peer_addrs",
            "command",
            "port_range",
        )
        return cls(
            name=d["name"],
            topology_name=d["topology_name"],
            source=d["source"],
            description=d["description"],
            block_interval_s=d["block_interval_s"],
            networks=tuple(Network(**n) for n in d["networks"]),
            control=Network(**d["control"]),
            routers=tuple(
                Router(**{**r, "forwards": tuple(Forward(**f) for f in r.get("forwards", ()))})
                for r in d["routers"]
            ),
            nodes=tuple(
                Node(
                    **{
                        **tuples(n, node_tuples),
                        "links": tuple(LinkRule.from_json(r) for r in n.get("links", ())),
                    }
                )
                for n in d["nodes"]
            ),
            warnings=tuple(d.get("warnings", ())),
            engine=d.get("engine", DEFAULT_ENGINE),
            engine_hosts=dict(d.get("engine_hosts") or {}),
            control_gateway=ControlGateway(**d["control_gateway"])
            if d.get("control_gateway")
            else None,
        )

    @classmethod
    def load(cls, out_dir: str | Path) -> Testnet:
        """The testnet rendered into `out_dir` (by `sentrynet render`)."""
        path = Path(out_dir) / TESTNET_FILE
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise SentrynetError(
                f"{path}: cannot read ({exc.strerror}); render the testnet first: "
                "`sentrynet render TOPOLOGY --out DIR`"
            ) from None
        except json.JSONDecodeError as exc:
            raise SentrynetError(f"{path}: not valid JSON ({exc}); re-render the testnet") from None
        return cls.from_dict(raw)


# --- building --------------------------------------------------------------------------------


def control_subnet_for(name: str, taken: list[ipaddress.IPv4Network]) -> str:
    """10.250.X.0/24 with X from a hash of the testnet name, skipping data subnets in use."""
    start = hashlib.sha256(name.encode()).digest()[0]
    for i in range(256):
        cand = ipaddress.IPv4Network(f"10.250.{(start + i) % 256}.0/24")
        if not any(cand.overlaps(t) for t in taken):
            return str(cand)
    raise SentrynetError("no free control subnet in 10.250.0.0/16; pass --subnet control=CIDR")


def parse_subnet_overrides(items: list[str]) -> dict[str, str]:
    """`NET=CIDR` strings (from --subnet) -> mapping; errors name the flag and the fix."""
    out: dict[str, str] = {}
    for item in items:
        net, sep, cidr = item.partition("=")
        if not sep or not net or not cidr:
            raise SentrynetError(
                f"--subnet {item!r}: expected NET=CIDR, e.g. --subnet a=172.30.0.0/24"
            )
        out[net.strip()] = cidr.strip()
    return out


def _remap(ip: str, old: ipaddress.IPv4Network, new: ipaddress.IPv4Network) -> str:
    return str(new.network_address + (int(ipaddress.IPv4Address(ip)) - int(old.network_address)))


def _apply_overrides(
    topo: Topology, overrides: dict[str, str]
) -> tuple[Topology, ipaddress.IPv4Network | None]:
    known = [n.name for n in topo.networks]
    control: ipaddress.IPv4Network | None = None
    remaps: dict[str, tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]] = {}
    for net, cidr in overrides.items():
        flag = f"--subnet {net}={cidr}"
        if net != CONTROL_NETWORK and net not in known:
            raise SentrynetError(
                f"{flag}: {net!r} is not a network of {topo.source}; "
                f"known: {', '.join([*known, CONTROL_NETWORK])}"
            )
        try:
            new = ipaddress.IPv4Network(cidr)
        except ValueError as exc:
            raise SentrynetError(f"{flag}: not a valid IPv4 subnet ({exc})") from None
        if net == CONTROL_NETWORK:
            control = new
            continue
        old = ipaddress.IPv4Network(topo.network(net).subnet)
        if new.prefixlen != old.prefixlen:
            raise SentrynetError(
                f"{flag}: must be a /{old.prefixlen} like the topology's {old} "
                "(each node keeps its host part)"
            )
        remaps[net] = (old, new)
    networks = tuple(
        dataclasses.replace(n, subnet=str(remaps[n.name][1])) if n.name in remaps else n
        for n in topo.networks
    )
    nodes = tuple(
        dataclasses.replace(
            node,
            addresses={
                net: _remap(ip, *remaps[net]) if net in remaps else ip
                for net, ip in node.addresses.items()
            },
        )
        for node in topo.nodes
    )
    subnets = [ipaddress.IPv4Network(n.subnet) for n in networks]
    if control is not None:
        subnets.append(control)
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            if a.overlaps(b):
                raise SentrynetError(
                    f"--subnet: {a} overlaps {b} after the overrides; give each network its own"
                )
    return dataclasses.replace(topo, networks=networks, nodes=nodes), control


def _forwards(topo: Topology, net: NetworkSpec) -> tuple[Forward, ...]:
    """A network's port forwards with the target's address (and p2p port by default)."""
    by_name = {n.name: n for n in topo.nodes}
    return tuple(
        Forward(
            port=f.port,
            proto=f.proto,
            to=f.to,
            to_ip=by_name[f.to].addresses[net.name],
            to_port=f.to_port if f.to_port is not None else by_name[f.to].p2p_port,
        )
        for f in net.forwards
    )


def build_testnet(
    topology: Topology,
    name: str | None = None,
    subnet_overrides: dict[str, str] | None = None,
    engine: str = DEFAULT_ENGINE,
    hosts: dict[str, str] | None = None,
) -> Testnet:
    """Resolve a validated topology into the testnet that render writes and the runtime runs,
    on `engine` (one of ENGINES), its placed networks on `hosts` (name -> engine API URL)."""
    if engine not in ENGINES:
        raise SentrynetError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    tn_name = name or topology.name
    if not NAME_RE.match(tn_name):
        raise SentrynetError(
            f"--name {tn_name!r}: use 1-31 lowercase letters, digits, '-' or '_' "
            "(it becomes the Compose project name)"
        )
    topo, control_net = _apply_overrides(topology, subnet_overrides or {})
    data_subnets = [ipaddress.IPv4Network(n.subnet) for n in topo.networks]
    control_subnet = str(control_net) if control_net else control_subnet_for(tn_name, data_subnets)
    control = Network(CONTROL_NETWORK, control_subnet, f"{tn_name}_{CONTROL_NETWORK}", "control")
    ctl = ipaddress.IPv4Network(control_subnet)
    if len(topo.nodes) + CONTROL_FIRST_HOST + 1 >= ctl.num_addresses:
        raise SentrynetError(
            f"control subnet {ctl} is too small for {len(topo.nodes)} nodes; "
            "pass --subnet control=CIDR with a larger one"
        )

    pub_ips = router_public_ips(topo.networks)
    networks = tuple(_network(tn_name, n, pub_ips) for n in topo.networks)
    routers = tuple(
        Router(
            name=f"router-{n.name}",
            network=n.name,
            nat=n.nat,
            private_ip=router_private_ip(n.subnet),
            public_network=outside_network(n, topo.networks),
            public_ip=pub_ips[n.name],
            container=f"{tn_name}-router-{n.name}",
            forwards=_forwards(topo, n),
            hairpin=n.hairpin,
            mapping_timeout_s=n.mapping_timeout_s,
            default_via=router_private_ip(topo.network(n.upstream).subnet) if n.upstream else None,
        )
        for n in topo.networks
        if n.has_router
    )
    keys = {n.name: node_key(tn_name, n.name) for n in topo.nodes}
    warnings: list[str] = [
        f"{', '.join(names)} share {endpoint} behind their NAT router: at most one pair of "
        "them can be direct to a peer behind another router (give each its own p2p_port)"
        for endpoint, names in shared_public_endpoints(topo).items()
    ]
    ranges: dict[str, tuple[int, int] | None] = dict(port_ranges(topo))
    nodes = []
    for index, spec in enumerate(topo.nodes):
        by_net = {r.network: r for r in routers}
        node = _node(tn_name, topo, spec, index, ctl, keys, by_net, warnings)
        links = rules_for(topo, spec, ranges)
        nodes.append(dataclasses.replace(node, port_range=ranges.get(spec.name), links=links))
    testnet = Testnet(
        name=tn_name,
        topology_name=topo.name,
        source=topo.source,
        description=topo.description,
        block_interval_s=topo.block_interval_s,
        networks=networks,
        control=control,
        routers=routers,
        nodes=tuple(nodes),
        warnings=tuple(warnings),
        engine=engine,
    )
    return place(testnet, topo, hosts or {})


def place(testnet: Testnet, topo: Topology, hosts: dict[str, str]) -> Testnet:
    """The testnet with its placed networks, their routers and nodes on `hosts` (topology
    `placement:`, `--host NAME=URL`) and the control gateway that reaches them. Without
    hosts a placement is not used (a warning says so): every container on this engine."""
    placed = {n.name: n.placement for n in topo.networks if n.placement}
    if not hosts:
        if placed:
            note = (
                f"placement ignored ({', '.join(f'{k} on {v}' for k, v in placed.items())}): "
                "no --host given, every container runs on this engine"
            )
            testnet = dataclasses.replace(testnet, warnings=(*testnet.warnings, note))
        return testnet
    if testnet.engine != "swarm":
        raise SentrynetError(
            "--host needs --engine swarm: only overlay networks span hosts (bridges do not)"
        )
    for net, host in placed.items():
        if host not in hosts:
            raise SentrynetError(
                f"networks.{net}.placement: host {host!r} has no engine: pass --host "
                f"{host}=URL (its Docker API, e.g. ssh://user@host or tcp://host:2376)"
            )
    unused = sorted(set(hosts) - set(placed.values()))
    if unused:
        raise SentrynetError(
            f"--host {', '.join(unused)}: no network of {topo.name} is placed there "
            "(topology `placement:` on a private network)"
        )
    node_host = {spec.name: node_placement(topo, spec) for spec in topo.nodes}
    ctl = ipaddress.IPv4Network(testnet.control.subnet)
    third = int(ctl.network_address) >> 8 & 0xFF
    local = ipaddress.IPv4Network(f"{GATEWAY_PREFIX}.{third}.0/29")
    gateway = ControlGateway(
        container=f"{testnet.name}-ctlgw",
        control_ip=str(ctl.network_address + CONTROL_GATEWAY_HOST),
        local_subnet=str(local),
        local_ip=str(local.network_address + 2),
        docker_name=f"{testnet.name}_ctlgw",
    )
    return dataclasses.replace(
        testnet,
        networks=tuple(dataclasses.replace(n, host=placed.get(n.name)) for n in testnet.networks),
        routers=tuple(dataclasses.replace(r, host=placed.get(r.network)) for r in testnet.routers),
        nodes=tuple(
            dataclasses.replace(n, host=node_host[n.name], api_proxy=gateway.proxy_url)
            for n in testnet.nodes
        ),
        engine_hosts=dict(hosts),
        control_gateway=gateway,
    )


def port_ranges(topo: Topology) -> dict[str, tuple[int, int]]:
    """node -> its ephemeral port range, for the nodes behind a NAT router: the k-th node
    behind a router facing the public network (through nested routers too: they share its
    public address) takes the k-th block from EPHEMERAL_FIRST, 1000 ports
    (fewer, down to 64, when more than 40 nodes share a router)."""
    behind: dict[str, list[str]] = {}
    for spec in topo.nodes:
        net = public_router_network(spec, topo.networks)
        if net is not None:
            behind.setdefault(net, []).append(spec.name)
    out = {}
    span = EPHEMERAL_END - EPHEMERAL_FIRST
    for net, names in behind.items():
        block = min(EPHEMERAL_BLOCK, span // len(names))
        if block < EPHEMERAL_MIN_BLOCK:
            raise SentrynetError(
                f"network {net}: {len(names)} nodes behind one router leave each fewer than "
                f"{EPHEMERAL_MIN_BLOCK} ephemeral ports; spread them over more private networks "
                f"(at most {span // EPHEMERAL_MIN_BLOCK} per router)"
            )
        for k, name in enumerate(names):
            lo = EPHEMERAL_FIRST + k * block
            out[name] = (lo, lo + block - 1)
    return out


def _network(tn_name: str, n: NetworkSpec, router_ips: dict[str, str]) -> Network:
    return Network(
        name=n.name,
        subnet=n.subnet,
        docker_name=f"{tn_name}_{n.name}",
        kind="public" if n.public else "private",
        nat=n.nat,
        loss_pct=n.loss_pct,
        latency_ms=n.latency_ms,
        router_public_ip=router_ips.get(n.name) if n.has_router else None,
        jitter_ms=n.jitter_ms,
        rate_kbit=n.rate_kbit,
    )


def _tcp(ip: str, port: int) -> str:
    return f"/ip4/{ip}/tcp/{port}"


def _node(
    tn_name: str,
    topo: Topology,
    spec: NodeSpec,
    index: int,
    ctl: ipaddress.IPv4Network,
    keys: dict[str, Any],
    routers: dict[str, Router],
    warnings: list[str],
) -> Node:
    public = topo.public_network
    relay_addrs = []
    for server_name in spec.relay_servers:
        server = topo.node(server_name)
        path = ip_path(topo, spec, server)
        if path is not None:
            relay_addrs.append(_tcp(path.addr, path.port or server.p2p_port))
            continue
        fallback = server.addresses.get(public.name) or next(iter(server.addresses.values()))
        relay_addrs.append(_tcp(fallback, server.p2p_port))
        warnings.append(
            f"{spec.name}: relay server {server_name} ({fallback}) is unreachable over IP: "
            f"{no_path_reason(topo, spec, server)}"
        )

    if spec.persistent_peers is None:
        peer_names = [
            other.name
            for other in topo.nodes
            if other.name != spec.name and set(other.addresses) & set(spec.addresses)
        ]
    else:
        peer_names = list(spec.persistent_peers)
    peer_addrs = []
    for peer_name in peer_names:
        peer = topo.node(peer_name)
        path = ip_path(topo, spec, peer)
        if path is None:
            ip = next(iter(peer.addresses.values()))
            warnings.append(
                f"{spec.name}: persistent peer {peer_name} ({ip}) is unreachable over IP: "
                f"{no_path_reason(topo, spec, peer)}"
            )
            port = peer.p2p_port
        else:
            ip, port = path.addr, path.port or peer.p2p_port
        peer_addrs.append(f"{_tcp(ip, port)}/p2p/{keys[peer_name].peer_id}")

    default_via = router = None
    if public.name not in spec.addresses:
        for net in spec.addresses:
            if net in routers:
                default_via, router = routers[net].private_ip, routers[net].name
                break
    control_ip = str(ctl.network_address + CONTROL_FIRST_HOST + index)
    return Node(
        name=spec.name,
        role=spec.role,
        peer_id=keys[spec.name].peer_id,
        addresses=dict(spec.addresses),
        control_ip=control_ip,
        listen_addrs=tuple(_tcp(ip, spec.p2p_port) for ip in spec.addresses.values())
        + tuple(
            f"/ip4/{ip}/udp/{spec.p2p_port}/quic-v1"
            for ip in spec.addresses.values()
            if "quic" in spec.transports
        ),
        p2p_port=spec.p2p_port,
        api_url=f"http://{control_ip}:{API_PORT}",
        relay_mode=spec.relay_mode,
        relay_servers=spec.relay_servers,
        relay_server_addrs=tuple(relay_addrs),
        persistent_peers=tuple(peer_names),
        persistent_peer_addrs=tuple(peer_addrs),
        serve_sync=spec.serve_sync,
        default_via=default_via,
        router=router,
        container=f"{tn_name}-{spec.name}",
        config={k: dict(v) for k, v in spec.config.items()},
        impl=spec.impl,
        api=spec.api,
        image=spec.image,
        command=spec.command,
        cpu_weight=spec.cpu_weight,
    )
