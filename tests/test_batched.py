"""BatchedLookup: concurrent point reads share queries; each caller gets its own answer.

``FakeFetch`` stands in for the database: a dictionary behind an ``await`` (the OCSP test in
tests/pki/test_enroll_service.py runs the real one against both databases).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from nhi_nac.storage.batched import BatchedLookup

TABLE = {f"k{i}": i for i in range(100)}


class FakeFetch:
    """Answers from TABLE and remembers what each query asked; ``gate``, when set, holds
    every query until it is released."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def __call__(self, keys: Sequence[str]) -> Mapping[str, int]:
        self.asked.append(list(keys))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database went away")
        return {k: TABLE[k] for k in keys if k in TABLE}


async def test_callers_of_one_moment_share_one_query() -> None:
    fetch = FakeFetch()
    lookup = BatchedLookup(fetch)
    keys = ["k1", "k2", "k1", "missing", "k3"]
    assert await asyncio.gather(*(lookup.get(k) for k in keys)) == [1, 2, 1, None, 3]
    assert fetch.asked == [["k1", "k2", "missing", "k3"]]  # distinct keys, one query


async def test_keys_asked_during_a_query_go_in_the_next_one() -> None:
    fetch = FakeFetch()
    fetch.gate = asyncio.Event()
    lookup = BatchedLookup(fetch)
    first = [asyncio.ensure_future(lookup.get(k)) for k in ("k1", "k2")]
    await asyncio.sleep(0.01)
    assert fetch.asked == [["k1", "k2"]]  # in flight, held by the gate
    later = [asyncio.ensure_future(lookup.get(k)) for k in ("k3", "k4", "k5")]
    await asyncio.sleep(0.01)
    assert len(fetch.asked) == 1  # one query in flight at a time
    fetch.gate.set()
    assert await asyncio.gather(*first, *later) == [1, 2, 3, 4, 5]
    assert fetch.asked == [["k1", "k2"], ["k3", "k4", "k5"]]


async def test_a_failed_query_fails_its_callers_only() -> None:
    fetch = FakeFetch()
    fetch.gate = asyncio.Event()
    lookup = BatchedLookup(fetch)
    fetch.fail_next = True
    doomed = [asyncio.ensure_future(lookup.get(k)) for k in ("k1", "k2")]
    await asyncio.sleep(0.01)
    fine = asyncio.ensure_future(lookup.get("k7"))
    fetch.gate.set()
    for d in doomed:
        with pytest.raises(RuntimeError, match="database went away"):
            await d
    assert await fine == 7
    assert await lookup.get("k8") == 8  # and the lookup goes on working


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    fetch = FakeFetch()
    fetch.gate = asyncio.Event()
    lookup = BatchedLookup(fetch)
    quitter = asyncio.ensure_future(lookup.get("k1"))
    stayer = asyncio.ensure_future(lookup.get("k1"))
    await asyncio.sleep(0.01)
    quitter.cancel()
    fetch.gate.set()
    assert await stayer == 1
    assert quitter.cancelled()


async def test_a_batch_holds_at_most_max_batch_keys() -> None:
    fetch = FakeFetch()
    lookup = BatchedLookup(fetch, max_batch=4)
    keys = [f"k{i}" for i in range(10)]
    assert await asyncio.gather(*(lookup.get(k) for k in keys)) == list(range(10))
    assert [len(q) for q in fetch.asked] == [4, 4, 2]
