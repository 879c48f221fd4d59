"""The py-libp2p internals the node relies on, and the start-up check that they are there.

The overrides in this package (and the few helpers beside them) reach below py-libp2p's
public interfaces (libp2p.abc): private attributes, instance attributes that no interface
declares, methods replaced on an instance. They are written against one release
(PINNED_VERSION, pinned in pyproject.toml). `check()` runs when the node starts and in
tests/unit/test_upstream.py: a different release, or a release that renamed one of these,
stops the node with a message naming the attribute, the module and the override that
needs it, instead of a misbehaving node.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

PINNED_VERSION = "0.8.1"


@dataclass(frozen=True)
class Internal:
    """`module`.`owner`.`attr` (owner "" for a module-level name), used by `used_by`."""

    module: str
    owner: str
    attr: str
    used_by: str

    @property
    def name(self) -> str:
        return ".".join(p for p in (self.module, self.owner, self.attr) if p)


def _internals() -> list[Internal]:
    host, swarm = "libp2p.host.basic_host", "libp2p.network.swarm"
    o = "node/overrides/"
    rows = [
        (host, "BasicHost", "_identify_peer", o + "identify.py"),
        (host, "BasicHost", "_identified_peers", o + "identify.py"),
        (host, "BasicHost", "_has_cached_protocols", o + "identify.py"),
        (
            "libp2p.identity.identify_push.identify_push",
            "",
            "identify_push_handler_for",
            o + "identify.py",
        ),
        (host, "BasicHost", "get_addrs", o + "circuit_addrs.py"),
        (host, "BasicHost", "_observed_addr_manager", o + "observed_addrs.py"),
        (
            "libp2p.host.observed_addr_manager",
            "ObservedAddrManager",
            "addrs",
            o + "observed_addrs.py",
        ),
        (host, "BasicHost", "multiselect_client", o + "stream_on.py"),
        (
            "libp2p.protocol_muxer.multiselect_client",
            "MultiselectClient",
            "select_one_of",
            o + "stream_on.py",
        ),
        (swarm, "Swarm", "_negative_peer_cache", o + "negative_cache.py"),
        (swarm, "_NegativePeerCache", "_ttl", o + "negative_cache.py"),
        (swarm, "Swarm", "auto_connector", o + "auto_connector.py"),
        (
            "libp2p.network.auto_connector",
            "AutoConnector",
            "maybe_connect",
            o + "auto_connector.py",
        ),
        (swarm, "Swarm", "get_connections", o + "dial_peer.py"),
        (swarm, "Swarm", "dial_peer", o + "dial_peer.py"),
        (swarm, "Swarm", "transport_manager", o + "raw_dial.py"),
        (
            "libp2p.transport.manager",
            "TransportManager",
            "transport_for_dialing",
            o + "raw_dial.py",
        ),
        ("libp2p.transport.tcp.tcp", "TCP", "dial_with_source", o + "raw_dial.py"),
        (swarm, "Swarm", "upgrade_outbound_raw_conn", o + "multi_addr_dial.py"),
        (swarm, "Swarm", "upgrader", o + "dial_unknown.py"),
        (
            "libp2p.transport.upgrader",
            "TransportUpgrader",
            "security_multistream",
            o + "dial_unknown.py",
        ),
        (
            "libp2p.security.security_multistream",
            "SecurityMultistream",
            "secure_outbound",
            o + "dial_unknown.py",
        ),
        (
            "libp2p.transport.upgrader",
            "TransportUpgrader",
            "upgrade_connection",
            o + "dial_unknown.py",
        ),
        (swarm, "Swarm", "add_conn", o + "dial_unknown.py"),
        ("libp2p.stream_muxer.yamux.yamux", "Yamux", "secured_conn", o + "conn_parts.py"),
        ("libp2p.stream_muxer.yamux.yamux", "Yamux", "event_closed", o + "conn_parts.py"),
        ("libp2p.security.secure_session", "SecureSession", "read", o + "read_watch.py"),
        ("libp2p.pubsub.pubsub", "Pubsub", "counter", o + "pubsub_seqno.py"),
    ]
    return [Internal(*r) for r in rows]


INTERNALS: list[Internal] = _internals()


class UpstreamMismatch(RuntimeError):
    """The installed py-libp2p is not the one node/overrides was written against."""


def _assigned_in_source(cls: type, attr: str) -> bool:
    """`self.<attr> = ...` (or an annotated assignment) somewhere in cls or its bases."""
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass is object:
            continue
        if attr in getattr(klass, "__annotations__", {}):
            return True
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(src):
            return True
    return False


def missing(internal: Internal) -> str | None:
    """Why `internal` is not there, or None when it is."""
    try:
        mod = importlib.import_module(internal.module)
    except ImportError as exc:
        return f"module {internal.module} cannot be imported ({exc})"
    if not internal.owner:
        return None if hasattr(mod, internal.attr) else f"{internal.module} has no {internal.attr}"
    owner = getattr(mod, internal.owner, None)
    if not isinstance(owner, type):
        return f"{internal.module} has no class {internal.owner}"
    if hasattr(owner, internal.attr) or _assigned_in_source(owner, internal.attr):
        return None
    return f"{internal.module}.{internal.owner} has no attribute {internal.attr}"


def check(internals: list[Internal] | None = None, installed: str | None = None) -> None:
    """Raise UpstreamMismatch naming every problem: the installed py-libp2p is not
    PINNED_VERSION, or an internal in the registry is gone."""
    if installed is None:
        try:
            installed = version("libp2p")
        except PackageNotFoundError:
            installed = "not installed"
    problems = []
    if installed != PINNED_VERSION:
        problems.append(
            f"py-libp2p {installed} is installed; node/overrides is written against "
            f"{PINNED_VERSION} (pyproject.toml pins it)"
        )
    for internal in INTERNALS if internals is None else internals:
        why = missing(internal)
        if why is not None:
            problems.append(f"{why} (used by {internal.used_by})")
    if problems:
        raise UpstreamMismatch("upstream py-libp2p changed:\n  " + "\n  ".join(problems))
