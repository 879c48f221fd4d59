"""Pubsub's validation-result cache as an ordered dict: put and get without a list scan.

Upstream (py-libp2p 0.8.1, `libp2p.pubsub.pubsub.ValidationCache`) keeps its LRU order in
a list: every `put` scans it (`msg_id in self.access_order`) and evicts with `pop(0)`, every
hit and every `_remove` scans it again, and the minute's `clear_expired` calls `_remove` per
expired entry. The cache holds up to 1000 message ids for 300 s, so at 1 block/s (ten
consensus messages a second) it is full after a couple of minutes and each validated
message compares its id with up to a thousand others: 2.9 % of an idle full node's Python
time in `ValidationCache.put` (py-spy `--gil`, the sentry testnet in Docker).

`OrderedValidationCache` keeps the same contract (ttl, max_size, least recently used out
first, expired entries dropped on `get` and by `clear_expired`) on a `collections.
OrderedDict`, where each of those steps is O(1). Installed per Pubsub instance, before it
runs (`install_ordered_validation_cache`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from libp2p.pubsub.pubsub import ValidationCache, ValidationResult


class OrderedValidationCache(ValidationCache):
    """ValidationCache with its recency kept by an OrderedDict (oldest first)."""

    def __init__(self, ttl: int = 300, max_size: int = 1000) -> None:
        super().__init__(ttl, max_size)
        self.cache: OrderedDict[bytes, ValidationResult] = OrderedDict()

    def get(self, msg_id: bytes) -> ValidationResult | None:
        result = self.cache.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.cache[msg_id]
            return None
        self.cache.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        cache = self.cache
        if msg_id in cache:
            cache.move_to_end(msg_id)
        else:
            while len(cache) >= self.max_size and cache:
                cache.popitem(last=False)
        cache[msg_id] = result

    def _remove(self, msg_id: bytes) -> None:
        self.cache.pop(msg_id, None)


def install_ordered_validation_cache(pubsub: Any) -> None:
    """Replace the Pubsub's (still empty) validation cache, same ttl and size."""
    old = pubsub.validation_cache
    if isinstance(old, OrderedValidationCache):
        return
    pubsub.validation_cache = OrderedValidationCache(old.ttl, old.max_size)
