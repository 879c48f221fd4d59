"""The fuzz tier: adversarial messages for every protocol the node speaks, sent to a live node.

Hypothesis strategies build, per protocol, inputs an honest peer never sends: random bytes,
a valid length prefix before garbage protobuf, valid protobuf with wrong types, missing
fields, huge fields, wrong peer ids, negative or huge numbers, oversized, truncated and
many frames. Each input is a `Case`: the bytes, and how many rejections the node must count
for them (`expect`), worked out by an oracle written here from the wire specs (not by the
node's code): an input that happens to be a well-formed RESERVE expects 0, a garbage frame
expects 1, a sync stream of three bad requests expects 3.

`run_batch` opens a fresh stream per case on ONE live node (testkit/procs.py), writes the
case, half-closes and reads until the node closes or resets; every `check_every` cases it
compares the node's per-protocol rejected counter (/status "rejected", and the sum of
sentrynet_messages_rejected_total over reasons) with the expected count. Afterwards:
the process is alive, /status answers, a fresh client gets a reservation and (sync) a
normal request is answered.

Where py-libp2p itself reads the input before the node's code (gossipsub RPC framing,
identify push) nothing is counted: those batches check that the node survives and keeps
working (`expect` is 0 and `counted` is False).

Used by tests/node/test_fuzz.py (a bounded count per protocol in `make test`) and
bench/fuzz.py (`python -m bench.fuzz --per-protocol 10000`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import multiaddr
from hypothesis import HealthCheck, Phase, given, settings
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, Reservation, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeer
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.utils.varint import encode_uvarint

# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    payload: bytes
    expect: int  # rejections the node must count for this input
    kind: str  # which generator made it (for reports)


def uvarint(n: int) -> bytes:
    """Unsigned LEB128 (the node's own encoder); a negative n is encoded as its 64-bit
    two's complement (10 bytes)."""
    return encode_uvarint(n & ((1 << 64) - 1))


def frame(body: bytes) -> bytes:
    return uvarint(len(body)) + body


def read_uvarint(data: bytes, pos: int, max_bytes: int) -> tuple[int, int] | None:
    """(value, next pos) of the uvarint at data[pos:], None when incomplete or longer than
    max_bytes bytes."""
    value, shift = 0, 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            return None
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos + i + 1
    return None


# ------------------------------------------------------------- raw protobuf builder

# A protobuf field as (number, wire type, value); the encoder writes whatever it is given,
# wrong wire types and reserved ones (3, 4: groups; 6, 7: invalid) included.
_varints = st.one_of(
    st.integers(0, 5),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**31, 2**32, 2**63, 2**64 - 1, -1]),
)


def pb_field(num: int, wire: int, value: Any) -> bytes:
    key = uvarint((num << 3) | wire)
    if wire == 0:
        return key + uvarint(int(value))
    if wire == 1:
        return key + int(value).to_bytes(8, "little", signed=False)
    if wire == 5:
        return key + int(value).to_bytes(4, "little", signed=False)
    if wire == 2:
        return key + frame(bytes(value))
    return key + bytes(value)  # 3, 4, 6, 7: a wire type no parser accepts here


