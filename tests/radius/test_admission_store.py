"""The admission store against SQLite and PostgreSQL: what a batch of decisions leaves
in the database (rows, batched live-feed events, last-seen), and when the directory reloads."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import select

from nhi_nac.admission_store import (
    LAST_SEEN_RESOLUTION,
    MAX_ADMISSIONS_PER_EVENT,
    InventoryDirectory,
)
from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.events import ADMISSIONS_EVENT, Event, decision_events
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.radius.decision import AdmissionDecision, AuthMethod, Verdict
from nhi_nac.radius.directory import AccountingRecord, AcctStatus
from nhi_nac.storage.models import Admission, Identity, OutboxEvent, RadiusSession

ACTOR = "test"
PRINTER = IdentityRef(IdentityKind.DEVICE, "printer-1")


def _decision(at: float, verdict: Verdict = Verdict.ACCEPT, **kw: Any) -> AdmissionDecision:
    kw.setdefault("nas_port", "Gi1/0/7")
    return AdmissionDecision(
        verdict, AuthMethod.MAB, ("MAC aa:bb:cc:00:00:01 from User-Name",), "sw-1", "192.0.2.1",
        at, failure=None if verdict is Verdict.ACCEPT else "bad_password", identity=PRINTER,
        mac="aa:bb:cc:00:00:01", vlan=120 if verdict is Verdict.ACCEPT else None, **kw)


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
            OutboxEvent.type == ADMISSIONS_EVENT).order_by(OutboxEvent.id))).all()
        seen = await s.scalar(select(Identity.last_seen_at).where(Identity.name == "printer-1"))
    assert [(r.decision, r.vlan, r.identity, r.port) for r in rows] == [
        ("accept", 120, "device/printer-1", "Gi1/0/7")] * 2 + [
        ("reject", None, "device/printer-1", "Gi1/0/7"),
        ("accept", 120, "device/printer-1", "Gi1/0/7")]
    assert rows[2].reasons == {"reasons": ["MAC aa:bb:cc:00:00:01 from User-Name"],
                               "failure": "bad_password"}
    # One admissions.recorded event per batch; the console's live feed and MQTT show its
    # items one decision each.
    assert [e.type for e in events] == [ADMISSIONS_EVENT] * 2
    shown = [one for e in events for one in decision_events(
        Event(e.event_id, e.type, e.at.isoformat(), e.payload))]
    assert [e.type for e in shown] == ["admission.accepted"] * 2 + [
        "admission.rejected", "admission.accepted"]
    assert shown[2].payload["mac"] == "aa:bb:cc:00:00:01"
    assert shown[2].payload["failure"] == "bad_password"
    assert len({e.event_id for e in shown}) == 4
    # last_seen_at: written for the first accept and again only after the resolution.
    assert seen is not None
    assert abs(seen.timestamp() - (t0 + LAST_SEEN_RESOLUTION + 5)) < 1
    assert directory.counters["last_seen_updates"] == 2


async def test_stored_times_and_payloads_are_each_decisions_own(inventory: Inventory) -> None:
    """Repeated decisions share their serialised text (the SQLite path memoises it):
    each row and event item must still carry its own time, port and outcome, across
    second boundaries and a microsecond that rounds up into the next second."""
    directory = await _directory(inventory)
    base = float(int(time.time()))
    times = [base + 0.25, base + 0.75, base + 1.9999996, base + 2.5, base + 2.5]
    decisions = [_decision(times[0]), _decision(times[1]),
                 _decision(times[2], Verdict.REJECT), _decision(times[3], nas_port="Gi1/0/8"),
                 _decision(times[4])]
    for d in decisions:
        directory.record_admission(d)
    assert await directory.flush() == len(decisions)
    async with inventory.db.read() as s:
        rows = (await s.scalars(select(Admission).order_by(Admission.id))).all()
        events = (await s.scalars(select(OutboxEvent).where(
            OutboxEvent.type == ADMISSIONS_EVENT).order_by(OutboxEvent.id))).all()
    assert len(events) == 1
    items = events[0].payload["admissions"]
    assert len(rows) == len(items) == len(decisions)
    assert events[0].at.replace(tzinfo=dt.UTC) == rows[-1].at.replace(tzinfo=dt.UTC)
    for d, row, item in zip(decisions, rows, items, strict=True):
        stored_at = row.at.replace(tzinfo=dt.UTC).timestamp()
        assert abs(stored_at - d.decided_at) < 1e-6
        assert item == {
            "at": dt.datetime.fromtimestamp(d.decided_at, dt.UTC).isoformat(timespec="seconds"),
            "decision": d.verdict.value, "identity": "device/printer-1", "method": "mab",
            "nas": "sw-1", "port": d.nas_port, "mac": "aa:bb:cc:00:00:01", "vlan": d.vlan,
            "reasons": ["MAC aa:bb:cc:00:00:01 from User-Name"], "failure": d.failure}
        assert row.reasons == {"reasons": list(d.reasons), "failure": d.failure}
        assert (row.port, row.decision) == (d.nas_port, d.verdict.value)


async def test_a_large_batch_is_split_into_bounded_events(inventory: Inventory) -> None:
    directory = await _directory(inventory)
    t0 = time.time()
    n = MAX_ADMISSIONS_PER_EVENT * 2 + 1
    for i in range(n):
        directory.record_admission(_decision(t0 + i * 1e-3))
    assert await directory.flush() == n
    async with inventory.db.read() as s:
        events = (await s.scalars(select(OutboxEvent).where(
            OutboxEvent.type == ADMISSIONS_EVENT).order_by(OutboxEvent.id))).all()
    assert [len(e.payload["admissions"]) for e in events] == [
        MAX_ADMISSIONS_PER_EVENT, MAX_ADMISSIONS_PER_EVENT, 1]
    assert abs(events[-1].at.replace(tzinfo=dt.UTC).timestamp() - (t0 + (n - 1) * 1e-3)) < 1e-5


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


async def test_interim_update_moving_a_session_is_an_event(inventory: Inventory) -> None:
    """Accounting that shows a live session on another VLAN writes session.vlan_changed
    (governance rescans on it: drift is judged at once); the same VLAN again writes
    nothing new."""
    directory = await _directory(inventory)
    t0 = time.time()

    def acct(status: AcctStatus, vlan: int, at: float) -> AccountingRecord:
        return AccountingRecord(status, "sess-1", "sw-1", "192.0.2.1", at,
                                mac="aa:bb:cc:00:00:01", identity=PRINTER, vlan=vlan)

    await directory.record_accounting(acct(AcctStatus.START, 120, t0))
    await directory.record_accounting(acct(AcctStatus.INTERIM, 120, t0 + 1))
    await directory.record_accounting(acct(AcctStatus.INTERIM, 999, t0 + 2))
    await directory.record_accounting(acct(AcctStatus.INTERIM, 999, t0 + 3))
    async with inventory.db.read() as s:
        events = (await s.scalars(select(OutboxEvent).where(
            OutboxEvent.type.startswith("session.")).order_by(OutboxEvent.id))).all()
        vlan = await s.scalar(select(RadiusSession.vlan).where(
            RadiusSession.acct_session_id == "sess-1"))
    assert [e.type for e in events] == ["session.started", "session.vlan_changed"]
    assert {k: events[1].payload[k] for k in ("identity", "from", "to")} == {
        "identity": "device/printer-1", "from": 120, "to": 999}
    assert vlan == 999


async def test_revoked_serials_are_those_the_crl_lists(inventory: Inventory) -> None:
    """A certificate revoked and expired more than KEEP_AFTER_EXPIRY ago leaves the
    in-memory revoked set as it leaves the CRL (RADIUS refuses it as expired first); one
    expired just now, one still valid and one with no recorded expiry stay."""
    import pki
    from nhi_nac.storage.models import Credential

    directory = await _directory(inventory)
    now = dt.datetime.now(dt.UTC)
    expiries = {0xA1: now - pki.KEEP_AFTER_EXPIRY - dt.timedelta(minutes=5),
                0xA2: now - dt.timedelta(minutes=5), 0xA3: now + dt.timedelta(hours=1),
                0xA4: None}
    async with inventory.db.transaction() as s:
        owner_of = await s.scalar(select(Identity.id).where(Identity.name == "printer-1"))
        assert owner_of is not None
        for serial, expires in expiries.items():
            s.add(Credential(identity_id=owner_of, type="certificate", serial=f"{serial:x}",
                             fingerprint=f"{serial:064x}", status="revoked", created_at=now,
                             expires_at=expires, revoked_at=now,
                             revocation_reason="keyCompromise"))
    await directory.reload()
    assert directory.revoked_serials == {0xA2, 0xA3, 0xA4}
    assert not directory.is_revoked(0xA1) and directory.is_revoked(0xA2)
