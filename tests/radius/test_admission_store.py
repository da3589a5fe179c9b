"""The admission store against SQLite and PostgreSQL: what a batch of decisions leaves
in the database (rows, live-feed events, last-seen), and when the directory reloads."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from nhi_nac.admission_store import LAST_SEEN_RESOLUTION, InventoryDirectory
from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.radius.decision import AdmissionDecision, AuthMethod, Verdict
from nhi_nac.storage.models import Admission, Identity, OutboxEvent

ACTOR = "test"
PRINTER = IdentityRef(IdentityKind.DEVICE, "printer-1")


def _decision(at: float, verdict: Verdict = Verdict.ACCEPT, **kw: Any) -> AdmissionDecision:
    return AdmissionDecision(
        verdict, AuthMethod.MAB, ("MAC aa:bb:cc:00:00:01 from User-Name",), "sw-1", "192.0.2.1",
        at, failure=None if verdict is Verdict.ACCEPT else "bad_password", identity=PRINTER,
        mac="aa:bb:cc:00:00:01", nas_port="Gi1/0/7",
        vlan=120 if verdict is Verdict.ACCEPT else None, **kw)


async def _directory(inventory: Inventory) -> InventoryDirectory:
    await inventory.add_owner("alice@example.com", "Alice", "net", actor=ACTOR)
    await inventory.add_identity(NewIdentity.build(
        "device", "printer-1", "alice@example.com", macs=["aa:bb:cc:00:00:01"],
        allow_mab=True), actor=ACTOR)
    directory = InventoryDirectory(inventory.db, None, "nhi.example")  # type: ignore[arg-type]
    await directory.start()
    return directory


async def test_batch_writes_rows_one_event_each_and_last_seen_sparingly(
    inventory: Inventory,
) -> None:
    directory = await _directory(inventory)
    t0 = time.time()
    directory.record_admission(_decision(t0))
    directory.record_admission(_decision(t0 + 1))
    directory.record_admission(_decision(t0 + 2, Verdict.REJECT))
    assert await directory.flush() == 3
    directory.record_admission(_decision(t0 + LAST_SEEN_RESOLUTION + 5))
    assert await directory.flush() == 1
    async with inventory.db.read() as s:
        rows = (await s.scalars(select(Admission).order_by(Admission.id))).all()
        events = (await s.scalars(select(OutboxEvent).where(
            OutboxEvent.type.startswith("admission.")).order_by(OutboxEvent.id))).all()
        seen = await s.scalar(select(Identity.last_seen_at).where(Identity.name == "printer-1"))
    assert [(r.decision, r.vlan, r.identity, r.port) for r in rows] == [
        ("accept", 120, "device/printer-1", "Gi1/0/7")] * 2 + [
        ("reject", None, "device/printer-1", "Gi1/0/7"),
        ("accept", 120, "device/printer-1", "Gi1/0/7")]
    assert rows[2].reasons == {"reasons": ["MAC aa:bb:cc:00:00:01 from User-Name"],
                               "failure": "bad_password"}
    # The console's live feed reads one admission.* event per decision.
    assert [e.type for e in events] == ["admission.accepted"] * 2 + [
        "admission.rejected", "admission.accepted"]
    assert events[2].payload["mac"] == "aa:bb:cc:00:00:01"
    assert events[2].payload["failure"] == "bad_password"
    # last_seen_at: written for the first accept and again only after the resolution.
    assert seen is not None
    assert abs(seen.timestamp() - (t0 + LAST_SEEN_RESOLUTION + 5)) < 1
    assert directory.counters["last_seen_updates"] == 2


async def test_reload_only_on_inventory_events(inventory: Inventory) -> None:
    directory = await _directory(inventory)
    directory.record_admission(_decision(time.time()))
    await directory.flush()
    assert await directory.check_for_changes() is False  # only admission events
    assert directory.identity_by_mac("aa:bb:cc:00:00:02") is None
    await inventory.add_identity(NewIdentity.build(
        "device", "printer-2", "alice@example.com", macs=["aa:bb:cc:00:00:02"],
        allow_mab=True), actor=ACTOR)
    assert await directory.check_for_changes() is True
    found = directory.identity_by_mac("aa:bb:cc:00:00:02")
    assert found is not None and str(found.ref) == "device/printer-2"
    assert await directory.check_for_changes() is False
