"""Build our signed peer record once per address change, verify a peer's once per change.

Upstream (py-libp2p 0.8.1) puts the sender's signed peer record (an Envelope) in every
pubsub RPC it sends (`env_to_send_in_RPC`, called by `GossipSub.publish`,
`emit_control_message`, IWANT replies, subscription announcements) and verifies the one in
every RPC it receives (`maybe_consume_signed_record`: protobuf decode plus an ed25519
signature check, then a peer-store update). Sending recomputes `host.get_addrs()`, compares
address sets and re-marshals the envelope each time. For a node that gossips a handful of
small messages per second to each mesh peer, that was about a fifth of its idle CPU (bench
idle_profile: 12 % building, 10 % verifying).

Both functions are pure in what matters: the same addresses give the same envelope, the
same envelope bytes from the same peer verify the same way. So:
- sending: the envelope bytes are reused for up to SEND_TTL_S; a changed address set
  (a new reservation, a new observed address) shows up in the record within that time;
- receiving: bytes identical to the last record accepted from that peer are accepted
  without verifying again, for up to RECHECK_S (then the full check runs, which also
  refreshes the record's TTL in the peer store). Different bytes always get the full check.
Module-level names are replaced in the pubsub modules that import them (process-wide,
idempotent); the upstream functions are kept and called on every miss.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.pubsub.floodsub as floodsub_mod
import libp2p.pubsub.gossipsub as gossipsub_mod
import libp2p.pubsub.pubsub as pubsub_mod
from libp2p.peer.peerstore import env_to_send_in_RPC as upstream_env_to_send
from libp2p.pubsub.utils import maybe_consume_signed_record as upstream_consume

SEND_TTL_S = 1.0
RECHECK_S = 300.0

MODULES = (gossipsub_mod, pubsub_mod, floodsub_mod)

# host -> (built at, envelope bytes); host -> {peer id: (accepted at, envelope bytes)}
_sent: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()
_accepted: weakref.WeakKeyDictionary[Any, dict[Any, tuple[float, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def cached_env_to_send(host: Any) -> tuple[bytes, bool]:
    now = time.monotonic()
    held = _sent.get(host)
    if held is not None and now - held[0] < SEND_TTL_S:
        return held[1], False
    env, fresh = upstream_env_to_send(host)
    _sent[host] = (now, env)
    return env, fresh


def cached_consume(msg: Any, host: Any, peer_id: Any) -> bool:
    if not msg.HasField("senderRecord"):
        return True
    record = bytes(msg.senderRecord)
    now = time.monotonic()
    per_peer = _accepted.setdefault(host, {})
    held = per_peer.get(peer_id)
    if held is not None and held[1] == record and now - held[0] < RECHECK_S:
        return True
    ok = upstream_consume(msg, host, peer_id)
    if ok:
        per_peer[peer_id] = (now, record)
    else:
        per_peer.pop(peer_id, None)
    return bool(ok)


def install_sender_record_cache() -> None:
    for mod in MODULES:
        mod.env_to_send_in_RPC = cached_env_to_send  # type: ignore[attr-defined]
        mod.maybe_consume_signed_record = cached_consume  # type: ignore[attr-defined]
