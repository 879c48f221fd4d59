"""node/overrides/validation_cache.py against upstream's ValidationCache: the same contract
(ttl, size bound, least recently used out first), without comparing a message id with every
cached one."""

from __future__ import annotations

import time

import pytest
from libp2p.pubsub.pubsub import Pubsub, ValidationCache, ValidationResult

from node.overrides.validation_cache import (
    OrderedValidationCache,
    install_ordered_validation_cache,
)

compared = [0]


class CountingId(bytes):
    """A message id that counts the equality checks made against it."""

    __hash__ = bytes.__hash__

    def __eq__(self, other: object) -> bool:
        compared[0] += 1
        return bytes.__eq__(self, other)


def ok(at: float | None = None) -> ValidationResult:
    return ValidationResult(True, time.time() if at is None else at)


def comparisons_for_one_put(cache: ValidationCache) -> int:
    for i in range(cache.max_size):
        cache.put(CountingId(b"id-%d" % i), ok())
    compared[0] = 0
    cache.put(CountingId(b"one more"), ok())
    return compared[0]


def test_upstream_put_compares_with_every_cached_id_override_with_none() -> None:
    assert comparisons_for_one_put(ValidationCache(300, 1000)) >= 999
    assert comparisons_for_one_put(OrderedValidationCache(300, 1000)) == 0


@pytest.mark.parametrize("kind", [ValidationCache, OrderedValidationCache])
def test_same_contract_as_upstream(kind: type[ValidationCache]) -> None:
    cache = kind(300, 3)
    for name in (b"a", b"b", b"c"):
        cache.put(name, ok())
    assert cache.get(b"a") is not None  # a is now the most recently used
    cache.put(b"d", ok())  # full: the least recently used (b) goes
    assert cache.get(b"b") is None
    assert all(cache.get(k) is not None for k in (b"a", b"c", b"d"))
    cache.put(b"a", ValidationResult(False, time.time(), "bad"))  # replaced in place
    got = cache.get(b"a")
    assert got is not None and got.is_valid is False and len(cache.cache) == 3
    cache.put(b"old", ok(at=time.time() - 301))  # evicts c, the oldest use
    assert cache.get(b"old") is None  # expired: dropped on get
    assert b"old" not in cache.cache
    cache.put(b"stale", ok(at=time.time() - 400))
    cache.clear_expired()
    assert b"stale" not in cache.cache and cache.get(b"d") is not None


def test_installed_on_a_pubsub_with_its_ttl_and_size() -> None:
    class Bare:  # only the attribute the install reads and replaces
        validation_cache = ValidationCache(120, 50)

    ps = Bare()
    install_ordered_validation_cache(ps)
    assert isinstance(ps.validation_cache, OrderedValidationCache)
    assert (ps.validation_cache.ttl, ps.validation_cache.max_size) == (120, 50)
    first = ps.validation_cache
    install_ordered_validation_cache(ps)  # idempotent
    assert ps.validation_cache is first
    assert "validation_cache" in Pubsub.__annotations__  # the attribute upstream uses
