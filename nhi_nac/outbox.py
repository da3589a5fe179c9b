"""The event outbox: events are rows written in the change's own transaction.

A relay (:class:`nhi_nac.events.EventRelay`) publishes unpublished rows afterwards, so a
crash or a broker outage between the change and the publish loses nothing: the row
stays until it is delivered.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac.storage.models import OutboxEvent

SCHEMA_VERSION = 1


def add_event(
    session: AsyncSession, type_: str, payload: Mapping[str, Any], now: dt.datetime
) -> OutboxEvent:
    row = OutboxEvent(
        event_id=str(uuid.uuid4()), type=type_, at=now, payload=dict(payload), published_at=None
    )
    session.add(row)
    return row