def _field(nums: list[int], children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    number = st.one_of(st.sampled_from(nums), st.integers(1, 2**29 - 1))
    return st.one_of(
        st.builds(pb_field, number, st.just(0), _varints),
        st.builds(pb_field, number, st.just(1), st.integers(0, 2**64 - 1)),
        st.builds(pb_field, number, st.just(5), st.integers(0, 2**32 - 1)),
        st.builds(pb_field, number, st.just(2), children),
        st.builds(pb_field, number, st.sampled_from([3, 4, 6, 7]), st.binary(max_size=4)),
    )


def raw_protobuf(nums: list[int]) -> st.SearchStrategy[bytes]:
    """Protobuf-shaped garbage: fields numbered like the schema's (and any), every wire
    type, nested messages of garbage, huge and negative varints."""
    nested = st.recursive(
        st.binary(max_size=48),
        lambda inner: st.lists(_field(nums, inner), max_size=4).map(b"".join),
        max_leaves=8,
    )
    return st.lists(_field(nums, nested), max_size=8).map(b"".join)


# ------------------------------------------------------------------ shared framings

MAX_PB = 4096  # hop, stop and DCUtR messages: 4 KiB (spec)
FIXED_SEED = b"sentrynet-fuzz-peer-id-seed-0001"  # a fixed outsider: reproducible cases


def framings(bodies: st.SearchStrategy[bytes], max_size: int) -> st.SearchStrategy[bytes]:
    """The bytes a stream carries, around message bodies: framed as it should be, random,
    truncated, with an oversized or broken length prefix, several frames in a row."""
    return st.one_of(
        bodies.map(frame),
        st.binary(max_size=64),
        st.builds(
            lambda b, cut: frame(b)[: max(0, len(frame(b)) - cut)], bodies, st.integers(1, 9)
        ),
        st.builds(
            lambda n, b: uvarint(n) + b,
            st.integers(max_size + 1, 2**64 - 1),
            st.binary(max_size=16),
        ),
        st.builds(lambda n, b: b"\xff" * n + b, st.integers(9, 16), st.binary(max_size=8)),
        st.builds(lambda n: frame(b"\x00" * n), st.integers(max_size + 1, max_size + 64)),
        st.lists(bodies.map(frame), min_size=2, max_size=6).map(b"".join),
        st.just(b""),
    )


def _peer_ids() -> st.SearchStrategy[bytes]:
    real = ID.from_pubkey(create_new_key_pair(FIXED_SEED).public_key).to_bytes()
    return st.one_of(
        st.binary(max_size=64),
        st.just(real),
        st.builds(lambda cut: real[:cut], st.integers(0, len(real) - 1)),
        st.builds(lambda extra: real + extra, st.binary(min_size=1, max_size=8)),
        st.just(b""),
        st.integers(0, 4096).map(lambda n: b"\x00" * n),
    )


def _addrs() -> st.SearchStrategy[list[bytes]]:
    good = bytes.fromhex("047f000001060fa1")  # /ip4/127.0.0.1/tcp/4001
    return st.lists(st.one_of(st.binary(max_size=24), st.just(good)), max_size=40)


# ------------------------------------------------------------------------- hop


def _hop_msgs() -> st.SearchStrategy[bytes]:
    def build(
        t: int,
        peer: bytes | None,
        addrs: list[bytes],
        status: int | None,
        lim: tuple[int, int] | None,
        resv: bool,
    ) -> bytes:
        m = HopMessage(type=t)  # type: ignore[arg-type]
        if peer is not None:
            m.peer.CopyFrom(PbPeer(id=peer, addrs=addrs))
        if status is not None:
            m.status = status  # type: ignore[assignment]
        if lim is not None:
            m.limit.CopyFrom(Limit(duration=lim[0], data=lim[1]))
        if resv:
            m.reservation.CopyFrom(Reservation(expire=2**64 - 1, addrs=addrs, voucher=b"\x00" * 8))
        return m.SerializeToString()

    return st.builds(
        build,
        st.sampled_from([HopMessage.RESERVE, HopMessage.CONNECT, HopMessage.STATUS]),
        st.one_of(st.none(), _peer_ids()),
        _addrs(),
        st.one_of(st.none(), st.sampled_from([100, 200, 201, 202, 203, 204, 400, 401])),
        st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))),
        st.booleans(),
    )


def _hop_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(_hop_msgs(), raw_protobuf([1, 2, 3, 4, 5]))


def hop_expect(payload: bytes) -> int:
    """1 unless the first frame is a RESERVE, or a CONNECT naming a peer (then it is
    granted or denied, not rejected: NO_RESERVATION is an answer, not bad input)."""
    msg = _first_pb(payload, HopMessage)
    if msg is None or not msg.HasField("type"):
        return 1
    if msg.type == HopMessage.RESERVE:
        return 0
    if msg.type == HopMessage.CONNECT and msg.HasField("peer") and msg.peer.id:
        return 0
    return 1


def _first_pb(payload: bytes, cls: Any) -> Any:
    """The first frame of `payload` parsed as `cls` (proto2: required fields set), or None
    when the frame is incomplete, longer than 4 KiB or not a `cls`."""
    got = read_uvarint(payload, 0, 10)
    if got is None:
        return None
    n, pos = got
    if n > MAX_PB or pos + n > len(payload):
        return None
    msg = cls()
    try:
        msg.ParseFromString(payload[pos : pos + n])
    except Exception:
        return None
    return msg if msg.IsInitialized() else None


# ------------------------------------------------------------------------- stop


def _stop_msgs() -> st.SearchStrategy[bytes]:
    def build(t: int, peer: bytes | None, addrs: list[bytes], status: int | None) -> bytes:
        m = StopMessage(type=t)  # type: ignore[arg-type]
        if peer is not None:
            m.peer.CopyFrom(PbPeer(id=peer, addrs=addrs))
        if status is not None:
            m.status = status  # type: ignore[assignment]
        return m.SerializeToString()

    return st.builds(
        build,
        st.sampled_from([StopMessage.CONNECT, StopMessage.STATUS]),
        st.one_of(st.none(), _peer_ids()),
        _addrs(),
        st.one_of(st.none(), st.sampled_from([100, 200, 400])),
    )


