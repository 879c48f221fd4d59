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
  (a new reservation, a new observed address) shows up in the record within that time.
  Checking costs `host.get_addrs()` (circuit addresses included) and a marshal: at 1 s it
  was 2.7 % of an idle full node's Python time (py-spy `--gil`, the sentry testnet), so it
  is 10 s (identify, which peers read our addresses from, builds its own);
  The bytes are rebuilt at once when the host's local record (kept in the peer store) is
  no longer the one they were taken from: identify issues a new record, with a newer
  sequence number, as soon as it sees the addresses changed, and a pubsub RPC must not
  carry an older record than the identify message before it (see below);
- receiving: bytes identical to the last record accepted from that peer are accepted
  without verifying again, for up to RECHECK_S (then the full check runs, which also
  refreshes the record's TTL in the peer store). Different bytes always get the full check.

A record that is older than the one we hold for that peer is stale, not invalid. Upstream
(`maybe_consume_signed_record`) returns False for it as for a forged one, and
`Pubsub.continuously_read_stream` then drops the whole RPC: the messages, the control
messages and the subscriptions in it. A peer's first RPC on a stream is its hello, the only
place it announces its subscriptions; when identify had brought us a newer record of the
peer a moment before (an address came: a reservation, an observed address), the hello was
dropped and we never counted the peer as subscribed to anything: no mesh, nothing we
published reached it. In the seed testnet a validator was left knowing no subscriber of
the chain topic at all, heard every vote and sent none (2026-12-07: the one failure in nine
runs of a seed-exact repro loop left once pubsub_keep_subscriptions.py was in). Here a
stale record whose signature and peer id check out is left unused (the newer one stays)
and the RPC is processed; forged records and wrong peer ids still drop it, as upstream.

Module-level names are replaced in the pubsub modules that import them (process-wide,
idempotent); the upstream functions are kept and called on every miss.

Upstream also sends the record in EVERY RPC, so a 200-byte vote went out as a 1.2 KiB RPC
(about 900 bytes of envelope: our circuit addresses each carry two peer ids) and a block
as 2-3 TCP segments instead of 1-2. The record is an extension of py-libp2p's (RPC field
4); go-libp2p and rust-libp2p neither send nor read it, and identify already carries the
same signed record. `RecordOncePerStream` (used by node/overrides/pubsub_batch.py, the
node's per-peer sending loop) sends it in the first RPC on a stream, again when its bytes
change (an address came or went) and at least every RESEND_S, and leaves it out of the
RPCs in between. A receiver treats an RPC without a record as upstream does: it is
accepted and the peer's certified addresses stay as last received.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.pubsub.floodsub as floodsub_mod
import libp2p.pubsub.gossipsub as gossipsub_mod
import libp2p.pubsub.pubsub as pubsub_mod
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC as upstream_env_to_send
from libp2p.pubsub.utils import maybe_consume_signed_record as upstream_consume

SEND_TTL_S = 10.0
RECHECK_S = 300.0
# a peer's copy of our record is refreshed this often even when nothing changed, in step
# with RECHECK_S on its side (the certified address book keeps a record for 2 hours)
RESEND_S = 300.0

MODULES = (gossipsub_mod, pubsub_mod, floodsub_mod)

# host -> (built at, envelope bytes, the local record they came from);
# host -> {peer id: (accepted at, envelope bytes)}
_sent: weakref.WeakKeyDictionary[Any, tuple[float, bytes, Any]] = weakref.WeakKeyDictionary()
_accepted: weakref.WeakKeyDictionary[Any, dict[Any, tuple[float, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def cached_env_to_send(host: Any) -> tuple[bytes, bool]:
    now = time.monotonic()
    held = _sent.get(host)
    store = host.get_peerstore()
    if held is not None and now - held[0] < SEND_TTL_S and store.get_local_record() is held[2]:
        return held[1], False
    env, fresh = upstream_env_to_send(host)
    _sent[host] = (now, env, store.get_local_record())
    return env, fresh


def stale_but_genuine(record: bytes, host: Any, peer_id: Any) -> bool:
    """The record is peer_id's, correctly signed, and older than the one we hold."""
    try:
        envelope, rec = consume_envelope(record, "libp2p-peer-record")
    except Exception:
        return False
    if rec.peer_id != peer_id or ID.from_pubkey(envelope.public_key) != peer_id:
        return False
    held = host.get_peerstore().peer_record_map.get(peer_id)
    return held is not None and held.seq > rec.seq


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
        return True
    per_peer.pop(peer_id, None)
    return stale_but_genuine(record, host, peer_id)


class RecordOncePerStream:
    """Serializes the RPCs of one outbound pubsub stream, with our signed record in the
    first one, in the first after it changed, and after RESEND_S; not in the others."""

    def __init__(self) -> None:
        self.sent: bytes = b""  # the record this stream's peer last got from us
        self.sent_at = 0.0
        self.left_out = 0  # RPCs sent without their record (for tests and measurements)

    def serialize(self, rpc: Any) -> bytes:
        record = rpc.senderRecord
        if not record:
            return bytes(rpc.SerializeToString())
        now = time.monotonic()
        if record != self.sent or now - self.sent_at >= RESEND_S:
            self.sent, self.sent_at = record, now
            return bytes(rpc.SerializeToString())
        # the same RPC object may sit in other peers' queues: restore it before any await
        rpc.ClearField("senderRecord")
        try:
            body = bytes(rpc.SerializeToString())
        finally:
            rpc.senderRecord = record
        self.left_out += 1
        return body


def install_sender_record_cache() -> None:
    for mod in MODULES:
        mod.env_to_send_in_RPC = cached_env_to_send  # type: ignore[attr-defined]
        mod.maybe_consume_signed_record = cached_consume  # type: ignore[attr-defined]
