"""Topology model: a YAML file describing networks and nodes, validated into frozen dataclasses.

Why strict: a topology mistake (a relay server the client cannot reach, a sentry on one
network only, an IP on Docker's gateway) otherwise shows up minutes later as a testnet that
"does not sync". Every problem is a `TopologyError` whose message names the file, the field
path, what is wrong and the fix, e.g.

    scenarios/x.yaml: nodes.node0.relay_servers[0]: 'node9' is not a node; known nodes: node0..node7

File format (see scenarios/sentry.yaml and docs/topology.md)::

    name: sentry                      # testnet name: Compose project, labels, key derivation
    description: free text
    chain: {block_interval_s: 1.0}
    networks:
      a:      {subnet: 172.20.0.0/24, nat: cone}     # private: nat none | full-cone |
              # restricted-cone | port-restricted-cone (alias cone) | symmetric
      public: {subnet: 10.0.0.0/24, public: true}    # exactly one public network
      # optional on any network: loss_pct (0..100, random drop), latency_ms (netem if present)
    nodes:
      node3:
        role: sentry                  # validator | full | sentry
        networks: {a: 172.20.0.13, public: 10.0.0.3}   # or a list of names: IPs auto-assigned
        relay_mode: both              # off | client | server | both
        relay_servers: [node7]        # node names; rendered as address WITHOUT peer id
        persistent_peers: [node7]     # optional; default: every node sharing a network
        serve_sync: true
        p2p_port: 4001                # optional; see "p2p ports" below
        config: {relay: {max_reservations: 64}}      # extra node.toml keys (contracts.md 1)
        impl: python                  # python (node/) | rust (peers/rust reference node)
        api: sentrynet                # sentrynet | none (judged from outside)
        image: myorg/node:1.2         # anyone's own node: an image on this engine, with
        command: [node, --listen, "{listen}", --relay, "{relay_servers}"]  # placeholders
        transports: [tcp, quic]       # optional (default [tcp]): quic also listens on
                                      # UDP at the p2p port, QUIC v1 (python nodes only)
        cpu_weight: 4                 # optional (default 1): its share of the CPU, relative
                                      # to the others, when the machine has too little

One NAT router is derived for each private network whose nat is not `none` (`router-<net>`);
its addresses are reserved here so nodes never collide with them: the private side takes the
highest host of the private subnet, the public side is allocated downward from the highest
host of the public subnet, in network order. Omitted node IPs are assigned from host .10
upward, in file order, skipping taken and reserved ones — deterministic for a given file.

p2p ports: every node behind the same NAT router gets its own port, 4001, 4002, ... in file
order (nodes with a public address or without a router keep 4001). The routers are Linux
MASQUERADE, which preserves the source port only while the public 4-tuple is free: with
several nodes on one port behind one router, they all share one public endpoint
(router-ip:4001), at most one pair of them across two routers can ever be direct, and every
other hole punch collides (EADDRNOTAVAIL, or the peer's SYN mapped elsewhere). That is what
the sentry scenario measured before ports were distinct. An explicit `p2p_port:` that makes
two nodes share a port behind one router is allowed (to reproduce exactly that) and
reported by `sentrynet analyse` and `render` as a warning.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.errors import SentrynetError
from harness.model.fields import FieldReader, suggest
from harness.model.nat import NAT_NAMES, canonical
from node.config import ConfigError, validate_overrides

if TYPE_CHECKING:
    from harness.model.links import LinkSpec

ROLES = ("validator", "full", "sentry")
NAT_TYPES = NAT_NAMES  # none, the presets of harness/model/nat.py, and the alias `cone`
RELAY_MODES = ("off", "client", "server", "both")
# Which libp2p implementation runs the node: ours (node/) or the rust-libp2p reference node
# (peers/rust). Both run the chain (vote, follow, serve block sync) on the same wire.
IMPLS = ("python", "rust")
# Whether the harness reads the node's sentrynet HTTP API (/status, /events). `none`: it
# never does; the node is judged from outside (its TCP table, the routers' conntrack, what
# the relays record about it), as a node we did not write would be.
APIS = ("sentrynet", "none")
# Anyone's own node (`image:` + `command:`): the facts render decides, for its command line.
# Values with several items (listen_addrs, relay_servers, persistent_peers) are joined with
# commas; a node that wants them one per argument reads the rendered node.toml ({config}).
COMMAND_PLACEHOLDERS = {
    "config": "the rendered node.toml (/config/node.toml)",
    "key": "the rendered key file, libp2p protobuf Ed25519 (/config/node.key)",
    "data": "the node's data volume (/data)",
    "name": "the node's name",
    "ip": "its first data IP",
    "port": "its p2p port",
    "listen": "its first p2p listen multiaddr",
    "listen_addrs": "every p2p listen multiaddr",
    "relay_servers": "relay server multiaddrs (without peer id)",
    "persistent_peers": "persistent peer multiaddrs (with /p2p/<id>)",
    "peer_id": "the peer id of the rendered key",
    "api": "the control-network address an API would listen on (ip:9000)",
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
FIRST_AUTO_HOST = 10  # auto-assigned node IPs start at .10 (below: gateway, spare)
P2P_PORT = 4001  # the first p2p port; nodes behind one NAT router count up from here
RESERVED_NETWORK_NAMES = ("control",)  # harness-owned network (node API only)

# The schema: allowed keys per object, next to the dataclasses they fill. Unknown keys are
# errors listing these (a typo like `relay_server` must not be silently ignored).
TOP_KEYS = ("name", "description", "chain", "networks", "nodes", "links")
CHAIN_KEYS = ("block_interval_s",)
NETWORK_KEYS = (
    "subnet",
    "public",
    "nat",
    "loss_pct",
    "latency_ms",
    "jitter_ms",
    "rate_kbit",
    "forwards",
    "hairpin",
    "mapping_timeout_s",
    "upstream",
    "placement",
)
# network keys that describe its NAT router: an error on a network without one
ROUTER_KEYS = ("hairpin", "mapping_timeout_s", "upstream")
FORWARD_KEYS = ("port", "to", "to_port", "proto")
FORWARD_PROTOS = ("tcp", "udp")
NODE_KEYS = (
    "role",
    "networks",
    "relay_mode",
    "relay_servers",
    "persistent_peers",
    "serve_sync",
    "p2p_port",
    "config",
    "impl",
    "api",
    "image",
    "command",
    "transports",
    "cpu_weight",
)
# `cpu_weight:` bounds: a relative share (Docker cpu_shares = 1024 x weight), felt only while
# the machine's CPUs are all busy; 64 keeps a weighted node below the whole machine's total
CPU_WEIGHT_MAX = 64
TRANSPORTS = ("tcp", "quic")  # `transports:`: tcp always, quic beside it (python nodes)
# Extra node config (`config:`) is validated by the node's own schema (node/config.py
# validate_overrides, docs/contracts.md section 1). These node.toml keys render derives from
# the topology, so `config:` cannot set them: each names the topology field to use instead
# (a `config:` relay_servers would make node.toml disagree with testnet.json, which is what
# the checks believe).
DERIVED_CONFIG_KEYS: dict[str, str] = {
    "node.name": "the node's key under `nodes:`",
    "node.role": "`role:`",
    "node.key_file": "nothing: render writes the key file",
    "node.data_dir": "nothing: the node's data volume is mounted there",
    "p2p.listen_addrs": "`networks:` (the node listens on each data IP)",
    "p2p.persistent_peers": "`persistent_peers:` (node names)",
    "relay.mode": "`relay_mode:`",
    "relay.enabled": "`relay_mode:` (off disables relaying)",
    "relay.relay_servers": "`relay_servers:` (node names)",
    "chain.validators": "`role: validator` on the nodes",
    "chain.validator_ids": "nothing: render derives them from the generated keys",
    "chain.serve_sync": "`serve_sync:`",
    "chain.block_interval_s": "the top-level `chain: {block_interval_s: ...}`",
    "api.listen": "nothing: the API listens on the node's control-network IP",
}


class TopologyError(SentrynetError):
    """A topology file problem. str() is `FILE: FIELD: PROBLEM; FIX` on one line."""

    def __init__(self, file: str, fieldpath: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.field = fieldpath
        self.problem = problem
        self.fix = fix
        where = f"{file}: {fieldpath}: " if fieldpath else f"{file}: "
        super().__init__(where + problem + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class ForwardSpec:
    """A port forward on a NAT router: its public `port` (`proto`) to node `to` behind it,
    at `to_port` (None: the node's p2p port, resolved when the testnet is built)."""

    port: int
    to: str
    to_port: int | None = None
    proto: str = "tcp"


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnet: str  # CIDR, e.g. 172.20.0.0/24
    public: bool = False
    # none, or a preset of harness/model/nat.py (`cone` is read as port-restricted-cone);
    # always none for the public network
    nat: str = "none"
    loss_pct: float = 0.0
    latency_ms: float = 0.0
    forwards: tuple[ForwardSpec, ...] = ()  # DNAT of router public ports to nodes behind it
    hairpin: bool = False  # hosts behind the router reach the forwards at its public address
    # how long an idle mapping lives (UDP, and established TCP) before the router forgets
    # it; None: the kernel's defaults (UDP 30/120 s, TCP 5 days)
    mapping_timeout_s: int | None = None
    # nested NAT (CGNAT): the private network this network's router sits on as its outside,
    # instead of the public network; None: the router's outside is the public network
    upstream: str | None = None
    jitter_ms: float = 0.0  # +- around latency_ms, uniformly, per packet (reorders)
    rate_kbit: int | None = None  # egress rate limit per interface on the network (tbf)
    # the host (of a multi-host swarm, `--host NAME=URL`) this private network, its router
    # and the nodes on it run on; None: the engine the harness talks to (docs/multi-host.md)
    placement: str | None = None

    @property
    def has_router(self) -> bool:
        return not self.public and self.nat != "none"

    @property
    def router_name(self) -> str | None:
        return f"router-{self.name}" if self.has_router else None


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    addresses: dict[str, str]  # network name -> IPv4, every entry resolved (file order)
    relay_mode: str = "off"  # off | client | server | both
    relay_servers: tuple[str, ...] = ()  # node names
    persistent_peers: tuple[str, ...] | None = None  # None: every node sharing a network
    serve_sync: bool = True
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    p2p_port: int = P2P_PORT  # resolved: explicit `p2p_port:` or derived (_assign_ports)
    impl: str = "python"  # python | rust (IMPLS); "image" for anyone's own node
    api: str = "sentrynet"  # sentrynet | none (APIS)
    image: str | None = None  # anyone's own node: an image on this engine
    command: tuple[str, ...] | None = None  # its command, COMMAND_PLACEHOLDERS expanded
    transports: tuple[str, ...] = ("tcp",)  # what it listens on at p2p_port (TRANSPORTS)
    cpu_weight: int = 1  # its CPU share relative to the others' when CPU is short

    @property
    def is_relay_server(self) -> bool:
        return self.relay_mode in ("server", "both")

    @property
    def is_relay_client(self) -> bool:
        return self.relay_mode in ("client", "both")


@dataclass(frozen=True)
class Topology:
    name: str
    networks: tuple[NetworkSpec, ...]
    nodes: tuple[NodeSpec, ...]
    description: str = ""
    block_interval_s: float = 1.0
    source: str = ""
    links: tuple[LinkSpec, ...] = ()  # conditions between two nodes (harness/model/links.py)

    def network(self, name: str) -> NetworkSpec:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def public_network(self) -> NetworkSpec:
        return next(n for n in self.networks if n.public)

    @property
    def validators(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.role == "validator")


# --- router address plan (shared with harness/model/testnet.py) ------------------------


def router_private_ip(subnet: str) -> str:
    """The router's address on its private network: the highest host of the subnet."""
    net = ipaddress.IPv4Network(subnet)
    return str(net.broadcast_address - 1)


def router_public_ips(networks: tuple[NetworkSpec, ...]) -> dict[str, str]:
    """Private network name -> its router's outside IP. On the public network: allocated
    downward from the top host. Behind another router (`upstream:`, nested NAT): on the
    upstream network, downward from just below that network's own router (the top host)."""
    public = next((n for n in networks if n.public), None)
    if public is None:
        return {}
    top = ipaddress.IPv4Network(public.subnet).broadcast_address - 1
    out: dict[str, str] = {}
    below: dict[str, int] = {}  # upstream network -> routers placed on it so far
    for net in networks:
        if not net.has_router:
            continue
        if net.upstream is None:
            out[net.name] = str(top - sum(1 for n in out if n not in _nested(networks)))
        else:
            up = next(n for n in networks if n.name == net.upstream)
            k = below.get(up.name, 0) + 1
            below[up.name] = k
            out[net.name] = str(ipaddress.IPv4Network(up.subnet).broadcast_address - 1 - k)
    return out


def _nested(networks: tuple[NetworkSpec, ...]) -> set[str]:
    return {n.name for n in networks if n.upstream is not None}


def outside_network(net: NetworkSpec, networks: tuple[NetworkSpec, ...]) -> str:
    """The network a router's outside interface is on: its upstream, else the public one."""
    return net.upstream or next(n.name for n in networks if n.public)


def nat_chain(net: str, networks: tuple[NetworkSpec, ...]) -> list[str]:
    """The private networks whose routers a packet from `net` crosses to reach the public
    network, innermost first: [net] for a router on the public network, [net, upstream,
    ...] behind nested NAT."""
    by_name = {n.name: n for n in networks}
    chain = [net]
    while (up := by_name[chain[-1]].upstream) is not None and up not in chain:
        chain.append(up)
    return chain


# --- switching a topology's implementation (`sentrynet scenario --impl`) -------------------

# Which unpinned nodes `--impl IMPL[:SCOPE]` moves to IMPL: every one, the relay clients
# (relay_mode off|client: the nodes whose behaviour the bug library asks about), or the
# relay servers (relay_mode server|both: the relays).
IMPL_SCOPES = ("all", "clients", "relays")


def pinned(spec: Any) -> bool:
    """A raw node spec that fixes its implementation: `impl:` or `image:` written out."""
    return isinstance(spec, dict) and ("impl" in spec or "image" in spec)


def switch_impl(
    raw: dict[str, Any], impl: str, scope: str = "all"
) -> tuple[dict[str, Any], list[str]]:
    """A copy of a raw topology mapping (as read from YAML, before validation) with every
    node in `scope` that pins neither `impl:` nor `image:` set to `impl`, and the names of
    the nodes it switched (file order). Pinned nodes keep what the file says: a topology
    that mixes implementations on purpose (mixed-relay, seed-rust) stays mixed."""
    if impl not in IMPLS or scope not in IMPL_SCOPES:
        raise ValueError(f"impl {impl!r} scope {scope!r}")
    out = dict(raw)
    nodes = raw.get("nodes")
    if not isinstance(nodes, dict):
        return out, []
    switched: list[str] = []
    new_nodes: dict[str, Any] = {}
    for name, spec in nodes.items():
        body = dict(spec) if isinstance(spec, dict) else ({} if spec is None else spec)
        if isinstance(body, dict) and not pinned(body):
            server = body.get("relay_mode") in ("server", "both")
            if scope == "all" or (scope == "relays") == server:
                body["impl"] = impl
                switched.append(str(name))
        new_nodes[name] = body if (isinstance(spec, dict) or spec is None) else spec
    out["nodes"] = new_nodes
    return out, switched


# --- loading ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _names(items: list[str]) -> str:
    """`node0..node7` for a numbered run, else a comma list (short, for error messages)."""
    if not items:
        return "(none)"
    m = [re.fullmatch(r"(.*?)(\d+)", s) for s in items]
    if len(items) > 2 and all(m):
        prefixes = {x.group(1) for x in m if x}
        nums = [int(x.group(2)) for x in m if x]
        if len(prefixes) == 1 and nums == list(range(nums[0], nums[0] + len(nums))):
            p = prefixes.pop()
            return f"{p}{nums[0]}..{p}{nums[-1]}"
    return ", ".join(items)


_suggest = suggest  # the name the scenario loader and older callers use


class _Checker(FieldReader):
    """Holds the file name so each check can raise a fully located error in one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, fieldpath: str, problem: str, fix: str = "") -> TopologyError:
        return TopologyError(self.source, fieldpath, problem, fix)

    def name(self, value: str, fieldpath: str, what: str) -> str:
        if not NAME_RE.match(value):
            raise self.fail(
                fieldpath,
                f"{value!r} is not a valid {what} name",
                "use 1-31 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            )
        return value

    def number(self, value: Any, fieldpath: str, lo: float, hi: float | None, unit: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(fieldpath, f"expected a number ({unit}), got {value!r}")
        if value < lo or (hi is not None and value >= hi):
            rng = f"{lo} <= value < {hi}" if hi is not None else f">= {lo}"
            raise self.fail(fieldpath, f"{value!r} is out of range", f"use {rng} ({unit})")
        return float(value)

    def choice(self, value: Any, fieldpath: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            fix = f"did you mean {close[0]!r}?" if close else ""
            raise self.fail(fieldpath, f"{value!r} is not one of {', '.join(choices)}", fix)
        return str(value)

    def name_list(self, value: Any, fieldpath: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(fieldpath, f"expected a list of node names, got {value!r}")
        return list(value)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file (raises TopologyError naming file and field)."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TopologyError(
            source, "", f"cannot read topology ({exc.strerror})", "check the path"
        ) from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise TopologyError(
            source,
            f"line {line}",
            f"not UTF-8 (byte {exc.start}: {exc.reason})",
            "save the file as UTF-8",
        ) from None
    return parse_topology(text, source=source, default_name=p.stem)


def parse_topology(text: str, source: str = "<topology>", default_name: str = "") -> Topology:
    c = _Checker(source)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise c.fail(line, f"not valid YAML ({problem})", "fix the YAML syntax") from None
    if raw is None:
        raw = {}
    top = c.mapping(raw, "", "the topology: name, networks, nodes")
    c.keys(top, "", TOP_KEYS)

    name = top.get("name", default_name)
    if not isinstance(name, str):
        raise c.fail("name", f"expected a string, got {name!r}")
    name = c.name(name.lower() if "name" not in top else name, "name", "testnet")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", f"expected a string, got {description!r}")

    block_interval = 1.0
    if "chain" in top:
        chain = c.mapping(top["chain"], "chain", "chain options")
        c.keys(chain, "chain", CHAIN_KEYS)
        if "block_interval_s" in chain:
            block_interval = c.number(
                chain["block_interval_s"], "chain.block_interval_s", 0, None, "seconds"
            )
            if block_interval <= 0:
                raise c.fail("chain.block_interval_s", "must be > 0", "use e.g. 1.0")

    from harness.model import links as pair_links  # it builds on this module

    networks = _parse_networks(c, top)
    nodes = _parse_nodes(c, top, networks)
    topo = Topology(
        name=name,
        networks=networks,
        nodes=nodes,
        description=description,
        block_interval_s=block_interval,
        source=source,
        links=pair_links.parse_links(c, top.get("links"), {n.name: n for n in nodes}),
    )
    _validate_relations(c, topo)
    pair_links.check_links(c, topo)
    _check_node_placements(c, topo)
    return topo


def _check_node_placements(c: _Checker, topo: Topology) -> None:
    """A node runs on one host: its private networks may not be placed on different ones."""
    for node in topo.nodes:
        places = {
            n: topo.network(n).placement for n in node.addresses if not topo.network(n).public
        }
        if len(set(places.values())) > 1:
            shown = ", ".join(f"{n} on {p or 'this engine'}" for n, p in places.items())
            raise c.fail(
                f"nodes.{node.name}.networks",
                f"its private networks are placed on different hosts ({shown})",
                "a node runs on one host: place those networks together, or drop one",
            )


def node_placement(topo: Topology, node: NodeSpec) -> str | None:
    """The host a node runs on: its private networks' (None: the harness's engine)."""
    for n in node.addresses:
        if not topo.network(n).public:
            return topo.network(n).placement
    return None


def jitter_ms(c: _Checker, spec: dict[str, Any], path: str, latency: float) -> float:
    """`jitter_ms` of a network or a link: 0 <= jitter <= its `latency_ms`."""
    jitter = c.number(spec.get("jitter_ms", 0), f"{path}.jitter_ms", 0, 60000, "milliseconds")
    if jitter > latency:
        raise c.fail(
            f"{path}.jitter_ms",
            f"{jitter:g} ms of jitter around a latency of {latency:g} ms",
            "set `latency_ms:` to at least the jitter (each packet is delayed "
            "latency_ms +- jitter_ms)",
        )
    return jitter


def _parse_forwards(c: _Checker, raw: Any, path: str, nat: str) -> tuple[ForwardSpec, ...]:
    """`forwards: [{port, to, to_port, proto}]`; node names are checked with the nodes."""
    if raw is None:
        return ()
    if nat == "none":
        raise c.fail(
            path,
            "set on a network without a NAT router (a public network, or `nat: none`)",
            "remove `forwards:`, or give the network `nat: cone` or `nat: symmetric`",
        )
    if not isinstance(raw, list):
        raise c.fail(path, f"expected a list, got {raw!r}", "e.g. `- {port: 4001, to: node3}`")
    out: list[ForwardSpec] = []
    seen: set[tuple[int, str]] = set()
    for i, item in enumerate(raw):
        fpath = f"{path}[{i}]"
        f = c.mapping(item, fpath, "port, to, to_port, proto")
        c.keys(f, fpath, FORWARD_KEYS)
        for key in ("port", "to"):
            if key not in f:
                raise c.fail(f"{fpath}.{key}", "missing", "e.g. `{port: 4001, to: node3}`")
        port = _port(c, f["port"], f"{fpath}.port")
        to_port = _port(c, f["to_port"], f"{fpath}.to_port") if "to_port" in f else None
        if not isinstance(f["to"], str):
            raise c.fail(f"{fpath}.to", f"expected a node name, got {f['to']!r}")
        proto = c.choice(f.get("proto", "tcp"), f"{fpath}.proto", FORWARD_PROTOS)
        if (port, proto) in seen:
            raise c.fail(
                f"{fpath}.port", f"{proto} port {port} is forwarded twice", "forward it once"
            )
        seen.add((port, proto))
        out.append(ForwardSpec(port, f["to"], to_port, proto))
    return tuple(out)


def _port(c: _Checker, value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise c.fail(path, f"{value!r} is not a port", "use an integer 1..65535")
    return value


def _parse_networks(c: _Checker, top: dict[str, Any]) -> tuple[NetworkSpec, ...]:
    if "networks" not in top:
        raise c.fail(
            "networks", "missing", "add a `networks:` mapping (one public, the rest private)"
        )
    raw = c.mapping(top["networks"], "networks", "network name -> settings")
    if not raw:
        raise c.fail("networks", "is empty", "add at least one public network")
    out: list[NetworkSpec] = []
    parsed: list[tuple[str, ipaddress.IPv4Network]] = []
    for net_name, spec in raw.items():
        path = f"networks.{net_name}"
        c.name(net_name, path, "network")
        if net_name in RESERVED_NETWORK_NAMES:
            raise c.fail(
                path, f"{net_name!r} is reserved by the harness (node API network)", "rename it"
            )
        spec = c.mapping(spec if spec is not None else {}, path, "subnet, public, nat, ...")
        c.keys(spec, path, NETWORK_KEYS)
        if "subnet" not in spec:
            raise c.fail(f"{path}.subnet", "missing", "add e.g. `subnet: 172.20.0.0/24`")
        subnet = _parse_subnet(c, spec["subnet"], f"{path}.subnet")
        for other_name, other in parsed:
            if subnet.overlaps(other):
                raise c.fail(
                    f"{path}.subnet",
                    f"{subnet} overlaps networks.{other_name}.subnet ({other})",
                    "give every network its own subnet",
                )
        parsed.append((net_name, subnet))
        public = c.boolean(spec.get("public", False), f"{path}.public")
        if public:
            if spec.get("nat", "none") != "none":
                raise c.fail(
                    f"{path}.nat",
                    "a public network has no NAT",
                    "remove `nat:` (NAT belongs to the private networks behind it)",
                )
            nat = "none"
        else:
            if "nat" not in spec:
                raise c.fail(
                    f"{path}.nat",
                    "missing on a private network",
                    "set `nat: cone` (a NAT router), `nat: symmetric` or `nat: none` (no router: "
                    "the network has no IP path out), or mark it `public: true`",
                )
            nat = canonical(c.choice(spec["nat"], f"{path}.nat", NAT_TYPES))
        loss = c.number(
            spec.get("loss_pct", 0), f"{path}.loss_pct", 0, 100, "percent of packets dropped"
        )
        latency = c.number(
            spec.get("latency_ms", 0), f"{path}.latency_ms", 0, 60000, "milliseconds"
        )
        jitter = jitter_ms(c, spec, path, latency)
        rate = None
        if "rate_kbit" in spec:
            rate = int(
                c.number(
                    spec["rate_kbit"], f"{path}.rate_kbit", 8, 10_000_001, "kbit/s per interface"
                )
            )
        forwards = _parse_forwards(c, spec.get("forwards"), f"{path}.forwards", nat)
        for key in ROUTER_KEYS:
            if key in spec and nat == "none" and spec[key] not in (False, None):
                raise c.fail(
                    f"{path}.{key}",
                    "set on a network without a NAT router",
                    f"remove `{key}:`, or give the network a NAT preset (e.g. `nat: cone`)",
                )
        hairpin = c.boolean(spec.get("hairpin", False), f"{path}.hairpin")
        timeout = None
        if "mapping_timeout_s" in spec:
            timeout = int(
                c.number(
                    spec["mapping_timeout_s"],
                    f"{path}.mapping_timeout_s",
                    1,
                    86401,
                    "seconds an idle mapping lives",
                )
            )
        upstream = None
        if "upstream" in spec:
            upstream = spec["upstream"]
            if not isinstance(upstream, str):
                raise c.fail(f"{path}.upstream", f"expected a network name, got {upstream!r}")
        placement = None
        if "placement" in spec:
            if public:
                raise c.fail(
                    f"{path}.placement",
                    "the public network spans every host",
                    "remove it; place the private networks (each with its router and nodes)",
                )
            raw_place = spec["placement"]
            if not isinstance(raw_place, str):
                raise c.fail(f"{path}.placement", f"expected a host name, got {raw_place!r}")
            placement = c.name(raw_place, f"{path}.placement", "host")
        out.append(
            NetworkSpec(
                net_name,
                str(subnet),
                public,
                nat,
                loss,
                latency,
                forwards,
                hairpin,
                timeout,
                upstream,
                jitter,
                rate,
                placement,
            )
        )
    _check_upstreams(c, out)
    _check_placements(c, out)
    publics = [n.name for n in out if n.public]
    if len(publics) != 1:
        problem = (
            "no network is public"
            if not publics
            else f"{len(publics)} networks are public ({', '.join(publics)})"
        )
        raise c.fail(
            "networks",
            problem,
            "mark exactly one network `public: true`: relays live there and NAT routers take "
            "their outside addresses from it",
        )
    public_net = next(n for n in out if n.public)
    pub = ipaddress.IPv4Network(public_net.subnet)
    routers = sum(n.has_router for n in out)
    if routers > pub.num_addresses // 2 - 2:
        raise c.fail(
            f"networks.{public_net.name}.subnet",
            f"{pub} is too small for the {routers} NAT routers' public addresses",
            "use a larger public subnet (routers take addresses from its top)",
        )
    return tuple(out)


def _check_placements(c: _Checker, networks: list[NetworkSpec]) -> None:
    """A network nested behind another (`upstream:`) is on its upstream's host: its router
    sits on the upstream network, which is local to one host."""
    by_name = {n.name: n for n in networks}
    for net in networks:
        up = by_name.get(net.upstream or "")
        if up is not None and up.placement != net.placement:
            raise c.fail(
                f"networks.{net.name}.placement",
                f"{net.placement or 'this engine'}, but its upstream {up.name} is on "
                f"{up.placement or 'this engine'}",
                f"give both the same placement (its router sits on network {up.name})",
            )


def _check_upstreams(c: _Checker, networks: list[NetworkSpec]) -> None:
    """`upstream:` names another private network with a router, and the chain ends on the
    public network (no loop)."""
    by_name = {n.name: n for n in networks}
    for net in networks:
        if net.upstream is None:
            continue
        path = f"networks.{net.name}.upstream"
        up = by_name.get(net.upstream)
        routed = [n.name for n in networks if n.has_router and n.name != net.name]
        if up is None or up.name == net.name or not up.has_router:
            what = (
                "is not a network"
                if up is None
                else "is this network itself"
                if up.name == net.name
                else "has no NAT router (public, or nat: none)"
            )
            raise c.fail(
                path,
                f"{net.upstream!r} {what}",
                f"name a private network with a NAT router: {', '.join(routed) or 'none'}",
            )
        seen = [net.name]
        while (nxt := by_name[seen[-1]].upstream) is not None:
            if nxt in seen:
                raise c.fail(
                    path,
                    f"a loop: {' -> '.join([*seen, nxt])}",
                    "the last network of the chain must have no `upstream:` (its router "
                    "is on the public network)",
                )
            seen.append(nxt)


def _parse_subnet(c: _Checker, value: Any, path: str) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise c.fail(path, f"expected a CIDR string like 172.20.0.0/24, got {value!r}")
    if "/" not in value:
        raise c.fail(path, f"{value!r} has no prefix length", f"did you mean {value}/24?")
    try:
        loose = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise c.fail(
            path, f"{value!r} is not an IPv4 subnet", "use CIDR, e.g. 172.20.0.0/24"
        ) from None
    if loose.network_address != ipaddress.IPv4Address(value.split("/")[0]):
        raise c.fail(path, f"{value!r} has host bits set", f"did you mean {loose}?")
    if loose.prefixlen > 28:
        raise c.fail(
            path, f"{value!r} is too small (/{loose.prefixlen})", "use /28 or larger, e.g. /24"
        )
    if loose.is_loopback or loose.is_multicast or loose.is_link_local:
        raise c.fail(
            path, f"{value!r} is a special-purpose range", "use a private range, e.g. 172.20.0.0/24"
        )
    return loose


def _reserved(networks: tuple[NetworkSpec, ...]) -> dict[str, dict[str, str]]:
    """network -> {ip: what reserves it}: Docker's gateway (.1) and the derived routers."""
    out: dict[str, dict[str, str]] = {}
    pub_ips = router_public_ips(networks)
    for net in networks:
        sub = ipaddress.IPv4Network(net.subnet)
        res = {str(sub.network_address + 1): "Docker's gateway"}
        if net.has_router:
            res[router_private_ip(net.subnet)] = f"router-{net.name}"
        out[net.name] = res
    by_name = {n.name: n for n in networks}
    for priv, ip in pub_ips.items():
        out[outside_network(by_name[priv], networks)][ip] = f"router-{priv}"
    return out


