"""Findings open from real state changes and resolve when the cause goes away."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from nhi_nac.config import GovernanceConfig
from nhi_nac.domain import IdentityRef
from nhi_nac.errors import Conflict
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import Credential, DiscoveredDevice, Identity, OutboxEvent, Owner

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inv(database: Database, clock: Clock) -> Inventory:
    return Inventory(database, clock)


@pytest.fixture
def gov(inv: Inventory) -> Governance:
    notify_only = {t: "notify" for t in GovernanceConfig().actions}
    return Governance(inv, GovernanceConfig(rotation_days={"api_key": 90}, unused_days=30,
                                            max_active_credentials=2, actions=notify_only))


async def test_orphaned_opens_on_offboarding_and_resolves_on_reassign(
    inv: Inventory, gov: Governance
) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_owner("bob@example.com", "Bob", actor="t")
    await inv.add_identity(NewIdentity.build("service_account", "etl", "alice@example.com"),
                           actor="t")
    assert (await gov.scan()).opened == ()
    await inv.offboard_owner("alice@example.com", actor="t")
    result = await gov.scan()
    assert result.opened == ("orphaned service_account/etl",)
    finding = (await gov.findings())[0]
    assert finding.severity == "high" and finding.evidence["owner"] == "alice@example.com"
    # Reassigning is how an orphan is fixed: move the identity to an active owner.
    async with inv.db.transaction() as s:
        row = await s.scalar(select(Identity).where(Identity.name == "etl"))
        assert row is not None
        bob = await s.scalar(select(Owner).where(Owner.email == "bob@example.com"))
        assert bob is not None
        row.owner_id = bob.id
    assert (await gov.scan()).resolved == ("orphaned service_account/etl",)
    assert await gov.findings() == []
    async with inv.db.read() as s:
        types = (await s.scalars(select(OutboxEvent.type))).all()
    assert "finding.opened" in types and "finding.resolved" in types


async def test_stale_credential_when_clock_passes_rotation(
    inv: Inventory, gov: Governance, clock: Clock
) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    ref = IdentityRef.parse("api_key/billing")
    await inv.add_identity(NewIdentity.build("api_key", "billing", "alice@example.com"),
                           actor="t")
    await inv.add_credential(ref, type_="api_key", fingerprint="01" * 32, actor="t")
    clock.now = T0 + dt.timedelta(days=89)
    assert "stale_credential api_key/billing" not in (await gov.scan()).opened
    clock.now = T0 + dt.timedelta(days=91)
    result = await gov.scan()
    assert "stale_credential api_key/billing" in result.opened
    f = next(f for f in await gov.findings() if f.type == "stale_credential")
    assert f.evidence["credentials"][0]["age_days"] == 91
    # Rotation: a new credential, the old one retired -> resolved.
    await inv.add_credential(ref, type_="api_key", fingerprint="02" * 32, actor="t")
    async with inv.db.transaction() as s:
        old = await s.scalar(select(Credential).where(Credential.fingerprint == "01" * 32))
        assert old is not None
        old.status = "revoked"
    assert "stale_credential api_key/billing" in (await gov.scan()).resolved


async def test_sprawl_expired_and_unused(inv: Inventory, gov: Governance, clock: Clock) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    ref = IdentityRef.parse("workload/api")
    await inv.add_identity(NewIdentity.build("workload", "api", "alice@example.com"), actor="t")
    for i in range(3):
        await inv.add_credential(ref, type_="certificate", fingerprint=f"{i:02x}" * 32,
                                 expires_at=T0 + dt.timedelta(days=1 + i), actor="t")
    opened = (await gov.scan()).opened
    assert "sprawl workload/api" in opened  # three valid certificates at once
    # The first two expired; the newest, which superseded them, is valid: they are
    # history, not an expired credential, and one valid certificate is no sprawl.
    clock.now = T0 + dt.timedelta(days=2, hours=1)
    result = await gov.scan()
    assert "expired_active workload/api" not in result.opened
    assert "sprawl workload/api" in result.resolved
    # The newest expired too, with nothing after it: that is an expired credential.
    clock.now = T0 + dt.timedelta(days=3, hours=1)
    assert "expired_active workload/api" in (await gov.scan()).opened
    clock.now = T0 + dt.timedelta(days=31)
    assert "unused workload/api" in (await gov.scan()).opened
    # Retiring the identity removes every cause.
    await inv.set_status(ref, "retired", actor="t")
    resolved = (await gov.scan()).resolved
    assert set(resolved) == {"expired_active workload/api", "unused workload/api"}


async def test_a_workload_renewed_daily_raises_no_finding(
        inv: Inventory, gov: Governance, clock: Clock) -> None:
    """Renewal leaves the certificate it replaces active until its notAfter (it is
    still valid): a workload renewed at two thirds of each 24-hour certificate for a
    month is neither expired, stale, sprawling nor due, and its superseded certificates
    are not listed as expiring; one that stops renewing is found once its last
    certificate expires."""
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    ref = IdentityRef.parse("workload/api")
    await inv.add_identity(NewIdentity.build("workload", "api", "alice@example.com"), actor="t")
    for day in range(30):
        clock.now = T0 + dt.timedelta(hours=16 * day)
        await inv.add_credential(ref, type_="certificate", fingerprint=f"{day:02x}" * 32,
                                 expires_at=clock.now + dt.timedelta(hours=24), actor="t")
        result = await gov.scan()
        assert result.opened == (), (day, result.opened)
        due = await gov.due(dt.timedelta(hours=12))
        assert [d.fingerprint for d in due] == [], day  # the newest has 24 h left
    due = await gov.due(dt.timedelta(days=2))
    assert [(d.fingerprint, d.reason) for d in due] == [(f"{29:02x}" * 32, "expiry")]
    clock.now += dt.timedelta(hours=25)  # it stopped renewing
    assert (await gov.scan()).opened == ("expired_active workload/api",)


async def test_unmanaged_mac_and_acknowledge(inv: Inventory, gov: Governance) -> None:
    async with inv.db.transaction() as s:
        s.add(DiscoveredDevice(mac="02:00:00:00:00:09", first_seen=T0, last_seen=T0,
                               nas="sw1", port="Gi1/0/9", count=3))
    assert (await gov.scan()).opened == ("unmanaged mac/02:00:00:00:00:09",)
    f = (await gov.findings())[0]
    acked = await gov.acknowledge(f.id, actor="t")
    assert acked.state == "acknowledged" and acked.acknowledged_by == "t"
    with pytest.raises(Conflict):
        await gov.acknowledge(f.id, actor="t")
    assert (await gov.scan()).opened == ()  # acknowledged stays, is not re-opened
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_identity(NewIdentity.build("device", "cam", "alice@example.com",
                                             macs=["02:00:00:00:00:09"]), actor="t")
    assert (await gov.scan()).resolved == ("unmanaged mac/02:00:00:00:00:09",)


async def test_rotation_due_dates(inv: Inventory, gov: Governance, clock: Clock) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    for name in ("a", "b"):
        await inv.add_identity(NewIdentity.build("api_key", name, "alice@example.com"),
                               actor="t")
    await inv.add_credential(IdentityRef.parse("api_key/a"), type_="api_key",
                             fingerprint="0a" * 32, actor="t")
    await inv.add_credential(IdentityRef.parse("api_key/b"), type_="api_key",
                             fingerprint="0b" * 32, expires_at=T0 + dt.timedelta(days=10),
                             actor="t")
    due = await gov.due(dt.timedelta(days=30))
    assert [(d.identity, d.reason) for d in due] == [("api_key/b", "expiry")]
    due = await gov.due(dt.timedelta(days=100))
    assert [(d.identity, d.due_at) for d in due] == [
        ("api_key/b", T0 + dt.timedelta(days=10)), ("api_key/a", T0 + dt.timedelta(days=90))]


async def test_expired_identity_is_suspended_by_default_policy(
    inv: Inventory, clock: Clock
) -> None:
    gov = Governance(inv, GovernanceConfig())
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_identity(NewIdentity.build("workload", "batch", "alice@example.com",
                                             expires_at=T0 + dt.timedelta(days=1)), actor="t")
    clock.now = T0 + dt.timedelta(days=2)
    assert "expired_active workload/batch" in (await gov.scan()).opened
    view = await inv.get_identity(IdentityRef.parse("workload/batch"))
    assert view.status == "suspended"
    last = (await inv.audit_entries(limit=1))[0]
    assert (last.actor, last.action) == ("governance", "identity.suspended")
    # The cause (an expired identity that is active) is gone: the finding resolves.
    assert "expired_active workload/batch" in (await gov.scan()).resolved


async def test_drift_when_accounting_shows_another_vlan(inv: Inventory) -> None:
    from nhi_nac.segment_service import SegmentService, starter_map_text
    from nhi_nac.storage.models import RadiusSession

    segments = SegmentService(inv)
    await segments.apply(starter_map_text(), "starter.yaml", author="t")
    gov = Governance(inv, GovernanceConfig(actions={t: "notify"
                                                    for t in GovernanceConfig().actions}),
                     segments.vlan_of)
    await inv.add_owner("alice@example.com", "Alice", "facilities", actor="t")
    await inv.add_identity(NewIdentity.build("device", "mfp", "alice@example.com",
                                             scope={"function": "printer"}), actor="t")
    async with inv.db.transaction() as s:
        s.add(RadiusSession(nas="sw1", nas_address="192.0.2.1", acct_session_id="a1",
                            identity="device/mfp", vlan=999, status="active", started_at=T0,
                            updated_at=T0))
    result = await gov.scan()
    assert "drift device/mfp" in result.opened
    f = next(f for f in await gov.findings() if f.type == "drift")
    assert f.evidence["vlan"] == 999 and f.evidence["mapped_vlan"] == 120
    async with inv.db.transaction() as s:
        row = await s.scalar(select(RadiusSession))
        assert row is not None
        row.vlan = 120
    assert "drift device/mfp" in (await gov.scan()).resolved


async def test_one_node_scans_at_a_time(inv: Inventory, gov: Governance) -> None:
    """Several nodes rescan after the same change; on PostgreSQL the service's own scan
    skips while another node's is running, and an operator's scan waits for it, so one
    finding is never opened twice (before, the second node failed on the unique key)."""
    import asyncio

    from sqlalchemy import text

    from nhi_nac.governance import SCAN_LOCK_KEY

    if not inv.db.engine.dialect.name == "postgresql":
        pytest.skip("SQLite has one writer at a time: scans are serialised already")
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_identity(NewIdentity.build("service_account", "etl", "alice@example.com"),
                           actor="t")
    await inv.offboard_owner("alice@example.com", actor="t")
    async with inv.db.engine.connect() as other_node:
        await other_node.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCAN_LOCK_KEY})
        skipped = await gov.scan(wait=False)
        assert skipped.skipped and skipped.opened == ()
        assert await gov.findings() == []
        waiting = asyncio.create_task(gov.scan())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await other_node.commit()  # the other node's scan ends
    assert (await waiting).opened == ("orphaned service_account/etl",)
