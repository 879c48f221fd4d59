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

from libp2p.peer.id import ID
from multiaddr import Multiaddr

MAX_ENTRIES = 4096  # each map is cleared when it grows past this (peers come and go)


class AddrCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._text: dict[bytes, str] = {}
        self._parsed: dict[str, Multiaddr] = {}
        self._id_text: dict[bytes, str] = {}
        self._ids: dict[str, ID] = {}

    def text(self, addr: Multiaddr) -> str:
        key = addr.to_bytes()
        out = self._text.get(key)
        if out is None:
            if len(self._text) >= self.max_entries:
                self._text.clear()
            out = self._text[key] = str(addr)
        return out

    def parse(self, text: str) -> Multiaddr:
        """Multiaddr(text), raising as it does for a malformed one (never remembered)."""
        out = self._parsed.get(text)
        if out is None:
            if len(self._parsed) >= self.max_entries:
                self._parsed.clear()
            out = self._parsed[text] = Multiaddr(text)
        return out

    def id_text(self, peer: ID) -> str:
        key = peer.to_bytes()
        out = self._id_text.get(key)
        if out is None:
            if len(self._id_text) >= self.max_entries:
                self._id_text.clear()
            out = self._id_text[key] = str(peer)
        return out

    def peer_id(self, text: str) -> ID:
        """ID.from_base58(text), raising as it does for a malformed one."""
        out = self._ids.get(text)
        if out is None:
            if len(self._ids) >= self.max_entries:
                self._ids.clear()
            out = self._ids[text] = ID.from_base58(text)
        return out