def _parse_nodes(
    c: _Checker, top: dict[str, Any], networks: tuple[NetworkSpec, ...]
) -> tuple[NodeSpec, ...]:
    if "nodes" not in top:
        raise c.fail(
            "nodes", "missing", "add a `nodes:` mapping (node name -> role, networks, ...)"
        )
    raw = c.mapping(top["nodes"], "nodes", "node name -> settings")
    if not raw:
        raise c.fail("nodes", "is empty", "add at least one node")
    by_name = {n.name: n for n in networks}
    known_nets = ", ".join(by_name)
    reserved = _reserved(networks)
    taken: dict[str, dict[str, str]] = {n.name: {} for n in networks}  # net -> ip -> node
    pending: list[tuple[str, dict[str, Any], dict[str, str | None]]] = []

    for node_name, spec in raw.items():
        path = f"nodes.{node_name}"
        c.name(node_name, path, "node")
        if node_name.startswith("router-"):
            raise c.fail(
                path,
                f"{node_name!r}: names starting with 'router-' are reserved for NAT routers",
                "rename the node",
            )
        spec = c.mapping(spec if spec is not None else {}, path, "role, networks, relay_mode, ...")
        c.keys(spec, path, NODE_KEYS)
        if "role" not in spec:
            raise c.fail(f"{path}.role", "missing", f"set one of {', '.join(ROLES)}")
        c.choice(spec["role"], f"{path}.role", ROLES)
        if "networks" not in spec:
            raise c.fail(f"{path}.networks", "missing", f"list the node's networks ({known_nets})")
        nets_raw = spec["networks"]
        if isinstance(nets_raw, list):
            if not all(isinstance(x, str) for x in nets_raw):
                raise c.fail(f"{path}.networks", f"expected network names, got {nets_raw!r}")
            if len(set(nets_raw)) != len(nets_raw):
                raise c.fail(f"{path}.networks", "lists a network twice", "list each network once")
            nets: dict[str, str | None] = {n: None for n in nets_raw}
        elif isinstance(nets_raw, dict):
            nets = {}
            for k, v in nets_raw.items():
                if v is not None and not isinstance(v, str):
                    raise c.fail(
                        f"{path}.networks.{k}",
                        f"expected an IPv4 address or nothing, got {v!r}",
                        "quote the address or leave it empty for automatic assignment",
                    )
                nets[str(k)] = v
        else:
            raise c.fail(
                f"{path}.networks",
                f"expected a list of network names or a mapping network -> IP, got {nets_raw!r}",
            )
        if not nets:
            raise c.fail(f"{path}.networks", "is empty", f"put the node on one of: {known_nets}")
        for net_name, ip in nets.items():
            fpath = f"{path}.networks.{net_name}"
            if net_name not in by_name:
                raise c.fail(
                    fpath, f"{net_name!r} is not a network", f"known networks: {known_nets}"
                )
            if ip is None:
                continue
            sub = ipaddress.IPv4Network(by_name[net_name].subnet)
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                raise c.fail(
                    fpath, f"{ip!r} is not an IPv4 address", f"use an address in {sub}"
                ) from None
            if addr not in sub:
                raise c.fail(
                    fpath, f"{ip} is outside the network's subnet {sub}", f"use an address in {sub}"
                )
            if addr in (sub.network_address, sub.broadcast_address):
                raise c.fail(
                    fpath, f"{ip} is the subnet's network/broadcast address", "use a host address"
                )
            if ip in reserved[net_name]:
                raise c.fail(
                    fpath,
                    f"{ip} is reserved for {reserved[net_name][ip]}",
                    f"use another address in {sub} (e.g. from .{FIRST_AUTO_HOST})",
                )
            if ip in taken[net_name]:
                raise c.fail(
                    fpath,
                    f"{ip} is already used by {taken[net_name][ip]}",
                    "give every node its own IP",
                )
            taken[net_name][ip] = node_name
        pending.append((node_name, spec, nets))

    # second pass: auto-assign omitted IPs deterministically (file order, lowest free from .10)
    nodes: list[NodeSpec] = []
    for node_name, spec, nets in pending:
        path = f"nodes.{node_name}"
        addresses: dict[str, str] = {}
        for net_name, ip in nets.items():
            if ip is None:
                ip = _next_free(by_name[net_name], reserved[net_name], taken[net_name])
                if ip is None:
                    raise c.fail(
                        f"{path}.networks.{net_name}",
                        f"no free address left in {by_name[net_name].subnet}",
                        "use a larger subnet",
                    )
                taken[net_name][ip] = node_name
            addresses[net_name] = ip
        nodes.append(_node_spec(c, path, node_name, spec, addresses))
    explicit = {name for name, spec, _ in pending if "p2p_port" in spec}
    return _assign_ports(nodes, networks, explicit)


