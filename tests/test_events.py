"""The outbox relay: events published in order, none lost when a subscriber fails."""

from __future__ import annotations

from sqlalchemy import func, select

from nhi_nac.events import Event, EventRelay
from nhi_nac.inventory import Inventory, NewIdentity, utcnow
from nhi_nac.storage.models import OutboxEvent


async def _unpublished(inv: Inventory) -> int:
    async with inv.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(OutboxEvent)
                                  .where(OutboxEvent.published_at.is_(None))) or 0)


async def test_relay_publishes_in_order_and_marks(inventory: Inventory) -> None:
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    await inventory.add_identity(NewIdentity.build("device", "d", "alice@example.com"), actor="t")
    seen: list[Event] = []

    async def sub(ev: Event) -> None:
        seen.append(ev)

    relay = EventRelay(inventory.db, utcnow)
    relay.subscribe(sub)
    assert await relay.publish_pending() == 2
    assert [e.type for e in seen] == ["owner.added", "identity.created"]
    assert seen[1].payload["identity"] == "device/d" and seen[1].schema == 1
    assert await _unpublished(inventory) == 0
    assert await relay.publish_pending() == 0


async def test_failing_subscriber_loses_nothing(inventory: Inventory) -> None:
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    await inventory.add_owner("bob@example.com", "Bob", actor="t")
    fail = True
    seen: list[str] = []

    async def flaky(ev: Event) -> None:
        if fail and ev.payload["email"] == "bob@example.com":
            raise ConnectionError("broker down")
        seen.append(ev.payload["email"])

    relay = EventRelay(inventory.db, utcnow)
    relay.subscribe(flaky)
    assert await relay.publish_pending() == 1
    assert await _unpublished(inventory) == 1
    fail = False
    assert await relay.publish_pending() == 1
    assert seen == ["alice@example.com", "bob@example.com"]
    assert await _unpublished(inventory) == 0
