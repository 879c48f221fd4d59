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

import functools
import importlib
import re
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PINNED_VERSION = "0.8.1"


@dataclass(frozen=True)
class Internal:
    """`module`.`owner`.`attr` (owner "" for a module-level name), used by `used_by`."""

    module: str
    owner: str
    attr: str
    used_by: str


HOST = "libp2p.host.basic_host:BasicHost"
SWARM = "libp2p.network.swarm:Swarm"
YAMUX = "libp2p.stream_muxer.yamux.yamux:Yamux"
UPGRADER = "libp2p.transport.upgrader:TransportUpgrader"
QUIC_CONN = "libp2p.transport.quic.connection:QUICConnection"

# node/overrides module -> the internals it reaches for, as "module:Owner.attr"
# ("module:attr" for a module-level name)
USES: dict[str, list[str]] = {
    "identify.py": [
        f"{HOST}._identify_peer",
        f"{HOST}._identified_peers",
        f"{HOST}._has_cached_protocols",
        "libp2p.identity.identify_push.identify_push:identify_push_handler_for",
    ],
    "circuit_addrs.py": [f"{HOST}.get_addrs"],
    "observed_addrs.py": [
        f"{HOST}._observed_addr_manager",
        "libp2p.host.observed_addr_manager:ObservedAddrManager._external_addrs",
        "libp2p.host.observed_addr_manager:ObservedAddrManager._local_addr_rests",
    ],
    "stream_on.py": [
        f"{HOST}.multiselect_client",
        "libp2p.protocol_muxer.multiselect_client:MultiselectClient.select_one_of",
    ],
    "negative_cache.py": [
        f"{SWARM}._negative_peer_cache",
        "libp2p.network.swarm:_NegativePeerCache._ttl",
    ],
    "auto_connector.py": [
        f"{SWARM}.auto_connector",
        "libp2p.network.auto_connector:AutoConnector.maybe_connect",
    ],
    "dial_peer.py": [f"{SWARM}.get_connections", f"{SWARM}.dial_peer"],
    "no_redial.py": ["libp2p.pubsub.pubsub:Pubsub._handle_new_peer", f"{HOST}._identify_peer"],
    "pubsub_keep_subscriptions.py": [
        "libp2p.pubsub.pubsub:Pubsub._handle_dead_peer",
        "libp2p.pubsub.pubsub:Pubsub._peer_is_connected",
        "libp2p.pubsub.pubsub:Pubsub._peer_subscription_count",
        "libp2p.pubsub.pubsub:Pubsub.peer_topics",
    ],
    "pubsub_register_retry.py": [
        "libp2p.pubsub.pubsub:Pubsub._handle_new_peer",
        "libp2p.pubsub.pubsub:Pubsub._handle_new_peer_with_retry",
    ],
    "raw_dial.py": [
        f"{SWARM}.transport_manager",
        "libp2p.transport.manager:TransportManager.transport_for_dialing",
        "libp2p.transport.tcp.tcp:TCP.dial_with_source",
    ],
    "multi_addr_dial.py": [f"{SWARM}.upgrade_outbound_raw_conn", f"{SWARM}.add_conn"],
    "quic_reuse.py": [
        f"{QUIC_CONN}._initiate_connection",
        f"{QUIC_CONN}._client_packet_receiver",
        f"{QUIC_CONN}._transmit",
        "libp2p.transport.quic.listener:QUICListener.is_listening",
        "libp2p.transport.quic.connection_id_registry:ConnectionIDRegistry.register_connection",
        "libp2p.transport.manager:TransportManager.get_transports",
        f"{SWARM}.transport_manager",
    ],
    "dial_unknown.py": [
        f"{SWARM}.upgrader",
        f"{UPGRADER}.security_multistream",
        "libp2p.security.security_multistream:SecurityMultistream.secure_outbound",
        f"{UPGRADER}.upgrade_connection",
        f"{SWARM}.add_conn",
    ],
    "conn_parts.py": [
        f"{YAMUX}.secured_conn",
        f"{YAMUX}.event_closed",
        "libp2p.network.connection.swarm_connection:SwarmConn.direction",
    ],
    "read_watch.py": ["libp2p.security.secure_session:SecureSession.read"],
    "pubsub_seqno.py": ["libp2p.pubsub.pubsub:Pubsub.counter"],
    "pubsub_rpc.py": [
        "libp2p.pubsub.pubsub:Pubsub.stream_handler",
        "libp2p.pubsub.pubsub:Pubsub._handle_dead_peer",
    ],
    "idontwant.py": [
        "libp2p.pubsub.gossipsub:GossipSub._emit_idontwant_for_message",
        "libp2p.pubsub.gossipsub:GossipSub.mcache",
    ],
    "opportunistic_graft.py": [
        "libp2p.pubsub.gossipsub:GossipSub._perform_opportunistic_grafting",
    ],
    "seen_before_task.py": [
        "libp2p.pubsub.pubsub:Pubsub._is_subscribed_to_msg",
        "libp2p.pubsub.pubsub:Pubsub._is_msg_seen",
    ],
    "ihave_targets.py": [
        "libp2p.pubsub.gossipsub:GossipSub.gossip_heartbeat",
        "libp2p.pubsub.gossipsub:GossipSub._get_adaptive_gossip_peers_count",
        "libp2p.pubsub.gossipsub:GossipSub._get_in_topic_gossipsub_peers_from_minus",
        "libp2p.pubsub.gossipsub:GossipSub.select_from_minus",
        "libp2p.pubsub.gossipsub:GossipSub.mcache",
        "libp2p.pubsub.gossipsub:GossipSub.direct_peers",
        "libp2p.pubsub.gossipsub:GossipSub.fanout",
    ],
    "identify_observed.py": [
        "libp2p.identity.identify.identify:_prefer_circuit_addr",
        "libp2p.identity.identify.identify:ID",
        "libp2p.protocol_muxer.multiselect:Multiselect.handlers",
    ],
    "yamux_window.py": [
        "libp2p.stream_muxer.yamux.yamux:YamuxStream._auto_tune_and_send_window_update",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream._grow_to_delta",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream._grow_threshold",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream._apply_autotune_epoch",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.window_lock",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.recv_window",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.target_recv_window",
        "libp2p.stream_muxer.yamux.yamux:Yamux.stream_buffers",
    ],
    "yamux_env.py": [
        "libp2p.stream_muxer.yamux.yamux:_py_yamux_env",
        "libp2p.stream_muxer.yamux.yamux:_py_yamux_env_set",
        "libp2p.stream_muxer.yamux.yamux:os",
    ],
    "quick_locks.py": [
        "libp2p.network.stream.net_stream:NetStream._state_lock",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.window_lock",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.close_lock",
        "libp2p.stream_muxer.yamux.yamux:YamuxStream.rw_lock",
        "libp2p.stream_muxer.yamux.yamux:Yamux.streams_lock",
        "libp2p.stream_muxer.yamux.yamux:Yamux._write_lock",
        "libp2p.stream_muxer.rw_lock:ReadWriteLock._readers_lock",
        "libp2p.stream_muxer.rw_lock:ReadWriteLock._writer_lock",
        "libp2p.io.trio:TrioTCPStream.read_lock",
        "libp2p.io.trio:TrioTCPStream.write_lock",
    ],
    "stream_guard.py": [f"{SWARM}.common_stream_handler"],
    "validation_cache.py": [
        "libp2p.pubsub.pubsub:ValidationCache.get",
        "libp2p.pubsub.pubsub:ValidationCache.put",
        "libp2p.pubsub.pubsub:ValidationCache._remove",
        "libp2p.pubsub.pubsub:ValidationCache.clear_expired",
        "libp2p.pubsub.pubsub:ValidationResult",
    ],
    "pubsub_batch.py": [
        "libp2p.pubsub.pubsub:Pubsub.handle_sending_messages",
        "libp2p.pubsub.pubsub:Pubsub._handle_dead_peer",
        "libp2p.pubsub.rpc_queue:RpcQueue.pop",
        "libp2p.pubsub.rpc_queue:RpcQueue.__len__",
    ],
    "multistream_pipeline.py": [
        f"{HOST}.multiselect_client",
        f"{SWARM}.upgrader",
        f"{UPGRADER}.security_multistream",
        f"{UPGRADER}.muxer_multistream",
        "libp2p.security.security_multistream:SecurityMultistream._selector",
        "libp2p.stream_muxer.muxer_multistream:MuxerMultistream._selector",
        "libp2p.protocol_muxer.generic_selector:GenericMultistreamSelector.multiselect_client",
        "libp2p.protocol_muxer.multiselect_client:MultiselectClient.try_select",
        "libp2p.protocol_muxer.multiselect_client:is_valid_handshake",
    ],
    "task_parent.py": [
        "libp2p.tools.anyio_service.trio_manager:TrioManager._run_and_manage_task",
        "libp2p.tools.anyio_service.trio_manager:TrioManager._find_parent_task",
        "libp2p.tools.anyio_service.trio_tasks:FunctionTask.iterate_tasks",
    ],
    "punch_inbound.py": [
        f"{SWARM}.upgrade_inbound_raw_conn",
        f"{SWARM}.upgrade_outbound_raw_conn",
        "libp2p.network.connection.raw_connection:RawConnection.is_initiator",
        "libp2p.network.connection.raw_connection:RawConnection.get_remote_address",
    ],
    "sender_record.py": [
        "libp2p.peer.peerstore:env_to_send_in_RPC",
        "libp2p.pubsub.utils:maybe_consume_signed_record",
        "libp2p.pubsub.gossipsub:env_to_send_in_RPC",
        "libp2p.pubsub.gossipsub:maybe_consume_signed_record",
        "libp2p.pubsub.pubsub:env_to_send_in_RPC",
        "libp2p.pubsub.pubsub:maybe_consume_signed_record",
        "libp2p.pubsub.floodsub:env_to_send_in_RPC",
        "libp2p.pubsub.floodsub:maybe_consume_signed_record",
        "libp2p.peer.peerstore:PeerStore.get_local_record",
        "libp2p.peer.peerstore:PeerStore.peer_record_map",
        "libp2p.peer.envelope:consume_envelope",
    ],
}


def _internal(spec: str, used_by: str) -> Internal:
    module, _, path = spec.partition(":")
    owner, _, attr = path.rpartition(".")
    return Internal(module, owner, attr, "node/overrides/" + used_by)


INTERNALS: list[Internal] = [_internal(x, m) for m, xs in USES.items() for x in xs]


class UpstreamMismatch(RuntimeError):
    """The installed py-libp2p is not the one node/overrides was written against."""


def _assigned_in_source(cls: type, attr: str) -> bool:
    """An annotation of `attr` in cls or its bases, or `self.<attr> = ...` in their
    modules' source (instance attributes exist only once __init__ ran)."""
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass is object:
            continue
        if attr in getattr(klass, "__annotations__", {}):
            return True
        path = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if path and pattern.search(_source(path)):
            return True
    return False


@functools.cache
def _source(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


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
