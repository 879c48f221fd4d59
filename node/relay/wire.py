"""Length-delimited protobuf framing for hop/stop with a named reason for every failure.

Circuit relay v2 messages are `uvarint(len) || protobuf`. We read them ourselves (rather
than libp2p's read_delimited_msg) so a bad frame maps to one reason we count in
`sentrynet_messages_rejected_total{protocol,reason}`: truncated, oversized, malformed,
timeout, unexpected.
"""

from __future__ import annotations

from typing import Any, TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.utils.varint import encode_uvarint

M = TypeVar("M", bound=Message)

MAX_MSG = 4096  # spec: hop/stop messages are small; addrs lists fit in 4 KiB
READ_TIMEOUT_S = 10.0


class WireError(Exception):
    """A frame we reject; `reason` is the metrics label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode(msg: Message) -> bytes:
    body = msg.SerializeToString()
    return encode_uvarint(len(body)) + body


async def write_msg(stream: Any, msg: Message) -> None:
    await stream.write(encode(msg))


async def _read_exact(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except StreamEOF:
            chunk = b""
        except (StreamReset, StreamError) as exc:
            raise WireError("truncated", f"stream reset after {len(buf)}/{n} bytes") from exc
        if not chunk:
            raise WireError("truncated", f"stream ended after {len(buf)}/{n} bytes")
        buf += chunk
    return bytes(buf)


async def read_msg(
    stream: Any, cls: type[M], max_size: int = MAX_MSG, timeout: float = READ_TIMEOUT_S
) -> M:
    """Read one delimited message of type `cls` or raise WireError(reason)."""
    with trio.move_on_after(timeout) as scope:
        length = 0
        shift = 0
        for i in range(10):
            b = (await _read_exact(stream, 1))[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if i == 9:
                raise WireError("malformed", "length prefix is not a valid uvarint")
        if length > max_size:
            raise WireError("oversized", f"frame of {length} bytes > {max_size}")
        body = await _read_exact(stream, length)
    if scope.cancelled_caught:
        raise WireError("timeout", f"no complete message within {timeout}s")
    msg = cls()
    try:
        msg.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise WireError("malformed", f"not a {cls.__name__}: {exc}") from exc
    if not msg.IsInitialized():
        raise WireError("malformed", f"{cls.__name__} lacks required fields")
    return msg
