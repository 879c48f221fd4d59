"""Multiaddrs and peer ids <-> text, remembered: peer exchange turns the same addresses and
ids into text and back many times a second on a busy node.

Why: py-multiaddr builds a multiaddr's text from its bytes on every `str()` (base58 of each
`/p2p/` id included) and parses text afresh on every `Multiaddr(...)`. A py-spy profile of
a client in the 64-node bench put 18 % of its main thread in `Multiaddr.__str__` while
answering peer exchange and 9 % in parsing the answers it received, the same few hundred
addresses each time, and base58 for peer ids another 7 %. Multiaddrs and peer ids are
values (equal bytes, equal address), so bounded maps from bytes to text and from text to
the parsed value give the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from libp2p.peer.id import ID
from multiaddr import Multiaddr

MAX_ENTRIES = 4096  # each map is cleared when it grows past this (peers come and go)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AddrCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._text: dict[bytes, str] = {}
        self._parsed: dict[str, Multiaddr] = {}
        self._id_text: dict[bytes, str] = {}
        self._ids: dict[str, ID] = {}

    def text(self, addr: Multiaddr) -> str:
        return self._remember(self._text, addr.to_bytes(), lambda: str(addr))

    def parse(self, text: str) -> Multiaddr:
        """Multiaddr(text), raising as it does for a malformed one (never remembered)."""
        return self._remember(self._parsed, text, lambda: Multiaddr(text))

    def id_text(self, peer: ID) -> str:
        return self._remember(self._id_text, peer.to_bytes(), lambda: str(peer))

    def peer_id(self, text: str) -> ID:
        """ID.from_base58(text), raising as it does for a malformed one."""
        return self._remember(self._ids, text, lambda: ID.from_base58(text))

    def _remember(self, memo: dict[K, V], key: K, make: Callable[[], V]) -> V:
        out = memo.get(key)
        if out is None:
            value = make()  # raises before anything is stored
            if len(memo) >= self.max_entries:
                memo.clear()
            memo[key] = out = value
        return out
