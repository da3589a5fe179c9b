"""In-process event bus fed from the outbox.

:class:`EventRelay` reads unpublished outbox rows in id order, hands each to every
subscriber, and marks it published. With no broker configured this is the whole event
path; an MQTT publisher (a later part) is one more subscriber that must succeed before a
row is marked. A subscriber that raises leaves the row for the next round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update

from nhi_nac.outbox import SCHEMA_VERSION
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import OutboxEvent

log = structlog.get_logger("nhi_nac.events")

#: Rows published per round.
RELAY_BATCH = 500
#: Seconds between polls when nothing woke the relay.
RELAY_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    at: str
    payload: dict[str, Any]
    schema: int = SCHEMA_VERSION


Subscriber = Callable[[Event], Awaitable[None]]


class EventRelay:
    def __init__(self, db: Database, clock: Callable[[], Any]) -> None:
        self.db = db
        self.clock = clock
        self.subscribers: list[Subscriber] = []
        self.wakeup = asyncio.Event()
        self.published = 0

    def subscribe(self, fn: Subscriber) -> None:
        self.subscribers.append(fn)

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were marked published."""
        async with self.db.read() as s:
            rows = (await s.scalars(
                select(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.id).limit(RELAY_BATCH))).all()
        done: list[int] = []
        for row in rows:
            ev = Event(row.event_id, row.type, row.at.isoformat(), dict(row.payload))
            try:
                for fn in self.subscribers:
                    await fn(ev)
            except Exception:  # noqa: BLE001 - a subscriber failure must not lose the event
                log.warning("event.subscriber_failed", event_id=ev.event_id, exc_info=True)
                break
            done.append(row.id)
        if done:
            async with self.db.transaction() as s:
                await s.execute(update(OutboxEvent).where(OutboxEvent.id.in_(done))
                                .values(published_at=self.clock()))
        self.published += len(done)
        return len(done)

    async def run(self) -> None:
        while True:
            try:
                while await self.publish_pending() == RELAY_BATCH:
                    pass
            except Exception:  # noqa: BLE001 - keep relaying after a database hiccup
                log.warning("event.relay_failed", exc_info=True)
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), RELAY_POLL_SECONDS)
            except TimeoutError:
                pass