def stop_expect(payload: bytes) -> int:
    """1 unless the first frame is a CONNECT naming a peer (then the node answers OK and
    tries to upgrade the stream, which fails on what follows: not a rejection)."""
    msg = _first_pb(payload, StopMessage)
    if msg is None or not msg.HasField("type") or msg.type != StopMessage.CONNECT:
        return 1
    return 0 if msg.peer.id and _addressable(msg.peer.id) else 1


def _addressable(peer_id: bytes) -> bool:
    """A peer id a multiaddr can carry (/p2p/<id>): its bytes are a multihash."""
    try:
        multiaddr.Multiaddr(f"/p2p/{ID(peer_id)}")
    except Exception:
        return False
    return True


# ------------------------------------------------------------------------ DCUtR


def _holepunch(t: int, addrs: list[bytes]) -> bytes:
    m = HolePunch(type=t)  # type: ignore[arg-type]
    m.ObsAddrs.extend(addrs)
    return m.SerializeToString()


def _dcutr_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(_holepunch, st.sampled_from([HolePunch.CONNECT, HolePunch.SYNC]), _addrs()),
        raw_protobuf([1, 2]),
    )


def dcutr_valid(payload: bytes, expect_type: int) -> bool:
    """The first frame is a HolePunch of `expect_type` with at most 32 ObsAddrs."""
    msg = _first_pb(payload, HolePunch)
    return (
        msg is not None
        and msg.HasField("type")
        and msg.type == expect_type
        and len(msg.ObsAddrs) <= 32
    )


CONNECT_OK = frame(_holepunch(HolePunch.CONNECT, [bytes.fromhex("047f000001060fa1")]))


# ------------------------------------------------------------------------- sync

MAX_SYNC_REQUEST = 4096
MAX_JSON_DEPTH = 8


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.text(max_size=12),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=10,
    )


def _sync_requests() -> st.SearchStrategy[bytes]:
    ints = st.one_of(st.integers(-5, 200), st.sampled_from([0, 2**63 - 1, 2**63, -(2**63)]))
    field_val = st.one_of(ints, st.booleans(), st.text(max_size=4), st.none(), st.just(1.5))
    blocks = st.builds(
        lambda f, t, extra: {"type": "blocks", "from": f, "to": t, **extra},
        field_val,
        field_val,
        st.dictionaries(st.text(max_size=4), _json_values(), max_size=2),
    )
    other = st.builds(
        lambda t, extra: {"type": t, **extra},
        st.one_of(st.sampled_from(["status", "gimme", "", "STATUS"]), _json_values()),
        st.dictionaries(st.text(max_size=4), _json_values(), max_size=3),
    )
    as_text = st.one_of(blocks, other, _json_values()).map(
        lambda v: json.dumps(v, ensure_ascii=False).encode()
    )
    deep = st.integers(7, 200).map(lambda d: ("[" * d + "]" * d).encode())
    deep_obj = st.integers(7, 12).map(
        lambda d: ('{"type":"status","x":' + "[" * d + "]" * d + "}").encode()
    )
    junk = st.one_of(
        st.binary(max_size=64),
        st.just(b'{"type":"status"'),
        st.just(b'{"type":NaN}'),
        st.just(b'{"type":"status","h":1e400}'),
        st.just(b"\xff\xfe{}"),
    )
    return st.one_of(as_text, deep, deep_obj, junk)


def _sync_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        framings(_sync_requests(), MAX_SYNC_REQUEST),
        st.lists(_sync_requests().map(frame), min_size=2, max_size=8).map(b"".join),
        st.builds(lambda n: uvarint(n), st.integers(MAX_SYNC_REQUEST + 1, 2**40)),
    )


def _sync_request_ok(body: bytes) -> bool:
    """Would an honest server answer this request (status / blocks within range)?"""

    def no_float(_: str) -> Any:
        raise ValueError("float")

    try:
        value = json.loads(body.decode("ascii"), parse_float=no_float, parse_constant=no_float)
    except (ValueError, RecursionError):
        return False

    def depth_ok(v: Any, d: int) -> bool:
        if d > MAX_JSON_DEPTH:
            return False
        if isinstance(v, list):
            return all(depth_ok(x, d + 1) for x in v)
        if isinstance(v, dict):
            return all(depth_ok(x, d + 1) for x in v.values())
        return True

    if not depth_ok(value, 0) or not isinstance(value, dict):
        return False
    if value.get("type") == "status":
        return True
    if value.get("type") != "blocks":
        return False
    a, b = value.get("from"), value.get("to")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
        return False
    assert isinstance(a, int) and isinstance(b, int)
    return 1 <= a <= b <= 2**63 - 1 and b - a + 1 <= 64


