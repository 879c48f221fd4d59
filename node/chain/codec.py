"""Canonical encoding: the bytes that are hashed, signed and sent.

Canonical JSON (sorted keys, no whitespace, ASCII only, integers and strings only, bytes as
lowercase hex) is deterministic across nodes and readable in a packet capture, and needs no
new dependency. Floats are refused: their text form is not canonical.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 8


class CodecError(ValueError):
    """Input that is not canonical JSON of the expected shape."""


def _check(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise CodecError("nesting too deep")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        raise CodecError("floats are not canonical; use integers")
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CodecError(f"object key {key!r} is not a string")
            _check(item, depth + 1)
        return
    raise CodecError(f"type {type(value).__name__} cannot be encoded")


def encode(value: Any) -> bytes:
    """Canonical bytes of a JSON-able value (dicts, lists, str, int, bool, None)."""
    _check(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def decode(data: bytes) -> Any:
    """Parse bytes produced by `encode` (or any JSON without floats)."""
    try:
        value = json.loads(data.decode("ascii"), parse_float=_no_float)
    except CodecError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError: UnicodeDecodeError and JSONDecodeError, and an integer of more than
        # 4300 digits (Python's int conversion limit), which escaped the gossip validator
        # and took pubsub down (found by the fuzz tier: tests/node/test_fuzz.py)
        raise CodecError(f"not canonical JSON: {exc}") from None
    _check(value)
    return value


def _no_float(text: str) -> Any:
    raise CodecError(f"float {text} is not allowed")


def decode_object(data: bytes) -> dict[str, Any]:
    """Decode and insist on a JSON object at the top level."""
    value = decode(data)
    if not isinstance(value, dict):
        raise CodecError("expected a JSON object")
    return value


def get_int(obj: dict[str, Any], key: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """A required integer field within [lo, hi]; names the field when wrong."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"field {key!r} must be an integer")
    if not lo <= value <= hi:
        raise CodecError(f"field {key!r}={value} out of range [{lo}, {hi}]")
    return value


def get_str(obj: dict[str, Any], key: str, *, max_len: int = 256) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise CodecError(f"field {key!r} must be a string")
    if len(value) > max_len:
        raise CodecError(f"field {key!r} longer than {max_len}")
    return value


def get_hex(
    obj: dict[str, Any], key: str, *, size: int | None = None, max_len: int = 1 << 20
) -> bytes:
    text = get_str(obj, key, max_len=2 * max_len)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise CodecError(f"field {key!r} is not hex") from None
    if text != raw.hex():
        raise CodecError(f"field {key!r} is not lowercase canonical hex")
    if size is not None and len(raw) != size:
        raise CodecError(f"field {key!r} must be {size} bytes, got {len(raw)}")
    return raw
