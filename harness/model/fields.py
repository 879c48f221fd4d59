"""The field readers shared by the topology and scenario file parsers: each problem is an
error that names the field and the fix, so both file formats answer bad input alike."""

from __future__ import annotations

import difflib
from typing import Any


def suggest(word: str, allowed: tuple[str, ...], label: str) -> str:
    """`did you mean 'x'? LABEL: a, b, c` (the hint only when a close match exists)."""
    close = difflib.get_close_matches(word, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}{label}: {', '.join(allowed)}"


class FieldReader:
    """Reads one file's fields; `fail` builds the file format's own located error."""

    def fail(self, fieldpath: str, problem: str, fix: str = "") -> Exception:
        raise NotImplementedError

    def mapping(self, value: Any, fieldpath: str, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(fieldpath, f"expected a mapping ({what}), got {value!r}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(fieldpath, f"key {k!r} is not a string", "quote it")
        return value

    def keys(self, value: dict[str, Any], fieldpath: str, allowed: tuple[str, ...]) -> None:
        for k in value:
            if k not in allowed:
                where = f"{fieldpath}.{k}" if fieldpath else k
                raise self.fail(where, "unknown key", suggest(k, allowed, "valid keys"))

    def boolean(self, value: Any, fieldpath: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(fieldpath, f"expected true or false, got {value!r}")
        return value