def sync_expect(payload: bytes) -> int:
    """One rejection per malformed request frame, plus one for a framing error (a varint
    of more than 6 bytes, a frame over 4 KiB, the stream ending inside a frame), which ends
    the stream."""
    pos, count = 0, 0
    while pos < len(payload):
        value, shift, i = 0, 0, pos
        while True:
            if i >= len(payload):
                return count + 1  # ended inside the length prefix
            b = payload[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 35:
                return count + 1
        if value > MAX_SYNC_REQUEST or i + value > len(payload):
            return count + 1
        if not _sync_request_ok(payload[i : i + value]):
            count += 1
        pos = i + value
    return count


# ------------------------------------------------------------ gossipsub / consensus


def _gossip_data() -> st.SearchStrategy[bytes]:
    """Data of a message on the chain topic; none can pass the validator (no validator key
    signs any of it), so each is one consensus rejection."""
    hexs = st.one_of(st.binary(max_size=40).map(bytes.hex), st.text(max_size=8), st.just("AB" * 32))
    ints = st.one_of(st.integers(-(2**70), 2**70), st.just(True), st.none(), st.text(max_size=3))
    outsider = str(ID.from_pubkey(create_new_key_pair(FIXED_SEED).public_key))
    peer = st.one_of(st.just(outsider), st.text(max_size=10), ints)
    vote = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["prevote", "precommit", "x"]),
            "height": ints,
            "round": ints,
            "block": st.one_of(hexs, st.none()),
            "validator": peer,
            "sig": hexs,
        }
    )
    block = st.fixed_dictionaries(
        {"height": ints, "prev": hexs, "proposer": peer, "time_ms": ints, "payload": hexs}
    )
    proposal = st.fixed_dictionaries(
        {
            "height": ints,
            "round": ints,
            "block": st.one_of(block, ints),
            "valid_round": ints,
            "proposer": peer,
            "sig": hexs,
        }
    )
    commit = st.fixed_dictionaries(
        {"height": ints, "round": ints, "block": hexs, "votes": st.lists(vote, max_size=3)}
    )
    objs = st.one_of(
        st.builds(lambda v: {"kind": "vote", "vote": v}, st.one_of(vote, _json_values())),
        st.builds(
            lambda p: {"kind": "proposal", "proposal": p}, st.one_of(proposal, _json_values())
        ),
        st.builds(
            lambda b, c: {"kind": "commit", "block": b, "commit": c},
            st.one_of(block, _json_values()),
            st.one_of(commit, _json_values()),
        ),
        st.builds(
            lambda k, v: {"kind": k, "x": v},
            st.one_of(st.text(max_size=8), _json_values()),
            _json_values(),
        ),
        _json_values(),
    )
    return st.one_of(
        objs.map(lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()),
        st.binary(max_size=128),
        st.integers(4301, 6000).map(lambda n: b'{"kind":"vote","vote":' + b"7" * n + b"}"),
        st.integers(4301, 6000).map(lambda n: b"1" * n),
        st.integers(9, 300).map(lambda d: b"[" * d + b"]" * d),
        st.integers(256 * 1024 + 1, 300 * 1024).map(lambda n: b'{"kind":"' + b"x" * n + b'"}'),
    )


def _rpc_bodies() -> st.SearchStrategy[bytes]:
    # RPC: 1 subscriptions, 2 publish, 3 control, 4 senderRecord (libp2p pubsub rpc.proto)
    return st.one_of(raw_protobuf([1, 2, 3, 4]), st.binary(max_size=64))


# --------------------------------------------------------------------- identify


def _identify_bodies() -> st.SearchStrategy[bytes]:
    # Identify: 1 publicKey, 2 listenAddrs, 3 protocols, 4 observedAddr, 5 protocolVersion,
    # 6 agentVersion, 8 signedPeerRecord
    return st.one_of(raw_protobuf([1, 2, 3, 4, 5, 6, 8]), st.binary(max_size=64))


# ------------------------------------------------------------------- the batches


