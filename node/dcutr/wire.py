"""DCUtR wire format: length-prefixed `HolePunch` protobufs, read strictly.

Why our own reader: py-libp2p's `read_dcutr_msg` lets every failure escape as a generic
exception that its handler only logs. We need to know *why* a message was refused
(oversized, truncated, malformed, unexpected type, timeout) so it is rejected, counted in
`sentrynet_messages_rejected_total{protocol="dcutr",reason}` and the node keeps serving.
"""

from __future__ import annotations

from typing import Any

import trio
from google.protobuf.message import DecodeError
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, IOException, MessageTooLarge
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.utils.varint import encode_uvarint, read_varint_prefixed_bytes_limited

PROTOCOL_ID = TProtocol("/libp2p/dcutr")
# Spec (relay/DCUtR.md): implementations SHOULD refuse messages larger than 4 KiB.
MAX_MESSAGE_SIZE = 4 * 1024
# More observed addresses than this is not a NAT report, it is abuse.
MAX_OBS_ADDRS = 32

CONNECT = HolePunch.CONNECT
SYNC = HolePunch.SYNC


class DcutrMessageError(Exception):
    """A DCUtR message we refuse; `reason` is the metrics label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(msg_type: int, obs_addrs: list[bytes] | None = None) -> bytes:
    """One framed message: uvarint length + protobuf."""
    msg = HolePunch()
    msg.type = msg_type  # type: ignore[assignment]
    if obs_addrs:
        msg.ObsAddrs.extend(obs_addrs)
    body = msg.SerializeToString()
    return encode_uvarint(len(body)) + body


def decode(body: bytes, expect: int) -> HolePunch:
    """Parse one message body, raising DcutrMessageError with a reason."""
    msg = HolePunch()
    try:
        msg.ParseFromString(body)
    except (DecodeError, ValueError) as exc:  # proto2: missing required `type` lands here
        raise DcutrMessageError("malformed", f"not a HolePunch protobuf ({exc})") from exc
    if not msg.HasField("type"):
        raise DcutrMessageError("malformed", "HolePunch without type")
    if msg.type != expect:
        raise DcutrMessageError(
            "unexpected_type", f"expected {_type_name(expect)}, got {_type_name(msg.type)}"
        )
    if len(msg.ObsAddrs) > MAX_OBS_ADDRS:
        raise DcutrMessageError(
            "malformed", f"{len(msg.ObsAddrs)} ObsAddrs (at most {MAX_OBS_ADDRS})"
        )
    return msg


async def read_message(stream: Any, expect: int, timeout: float) -> HolePunch:
    """Read one framed message of type `expect` within `timeout` seconds."""
    try:
        with trio.fail_after(timeout):
            body = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_SIZE)
    except trio.TooSlowError as exc:
        raise DcutrMessageError(
            "timeout", f"no {_type_name(expect)} within {timeout:.1f}s"
        ) from exc
    except MessageTooLarge as exc:
        raise DcutrMessageError("oversized", str(exc)) from exc
    except ParseError as exc:
        raise DcutrMessageError("malformed", f"bad length prefix ({exc})") from exc
    except (IncompleteReadError, IOException, EOFError) as exc:
        # StreamEOF/StreamReset are IOExceptions: the peer hung up mid-message.
        raise DcutrMessageError("truncated", f"stream ended early ({exc})") from exc
    return decode(body, expect)


async def write_message(
    stream: Any, msg_type: int, obs_addrs: list[bytes] | None, timeout: float
) -> None:
    with trio.fail_after(timeout):
        await stream.write(encode(msg_type, obs_addrs))


def _type_name(t: int) -> str:
    return {CONNECT: "CONNECT", SYNC: "SYNC"}.get(t, str(t))  # type: ignore[call-overload]
