"""RFC 5080 §2.2.2 duplicate cache."""

from __future__ import annotations

import pytest

from nhi_nac.radius.dedup import DuplicateCache, EntryState

K1 = ("192.0.2.1", 1000, 7, b"a" * 16)
K2 = ("192.0.2.1", 1000, 7, b"b" * 16)  # same id, new authenticator: a new request


def test_states_and_replay() -> None:
    cache = DuplicateCache(max_age=10, max_entries=10)
    assert cache.lookup(K1, 0).state is None
    cache.begin(K1, 0)
    assert cache.lookup(K1, 1).state is EntryState.IN_PROGRESS
    cache.complete(K1, b"reply", 2)
    seen = cache.lookup(K1, 3)
    assert seen.state is EntryState.COMPLETED and seen.reply == b"reply"
    assert cache.lookup(K2, 3).state is None


def test_age_limit_counts_from_creation() -> None:
    cache = DuplicateCache(max_age=10, max_entries=10)
    cache.begin(K1, 0)
    cache.complete(K1, b"r", 9)
    assert cache.lookup(K1, 9.9).state is EntryState.COMPLETED
    assert cache.lookup(K1, 10).state is None  # too old to be a duplicate
    cache.expire(10)  # the shell's periodic expiry forgets it
    assert len(cache) == 0


def test_size_limit_evicts_oldest() -> None:
    cache = DuplicateCache(max_age=100, max_entries=3)
    keys = [("h", 1, i, bytes(16)) for i in range(5)]
    for i, k in enumerate(keys):
        cache.complete(k, b"r%d" % i, i)
    assert len(cache) == 3
    assert cache.lookup(keys[0], 5).state is None
    assert cache.lookup(keys[4], 5).reply == b"r4"


def test_forget() -> None:
    cache = DuplicateCache(max_age=10, max_entries=10)
    cache.begin(K1, 0)
    cache.forget(K1)
    assert cache.lookup(K1, 0).state is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DuplicateCache(0, 1)