@dataclass(frozen=True)
class Spec:
    """One protocol batch: which stream protocol carries the cases, which /status rejected
    counter must count them (None: py-libp2p reads them first, nothing is counted)."""

    name: str
    counter: str | None
    strategy: Callable[[], st.SearchStrategy[Case]]


def _cases(
    payloads: st.SearchStrategy[bytes], expect: Callable[[bytes], int], kind: str
) -> st.SearchStrategy[Case]:
    return payloads.map(lambda p: Case(p, expect(p), kind))


def hop_cases() -> st.SearchStrategy[Case]:
    return _cases(framings(_hop_bodies(), MAX_PB), hop_expect, "hop")


def stop_cases() -> st.SearchStrategy[Case]:
    return _cases(
        framings(st.one_of(_stop_msgs(), raw_protobuf([1, 2, 3, 4])), MAX_PB), stop_expect, "stop"
    )


def dcutr_direct_cases() -> st.SearchStrategy[Case]:
    # over a direct connection every input is rejected: malformed, or `not_relayed`
    return _cases(framings(_dcutr_bodies(), MAX_PB), lambda _: 1, "dcutr")


def dcutr_relayed_cases() -> st.SearchStrategy[Case]:
    """Over a relayed circuit: a bad CONNECT, or a good CONNECT and then a bad SYNC (the
    node answers the CONNECT in between); inputs that would start a real hole punch are
    left out (they are not bad input)."""
    payloads = framings(_dcutr_bodies(), MAX_PB)
    first = payloads.filter(lambda p: not dcutr_valid(p, HolePunch.CONNECT)).map(
        lambda p: Case(p, 1, "dcutr-connect")
    )
    second = payloads.filter(lambda p: not dcutr_valid(p, HolePunch.SYNC)).map(
        lambda p: Case(CONNECT_OK + p, 1, "dcutr-sync")
    )
    return st.one_of(first, second)


def sync_cases() -> st.SearchStrategy[Case]:
    return _cases(_sync_payloads(), sync_expect, "sync")


def gossip_cases() -> st.SearchStrategy[Case]:
    return _gossip_data().map(lambda d: Case(d, 1, "gossip"))


def rpc_cases() -> st.SearchStrategy[Case]:
    return _cases(framings(_rpc_bodies(), 1 << 20), lambda _: 0, "rpc")


def identify_cases() -> st.SearchStrategy[Case]:
    return _cases(framings(_identify_bodies(), 1 << 16), lambda _: 0, "identify")


def generate(strategy: st.SearchStrategy[Case], n: int) -> list[Case]:
    """n cases from `strategy`, the same ones on every run (derandomized: reproducible CI)."""
    out: list[Case] = []
    rounds = 0
    while len(out) < n and rounds < 4:
        rounds += 1

        @settings(
            max_examples=n - len(out),
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy, st.just(rounds))
        def collect(case: Case, _round: int) -> None:
            out.append(case)

        collect()
    return out[:n]


@dataclass
class BatchResult:
    protocol: str
    sent: int = 0
    expected_rejections: int = 0
    counted: int = 0  # growth of /status rejected[counter] over the batch
    metric_counted: int = 0  # growth of sum(sentrynet_messages_rejected_total{protocol})
    crashes: int = 0  # node process exited / stopped answering
    stream_errors: int = 0  # the stream could not even be opened or written
    handler_errors: int = 0  # growth of /status handler_errors: a handler raised (a bug)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    node_alive: bool = False
    status_ok: bool = False
    reservation_after: bool | None = None
    sync_after: bool | None = None
    works_after: bool | None = None  # protocol-specific "still works" (gossip delivered, identify)
    duration_s: float = 0.0
    counter: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    # upstream may drop some inputs before our code sees them (gossip: py-libp2p's peer
    # score gate, GossipSub.publish -> scorer.allow_publish, drops what a peer that sent
    # invalid messages publishes next, before the topic validator): counted <= expected
    upstream_drops: bool = False

    def ok(self) -> bool:
        return (
            self.crashes == 0
            and self.handler_errors == 0
            and self.node_alive
            and self.status_ok
            and not self.mismatches
            and (
                self.counter is None
                or self.counted == self.expected_rejections
                or (self.upstream_drops and 0 < self.counted <= self.expected_rejections)
            )
            and (self.counter is None or self.metric_counted == self.counted)
            and self.reservation_after is not False
            and self.sync_after is not False
            and self.works_after is not False
        )

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ok"] = self.ok()
        d["duration_s"] = round(self.duration_s, 2)
        d["mismatches"] = self.mismatches[:20]
        return d


def now() -> float:
    return time.monotonic()
