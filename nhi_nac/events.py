"""In-process event bus fed from the outbox.

:class:`EventRelay` reads unpublished outbox rows in id order, hands each to every
subscriber, and marks it published. With no broker configured this is the whole event
path; an MQTT publisher (a later part) is one more subscriber that must succeed before a
row is marked. A subscriber that raises leaves the row for the next round.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from nhi_nac.outbox import SCHEMA_VERSION
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import OutboxEvent

log = structlog.get_logger("nhi_nac.events")

#: Rows published per round.
RELAY_BATCH = 500
#: Seconds between polls when nothing woke the relay.
RELAY_POLL_SECONDS = 1.0


_PENDING = (select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.type, OutboxEvent.at,
                   OutboxEvent.payload)
            .where(OutboxEvent.published_at.is_(None)).order_by(OutboxEvent.id)
            .limit(RELAY_BATCH))
_NEWEST_PENDING = select(func.max(OutboxEvent.id)).where(OutboxEvent.published_at.is_(None))
_MARK_UPTO = (update(OutboxEvent)
              .where(OutboxEvent.published_at.is_(None), OutboxEvent.id <= bindparam("upto"))
              .values(published_at=bindparam("now")))
_MARK_IDS = (update(OutboxEvent)
             .where(OutboxEvent.id.in_(bindparam("ids", expanding=True)))
             .values(published_at=bindparam("now")))


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    at: str
    payload: dict[str, Any]
    schema: int = SCHEMA_VERSION


Subscriber = Callable[[Event], Awaitable[None]]

#: The outbox event carrying a batch of RADIUS decisions (``payload["admissions"]``, one
#: item per decision, oldest first; written by :mod:`nhi_nac.admission_store`).
ADMISSIONS_EVENT = "admissions.recorded"


def decision_events(ev: Event) -> list[Event]:
    """What a subscriber hands on for one outbox event: the event itself, or for an
    ``admissions.recorded`` batch one ``admission.accepted`` / ``admission.rejected``
    event per decision. A decision's event id is derived from the batch's, so a batch
    published again (after a failure half-way) repeats the same ids: consumers can
    deduplicate by ``event_id``."""
    if ev.type != ADMISSIONS_EVENT:
        return [ev]
    batch = uuid.UUID(ev.event_id)
    return [Event(str(uuid.uuid5(batch, str(i))),
                  "admission.accepted" if item.get("decision") == "accept"
                  else "admission.rejected", str(item.get("at", ev.at)), item, ev.schema)
            for i, item in enumerate(ev.payload.get("admissions", ()))]


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
        """Publish one batch; returns how many rows were marked published.

        With no subscriber (no broker, nothing in-process) there is nobody to hand
        events to: one UPDATE marks the pending rows published. Otherwise the rows are
        read as plain columns (no ORM objects: this runs once per admission batch)."""
        now = self.clock()
        if not self.subscribers:
            def mark_all(conn: Connection) -> int:
                upto = conn.execute(_NEWEST_PENDING).scalar()
                if upto is None:
                    return 0
                return int(conn.execute(_MARK_UPTO, {"upto": upto, "now": now}).rowcount)
            done_n = await self.db.run_write(mark_all)
            self.published += done_n
            return min(done_n, RELAY_BATCH - 1)
        rows = await self.db.run_read(lambda conn: conn.execute(_PENDING).all())
        done: list[int] = []
        for row_id, event_id, etype, at, payload in rows:
            ev = Event(event_id, etype, at.isoformat(), dict(payload))
            try:
                for fn in self.subscribers:
                    await fn(ev)
            except Exception:  # noqa: BLE001 - a subscriber failure must not lose the event
                log.warning("event.subscriber_failed", event_id=ev.event_id, exc_info=True)
                break
            done.append(row_id)
        if done:
            await self.db.run_write(lambda conn: conn.execute(
                _MARK_IDS, {"ids": done, "now": self.clock()}))
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


#: Seconds between polls of ``events tail --follow``.
TAIL_POLL_SECONDS = 0.5


async def tail_events(db: Database, limit: int, follow: bool,
                      emit: Callable[[str], None]) -> None:
    """Print the last ``limit`` events as JSON lines, then (``follow``) new ones as written.

    Reads the outbox directly, so it works from any node sharing the database.
    """
    import json

    async with db.read() as s:
        rows = (await s.scalars(select(OutboxEvent).order_by(OutboxEvent.id.desc())
                                .limit(max(0, limit)))).all()
    last = max((r.id for r in rows), default=0)
    if not rows:
        async with db.read() as s:
            last = int(await s.scalar(select(func.coalesce(func.max(OutboxEvent.id), 0))) or 0)
    while True:
        for row in reversed(rows):
            emit(json.dumps({"event_id": row.event_id, "type": row.type,
                             "at": row.at.isoformat(), "payload": row.payload},
                            sort_keys=True))
        if not follow:
            return
        await asyncio.sleep(TAIL_POLL_SECONDS)
        async with db.read() as s:
            rows = list(reversed((await s.scalars(
                select(OutboxEvent).where(OutboxEvent.id > last).order_by(OutboxEvent.id)
                .limit(RELAY_BATCH))).all()))
        if rows:
            last = rows[0].id
