"""Concurrent point reads answered by one query per batch.

A busy responder asks the database the same small question for many callers at once
(OCSP: "what is the status of serial S?"). Each question on its own costs a pool
checkout and a round trip; on PostgreSQL that is most of an OCSP response's CPU.
:class:`BatchedLookup` answers every key asked for in one event-loop tick with one
query, and while that query runs, collects the keys asked for meanwhile into the
next one: one query in flight, nobody waits for a timer. A lone caller gets its own
query at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Keys per query (an ``IN`` list); more waiting go in the next query.
MAX_LOOKUP_BATCH = 256


class BatchedLookup(Generic[K, V]):
    """``await get(key)``: what ``fetch`` returned for ``key``, or None if it returned
    nothing for it. ``fetch`` gets distinct keys and returns what it found of them; if
    it raises, every caller of that batch gets the error."""

    def __init__(self, fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
                 max_batch: int = MAX_LOOKUP_BATCH) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Queries made (for tests and metrics): fewer than callers under load.
        self.queries = 0

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[:self._max_batch]
            batch = {k: self._waiting.pop(k) for k in keys}
            self.queries += 1
            try:
                found = await self._fetch(keys)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch is told
                for futures in batch.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutdown): nobody is left waiting
                for futures in (*batch.values(), *self._waiting.values()):
                    for f in futures:
                        f.cancel()
                self._waiting.clear()
                raise
            for key, futures in batch.items():
                value = found.get(key)
                for f in futures:
                    if not f.done():  # its caller may have gone (cancelled)
                        f.set_result(value)


__all__ = ["MAX_LOOKUP_BATCH", "BatchedLookup"]