def nat_router_network(node: NodeSpec, networks: tuple[NetworkSpec, ...]) -> str | None:
    """The private network whose NAT router carries this node's traffic to the public
    network, or None (the node has a public address, or no network of it has a router)."""
    if any(n.public and n.name in node.addresses for n in networks):
        return None
    return next((n.name for n in networks if n.name in node.addresses and n.has_router), None)


def public_router_network(node: NodeSpec, networks: tuple[NetworkSpec, ...]) -> str | None:
    """The network whose router faces the public network for this node: its own router's,
    or behind nested NAT the outermost one's. Nodes behind it share its public address, so
    ports are kept distinct per outermost router."""
    net = nat_router_network(node, networks)
    return None if net is None else nat_chain(net, networks)[-1]


def _assign_ports(
    nodes: list[NodeSpec], networks: tuple[NetworkSpec, ...], explicit: set[str]
) -> tuple[NodeSpec, ...]:
    """Derive the p2p ports not set explicitly: behind each router facing the public network
    (through nested routers too) the lowest port from P2P_PORT that no other node behind it
    uses (see the module docstring for why)."""
    behind = {n.name: public_router_network(n, networks) for n in nodes}
    used: dict[str, set[int]] = {}
    for n in nodes:
        net = behind[n.name]
        if net is not None and n.name in explicit:
            used.setdefault(net, set()).add(n.p2p_port)
    out = []
    for n in nodes:
        net = behind[n.name]
        if net is None or n.name in explicit:
            out.append(n)
            continue
        taken = used.setdefault(net, set())
        port = P2P_PORT
        while port in taken:
            port += 1
        taken.add(port)
        out.append(replace(n, p2p_port=port))
    return tuple(out)


