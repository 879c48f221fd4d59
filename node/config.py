"""Node configuration: the TOML schema of docs/contracts.md section 1, loaded strictly.

Every key is checked against the schema; an unknown or invalid key raises `ConfigError`
naming the dotted key and the fix, so `python -m node` can exit 2 with that message.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import multiaddr

ROLES = ("validator", "full", "sentry")
RELAY_MODES = ("client", "server", "both")


class ConfigError(ValueError):
    """An invalid node config; the message names the key (e.g. `relay.mode: ...`).

    `key` is the dotted key (`relay.relay_servers[0]`), `problem` what is wrong and `fix`
    what to do, so a caller (the harness, for a topology's `config:`) can re-locate it."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}" + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class NodeSection:
    name: str
    role: str = "full"
    key_file: str = "node.key"
    data_dir: str = "data"


@dataclass(frozen=True)
class P2PSection:
    listen_addrs: tuple[str, ...]
    persistent_peers: tuple[str, ...] = ()
    max_connections: int = 32
    # learnt peers are dialed while fewer than this many are connected (the low watermark,
    # node/connmgr.py); unset: three quarters of max_connections. A sentry that accepts
    # many clients sets it low, as CometBFT sentries keep few outbound peers and many
    # inbound ones: else it chases every full client in the testnet (docs/node.md)
    low_watermark: int | None = None
    discovery: bool = True
    # liveness (node/liveness.py): each interval, ping every connection the peer sent
    # nothing on since the last look (a busy one at least every 30 s, for its RTT); after
    # `ping_failures` pings in a row unanswered within `ping_timeout_s`, close it. The
    # timeout is generous: a loaded 2-core host answers slowly but still answers.
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 10.0
    ping_failures: int = 3


@dataclass(frozen=True)
class RelaySection:
    enabled: bool = False
    mode: str = "client"
    relay_servers: tuple[str, ...] = ()
    max_reservations_held: int = 2
    # server limits, sized for consensus traffic (rust-libp2p's 2 min / 128 KiB cut it)
    max_reservations: int = 128
    max_circuits_per_peer: int = 16
    circuit_duration_s: int = 3600
    circuit_bytes: int = 1 << 30
    reservation_ttl_s: int = 3600

    @property
    def is_client(self) -> bool:
        return self.enabled and self.mode in ("client", "both")

    @property
    def is_server(self) -> bool:
        return self.enabled and self.mode in ("server", "both")


@dataclass(frozen=True)
class DCUtRSection:
    enabled: bool = True
    max_attempts: int = 3
    # what a punch dials (node/dcutr/addrs.TRANSPORTS), of those the node listens on: a
    # scenario that must see a QUIC punch lists only quic
    transports: tuple[str, ...] = ("tcp", "quic")


@dataclass(frozen=True)
class ChainSection:
    validators: tuple[str, ...] = ()
    validator_ids: dict[str, str] = field(default_factory=dict)
    block_interval_s: float = 1.0
    serve_sync: bool = True


@dataclass(frozen=True)
class APISection:
    listen: str = "127.0.0.1:9000"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host, int(port)


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection
    p2p: P2PSection
    relay: RelaySection = field(default_factory=RelaySection)
    dcutr: DCUtRSection = field(default_factory=DCUtRSection)
    chain: ChainSection = field(default_factory=ChainSection)
    api: APISection = field(default_factory=APISection)
    source: str = ""  # path the config was read from (for messages)


_SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "p2p": P2PSection,
    "relay": RelaySection,
    "dcutr": DCUtRSection,
    "chain": ChainSection,
    "api": APISection,
}
_REQUIRED_SECTIONS = ("node", "p2p")
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _type_name(t: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(t, str(t))


def _check_scalar(key: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is float and isinstance(value, float) and not math.isfinite(value):
        # TOML has nan and inf, and `<= 0` is false for nan: without this a nan interval
        # passed validation and stopped the chain or crashed the liveness task later
        raise ConfigError(key, f"must be a finite number, got {value}", "use seconds, e.g. 1.0")
    if want is int and isinstance(value, bool):
        raise ConfigError(key, f"expected {_type_name(want)}, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(key, f"expected {_type_name(want)}, got {value!r}")
    return value


def _check_addr(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a multiaddr string, got {value!r}")
    try:
        multiaddr.Multiaddr(value)
    except Exception as exc:
        raise ConfigError(key, f"{value!r} is not a valid multiaddr ({exc})") from None
    return value


def _section(name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(name, f"expected a table [{name}], got {raw!r}")
    valid = {f.name for f in fields(cls)}
    for key in raw:
        if key not in valid:
            raise ConfigError(
                f"{name}.{key}",
                "unknown key",
                f"valid keys in [{name}]: {', '.join(sorted(valid))}",
            )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = f"{name}.{f.name}"
        if f.name not in raw:
            from dataclasses import MISSING

            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(key, "required key is missing")
            continue
        value = raw[f.name]
        ann = str(f.type)
        if ann.startswith("tuple[str"):
            if not isinstance(value, list):
                raise ConfigError(key, f"expected a list of strings, got {value!r}")
            items = []
            for i, item in enumerate(value):
                if name in ("p2p", "relay") and f.name != "validators":
                    items.append(_check_addr(f"{key}[{i}]", item))
                else:
                    items.append(_check_scalar(f"{key}[{i}]", item, str))
            value = tuple(items)
        elif ann.startswith("dict"):
            if not isinstance(value, dict):
                raise ConfigError(key, f"expected a table of name = peer id, got {value!r}")
            for k, v in value.items():
                _check_scalar(f"{key}.{k}", v, str)
            value = dict(value)
        else:
            # an `X | None` key is X when given (TOML has no null: absent means None)
            want = {"str": str, "int": int, "bool": bool, "float": float}[
                ann.removesuffix(" | None")
            ]
            value = _check_scalar(key, value, want)
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_config(raw: dict[str, Any], source: str = "") -> NodeConfig:
    """Validate a parsed TOML document and build a NodeConfig (raises ConfigError)."""
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(key, "unknown section", f"valid sections: {', '.join(_SECTIONS)}")
    for name in _REQUIRED_SECTIONS:
        if name not in raw:
            raise ConfigError(name, f"required section [{name}] is missing")
    parts = {name: _section(name, raw[name]) for name in _SECTIONS if name in raw}
    cfg = NodeConfig(**parts, source=source)
    _validate(cfg)
    return cfg


def section_keys(section: str) -> tuple[str, ...]:
    """The keys of one config section, in contract order (docs/contracts.md section 1)."""
    return tuple(f.name for f in fields(_SECTIONS[section]))


def section_defaults(section: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The default values of some keys of a section (render writes them out explicitly)."""
    by_name = {f.name: f for f in fields(_SECTIONS[section])}
    return {k: by_name[k].default for k in keys}


# What `validate_overrides` puts under the override so that a partial document validates
# as a whole; never reported (the caller derives these keys itself).
_PLACEHOLDER: dict[str, dict[str, Any]] = {
    "node": {"name": "override-check"},
    "p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/4001"]},
}


def validate_overrides(
    raw: Any, derived: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Validate a partial config (section -> key -> value), e.g. a topology's `config:`,
    against the same schema as a whole node.toml; return it as plain dicts.

    `derived` maps dotted keys the caller sets itself to where to set them instead; such a
    key is an error too. Raises ConfigError whose `key` is `section.key` (or deeper)."""
    if not isinstance(raw, dict):
        raise ConfigError("config", f"expected a table of sections, got {raw!r}")
    out: dict[str, dict[str, Any]] = {}
    for section, body in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                str(section), "not a node config section", f"valid sections: {', '.join(_SECTIONS)}"
            )
        if not isinstance(body, dict):
            raise ConfigError(section, f"expected a table [{section}], got {body!r}")
        valid = section_keys(section)
        for key in body:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"{section}.{key}", "unknown key", f"{hint}valid keys: {', '.join(valid)}"
                )
            dotted = f"{section}.{key}"
            if derived and dotted in derived:
                raise ConfigError(
                    dotted,
                    f"{dotted} is derived from the topology",
                    f"set it through {derived[dotted]}",
                )
        out[section] = dict(body)
    doc = {name: {**_PLACEHOLDER.get(name, {}), **out.get(name, {})} for name in _SECTIONS}
    parse_config(doc)
    return out


def is_tcp_listen(protos: list[str]) -> bool:
    """/ip4|ip6/<ip>/tcp/<port>, nothing after."""
    return len(protos) == 2 and protos[0] in ("ip4", "ip6") and protos[1] == "tcp"


def is_quic_listen(protos: list[str]) -> bool:
    """/ip4|ip6/<ip>/udp/<port>/quic-v1 (QUIC beside TCP, node/overrides/quic_reuse.py)."""
    return protos[:1] in (["ip4"], ["ip6"]) and protos[1:] == ["udp", "quic-v1"]


def _validate(cfg: NodeConfig) -> None:
    if not cfg.node.name:
        raise ConfigError("node.name", "must not be empty")
    if cfg.node.role not in ROLES:
        raise ConfigError("node.role", f"{cfg.node.role!r} is not one of {', '.join(ROLES)}")
    if cfg.relay.mode not in RELAY_MODES:
        raise ConfigError(
            "relay.mode", f"{cfg.relay.mode!r} is not one of {', '.join(RELAY_MODES)}"
        )
    if not cfg.p2p.listen_addrs:
        raise ConfigError("p2p.listen_addrs", "at least one listen address is required")
    for i, addr in enumerate(cfg.p2p.listen_addrs):
        ma = multiaddr.Multiaddr(addr)
        protos = [p.name for p in ma.protocols()]
        if not (is_tcp_listen(protos) or is_quic_listen(protos)):
            raise ConfigError(
                f"p2p.listen_addrs[{i}]",
                f"{addr!r} must be /ip4/<ip>/tcp/<port> or /ip4/<ip>/udp/<port>/quic-v1",
            )
        if i == 0 and not is_tcp_listen(protos):
            raise ConfigError(
                "p2p.listen_addrs[0]",
                f"{addr!r} is not TCP",
                "list a TCP address first (the node's primary address; QUIC goes beside it)",
            )
        ip = ma.value_for_protocol(protos[0])
        if ip in ("0.0.0.0", "::"):
            raise ConfigError(
                f"p2p.listen_addrs[{i}]",
                f"{addr!r} is a wildcard",
                "listen on a concrete IP (a wildcard makes reservations carry no addresses)",
            )
    for i, t in enumerate(cfg.dcutr.transports):
        if t not in ("tcp", "quic"):
            raise ConfigError(f"dcutr.transports[{i}]", f"{t!r} is not one of tcp, quic")
    if not cfg.dcutr.transports:
        raise ConfigError("dcutr.transports", "must name at least one of tcp, quic")
    positive = {
        "p2p.max_connections": cfg.p2p.max_connections,
        "relay.max_reservations_held": cfg.relay.max_reservations_held,
        "relay.max_reservations": cfg.relay.max_reservations,
        "relay.max_circuits_per_peer": cfg.relay.max_circuits_per_peer,
        "relay.circuit_duration_s": cfg.relay.circuit_duration_s,
        "relay.circuit_bytes": cfg.relay.circuit_bytes,
        "relay.reservation_ttl_s": cfg.relay.reservation_ttl_s,
        "dcutr.max_attempts": cfg.dcutr.max_attempts,
        "p2p.ping_interval_s": cfg.p2p.ping_interval_s,
        "p2p.ping_timeout_s": cfg.p2p.ping_timeout_s,
        "p2p.ping_failures": cfg.p2p.ping_failures,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, f"must be > 0, got {value}")
    low = cfg.p2p.low_watermark
    if low is not None and not 0 <= low <= cfg.p2p.max_connections:
        raise ConfigError(
            "p2p.low_watermark",
            f"must be from 0 to p2p.max_connections ({cfg.p2p.max_connections}), got {low}",
            "leave it out for three quarters of max_connections",
        )
    if cfg.chain.block_interval_s <= 0:
        raise ConfigError(
            "chain.block_interval_s", f"must be > 0, got {cfg.chain.block_interval_s}"
        )
    if not NODE_NAME_RE.match(cfg.node.name):
        # the name is in every log line and event; '%' once broke logging's formatting
        raise ConfigError(
            "node.name",
            f"{cfg.node.name!r} is not a node name",
            "use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)",
        )
    host, _, port = cfg.api.listen.rpartition(":")
    # isascii: str.isdigit() is true for digits of other scripts, which int() accepts
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError("api.listen", f"{cfg.api.listen!r} must be <ip>:<port>")
    try:
        api_ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ConfigError(
            "api.listen",
            f"{host!r} is not an IP address",
            "give the control-network IP (no host names: nothing is resolved)",
        ) from None
    for addr in cfg.p2p.listen_addrs:
        ip, tcp = _ip_port(addr)
        if tcp == int(port) and ip is not None and (ip == api_ip or ip.is_unspecified):
            raise ConfigError("api.listen", f"{cfg.api.listen!r} collides with p2p listen {addr}")
    for name in cfg.chain.validator_ids:
        if cfg.chain.validators and name not in cfg.chain.validators:
            raise ConfigError(
                f"chain.validator_ids.{name}",
                f"not in chain.validators ({', '.join(cfg.chain.validators)})",
            )


def _ip_port(addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, int | None]:
    """The IP and TCP port of a /ip4|ip6/../tcp/.. multiaddr (None where absent)."""
    parts = addr.split("/")
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port: int | None = None
    for i, p in enumerate(parts[:-1]):
        if p in ("ip4", "ip6"):
            try:
                ip = ipaddress.ip_address(parts[i + 1])
            except ValueError:
                ip = None
        elif p == "tcp" and parts[i + 1].isascii() and parts[i + 1].isdigit():
            port = int(parts[i + 1])
    return ip, port


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a node TOML config; every problem is a ConfigError naming its key."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), f"not UTF-8 (byte {exc.start}: {exc.reason})", "TOML files are UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML ({exc})") from None
    cfg = parse_config(raw, source=str(p))
    base = p.parent
    node = cfg.node
    # relative key_file / data_dir are relative to the config file (render writes them beside)
    key_file = node.key_file if Path(node.key_file).is_absolute() else str(base / node.key_file)
    data_dir = node.data_dir if Path(node.data_dir).is_absolute() else str(base / node.data_dir)
    from dataclasses import replace

    return replace(cfg, node=replace(node, key_file=key_file, data_dir=data_dir))