def _next_free(net: NetworkSpec, reserved: dict[str, str], taken: dict[str, str]) -> str | None:
    sub = ipaddress.IPv4Network(net.subnet)
    first = sub.network_address + min(FIRST_AUTO_HOST, sub.num_addresses // 4)
    host = first
    while host < sub.broadcast_address:
        if str(host) not in reserved and str(host) not in taken:
            return str(host)
        host += 1
    return None


def _node_spec(
    c: _Checker, path: str, name: str, spec: dict[str, Any], addresses: dict[str, str]
) -> NodeSpec:
    relay_mode = c.choice(spec.get("relay_mode", "off"), f"{path}.relay_mode", RELAY_MODES)
    servers = c.name_list(spec.get("relay_servers", []), f"{path}.relay_servers")
    peers: list[str] | None = None
    if "persistent_peers" in spec:
        peers = c.name_list(spec["persistent_peers"], f"{path}.persistent_peers")
    impl = c.choice(spec.get("impl", "python"), f"{path}.impl", IMPLS)
    image, command = _own_image(c, path, spec)
    if image is not None:
        impl = "image"
    api = c.choice(spec.get("api", "none" if image else "sentrynet"), f"{path}.api", APIS)
    serve_sync = c.boolean(spec.get("serve_sync", True), f"{path}.serve_sync")
    transports = _transports(c, f"{path}.transports", spec.get("transports", ["tcp"]), impl)
    weight = spec.get("cpu_weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= CPU_WEIGHT_MAX:
        raise c.fail(
            f"{path}.cpu_weight",
            f"expected a whole number from 1 to {CPU_WEIGHT_MAX}, got {weight!r}",
            "a relative share of the CPU when it is short: 1 (the default) for every node "
            "alike, e.g. 4 for a relay that should not starve beside many clients",
        )
    port = spec.get("p2p_port", P2P_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
        raise c.fail(
            f"{path}.p2p_port",
            f"expected a TCP port number, got {port!r}",
            "use a whole number from 1024 to 65535, or leave it out (derived)",
        )
    if "config" in spec and spec["config"] is None:
        raise c.fail(
            f"{path}.config",
            "empty (null)",
            "give node.toml sections, e.g. config: {relay: {max_reservations: 64}}, or remove it",
        )
    extra = c.mapping(spec.get("config", {}), f"{path}.config", "node.toml section -> keys")
    try:
        config = validate_overrides(extra, derived=DERIVED_CONFIG_KEYS)
    except ConfigError as err:
        raise c.fail(f"{path}.config.{err.key}", err.problem, err.fix) from None
    return NodeSpec(
        name=name,
        role=spec["role"],
        addresses=addresses,
        relay_mode=relay_mode,
        relay_servers=tuple(servers),
        persistent_peers=tuple(peers) if peers is not None else None,
        serve_sync=serve_sync,
        config=config,
        p2p_port=port,
        impl=impl,
        api=api,
        image=image,
        command=command,
        transports=transports,
        cpu_weight=weight,
    )


def _transports(c: _Checker, path: str, value: Any, impl: str) -> tuple[str, ...]:
    """`transports:` checked: a list of TRANSPORTS with tcp in it (the node's primary
    address and every relay and peer address are TCP); quic only on our python node."""
    if not isinstance(value, list) or not value:
        raise c.fail(path, f"expected a list like [tcp, quic], got {value!r}")
    for i, t in enumerate(value):
        c.choice(t, f"{path}[{i}]", TRANSPORTS)
    if "tcp" not in value:
        raise c.fail(
            path, "tcp is missing", "keep tcp (relays and peers are dialed on TCP): [tcp, quic]"
        )
    if "quic" in value and impl != "python":
        raise c.fail(
            path,
            f"quic on a node with impl: {impl}",
            "QUIC is offered by sentrynet's python node only: drop quic, or use impl: python",
        )
    return tuple(t for t in TRANSPORTS if t in value)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {{{close[0]}}}?" if close else ""


def _own_image(
    c: _Checker, path: str, spec: dict[str, Any]
) -> tuple[str | None, tuple[str, ...] | None]:
    """`image:` and `command:` of anyone's own node, checked: an image reference, a list of
    strings whose {placeholders} are COMMAND_PLACEHOLDERS."""
    image = spec.get("image")
    command = spec.get("command")
    if image is None:
        if command is not None:
            raise c.fail(
                f"{path}.command",
                "a command without `image:`",
                "give the node's `image:` too (the command runs in it), or remove `command:`",
            )
        return None, None
    if not isinstance(image, str) or not image.strip() or any(ch.isspace() for ch in image):
        raise c.fail(
            f"{path}.image", f"expected an image reference like myorg/node:1.2, got {image!r}"
        )
    if "impl" in spec:
        raise c.fail(
            f"{path}.impl",
            "`impl:` and `image:` together",
            "`impl:` picks one of sentrynet's nodes (python, rust); `image:` runs your own: "
            "keep one",
        )
    if command is None:
        return image, None
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise c.fail(
            f"{path}.command",
            f"expected a list of strings (argv), got {command!r}",
            'e.g. command: [mynode, --config, "{config}"]',
        )
    for i, arg in enumerate(command):
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as exc:
            raise c.fail(
                f"{path}.command[{i}]", f"{arg!r}: {exc}", "write a literal brace as {{ or }}"
            ) from None
        for name in names:
            if name not in COMMAND_PLACEHOLDERS:
                known = ", ".join("{" + k + "}" for k in COMMAND_PLACEHOLDERS)
                raise c.fail(
                    f"{path}.command[{i}]",
                    f"unknown placeholder {{{name}}}",
                    f"known: {known}" + _did_you_mean(name, list(COMMAND_PLACEHOLDERS)),
                )
    return image, tuple(command)


def _validate_relations(c: _Checker, topo: Topology) -> None:
    """Cross-field checks: relays, peers, sentries, validators."""
    names = [n.name for n in topo.nodes]
    known = _names(names)
    by_name = {n.name: n for n in topo.nodes}
    public = topo.public_network
    if not topo.validators:
        raise c.fail(
            "nodes", "no node has `role: validator`", "the chain needs at least one validator"
        )
    for net in topo.networks:
        for i, f in enumerate(net.forwards):
            fpath = f"networks.{net.name}.forwards[{i}].to"
            if f.to not in by_name:
                raise c.fail(fpath, f"{f.to!r} is not a node", f"known nodes: {known}")
            if net.name not in by_name[f.to].addresses:
                raise c.fail(
                    fpath,
                    f"{f.to!r} is not on network {net.name!r} (it is on "
                    f"{', '.join(by_name[f.to].addresses)})",
                    f"forward to a node behind router-{net.name}",
                )
    forwarded = {f.to for net in topo.networks for f in net.forwards if f.proto == "tcp" and f.to}
    for node in topo.nodes:
        path = f"nodes.{node.name}"
        homed = len(node.addresses) >= 2 and public.name in node.addresses
        if node.role == "sentry" and not homed and node.name not in forwarded:
            raise c.fail(
                f"{path}.networks",
                "a sentry must be reachable from the public network: multi-homed on its "
                f"private network and the public one, or behind a TCP port forward of its "
                f"router (has: {', '.join(node.addresses)})",
                f"add `{public.name}:` to its networks, add a `forwards:` entry to it on "
                "its network, or make it `role: full`",
            )
        if node.relay_servers and not node.is_relay_client:
            raise c.fail(
                f"{path}.relay_servers",
                f"set, but relay_mode is {node.relay_mode!r} (only clients reserve on relays)",
                "set `relay_mode: client` or `both`, or remove relay_servers",
            )
        seen: set[str] = set()
        for i, server in enumerate(node.relay_servers):
            fpath = f"{path}.relay_servers[{i}]"
            if server not in by_name:
                raise c.fail(fpath, f"{server!r} is not a node", f"known nodes: {known}")
            if server == node.name:
                raise c.fail(fpath, "a node cannot be its own relay server", "name another node")
            if server in seen:
                raise c.fail(fpath, f"{server!r} is listed twice", "list each relay server once")
            seen.add(server)
            if not by_name[server].is_relay_server:
                raise c.fail(
                    fpath,
                    f"{server!r} has relay_mode {by_name[server].relay_mode!r}, it serves no relay",
                    f"set `relay_mode: server` or `both` on nodes.{server}",
                )
        for i, peer in enumerate(node.persistent_peers or ()):
            fpath = f"{path}.persistent_peers[{i}]"
            if peer not in by_name:
                raise c.fail(fpath, f"{peer!r} is not a node", f"known nodes: {known}")
            if peer == node.name:
                raise c.fail(fpath, "a node cannot be its own peer", "name another node")
