"""Inventory invariants, run against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from nhi_nac.domain import IdentityRef
from nhi_nac.errors import Conflict, InvalidInput, NotFound
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.storage.models import AuditRecord, Identity, OutboxEvent

ACTOR = "test"


async def _owner(inv: Inventory, email: str = "alice@example.com", team: str = "net") -> None:
    await inv.add_owner(email, "Alice", team, actor=ACTOR)


async def test_identity_needs_an_active_owner(inventory: Inventory) -> None:
    with pytest.raises(InvalidInput, match="owner is required"):
        NewIdentity.build("device", "printer-1", None)
    with pytest.raises(InvalidInput, match="unknown owner bob@example.com"):
        await inventory.add_identity(NewIdentity.build("device", "p1", "bob@example.com"),
                                     actor=ACTOR)
    await _owner(inventory)
    await inventory.offboard_owner("alice@example.com", actor=ACTOR)
    with pytest.raises(InvalidInput, match="has departed"):
        await inventory.add_identity(NewIdentity.build("device", "p1", "alice@example.com"),
                                     actor=ACTOR)
    assert await inventory.list_identities() == []


async def test_add_show_and_lookup(inventory: Inventory) -> None:
    await _owner(inventory)
    new = NewIdentity.build("device", "printer-3f-01", "Alice@Example.com",
                            scope={"zone": "office", "function": "printer"},
                            macs=["AABB.CCDD.EEFF"], allow_mab=True)
    view = await inventory.add_identity(new, actor=ACTOR)
    assert view.ref == "device/printer-3f-01"
    assert view.owner == "alice@example.com"
    assert view.macs == ("aa:bb:cc:dd:ee:ff",)
    assert view.status == "active"
    found = await inventory.find_by_mac("AA-BB-CC-DD-EE-FF")
    assert found is not None and found.ref == view.ref
    assert await inventory.find_by_mac("aa:bb:cc:dd:ee:00") is None


async def test_unique_name_per_kind_and_unique_mac(inventory: Inventory) -> None:
    await _owner(inventory)
    await inventory.add_identity(NewIdentity.build("device", "x", "alice@example.com",
                                                   macs=["aabbccddeeff"]), actor=ACTOR)
    with pytest.raises(Conflict, match="already exists"):
        await inventory.add_identity(NewIdentity.build("device", "x", "alice@example.com"),
                                     actor=ACTOR)
    # The same name is fine under another kind.
    await inventory.add_identity(NewIdentity.build("workload", "x", "alice@example.com"),
                                 actor=ACTOR)
    with pytest.raises(Conflict, match="MAC aa:bb:cc:dd:ee:ff already belongs to device/x"):
        await inventory.add_identity(NewIdentity.build("device", "y", "alice@example.com",
                                                       macs=["aa-bb-cc-dd-ee-ff"]), actor=ACTOR)
    assert len(await inventory.list_identities()) == 2


async def test_scope_filter_and_kind_filter(inventory: Inventory) -> None:
    await _owner(inventory)
    for name, scope in [("a", {"env": "prod", "team": "pay"}), ("b", {"env": "prod"}),
                        ("c", {"env": "dev", "team": "pay"})]:
        await inventory.add_identity(NewIdentity.build("workload", name, "alice@example.com",
                                                       scope=scope), actor=ACTOR)
    prod = await inventory.list_identities(scope={"env": "prod"})
    assert [v.name for v in prod] == ["a", "b"]
    both = await inventory.list_identities(scope={"env": "prod", "team": "pay"})
    assert [v.name for v in both] == ["a"]
    assert await inventory.list_identities(kind="device") == []


async def test_retired_is_terminal_and_revokes_credentials(inventory: Inventory) -> None:
    await _owner(inventory)
    ref = IdentityRef.parse("workload/api")
    await inventory.add_identity(NewIdentity.build("workload", "api", "alice@example.com"),
                                 actor=ACTOR)
    await inventory.add_credential(ref, type_="certificate", fingerprint="ab" * 32,
                                   serial="1234", actor=ACTOR)
    assert (await inventory.set_status(ref, "suspended", actor=ACTOR)).status == "suspended"
    assert (await inventory.set_status(ref, "active", actor=ACTOR)).status == "active"
    retired = await inventory.set_status(ref, "retired", actor=ACTOR)
    assert retired.retired_at is not None
    assert [c.status for c in retired.credentials] == ["revoked"]
    with pytest.raises(Conflict, match="retirement is final"):
        await inventory.set_status(ref, "active", actor=ACTOR)
    found = await inventory.find_by_fingerprint("AB" * 32)
    assert found is not None and found.status == "retired"


async def test_offboard_reports_orphans_or_reassigns(inventory: Inventory) -> None:
    await _owner(inventory)
    await _owner(inventory, "bob@example.com")
    for name in ("a", "b"):
        await inventory.add_identity(NewIdentity.build("service_account", name,
                                                       "alice@example.com"), actor=ACTOR)
    report = await inventory.offboard_owner("alice@example.com", "bob@example.com", actor=ACTOR)
    assert report.reassigned == ("service_account/a", "service_account/b")
    assert {v.owner for v in await inventory.list_identities()} == {"bob@example.com"}
    report = await inventory.offboard_owner("bob@example.com", actor=ACTOR)
    assert report.orphaned == ("service_account/a", "service_account/b")
    with pytest.raises(Conflict):
        await inventory.offboard_owner("bob@example.com", actor=ACTOR)


async def test_parent_must_exist(inventory: Inventory) -> None:
    await _owner(inventory)
    with pytest.raises(NotFound, match="ai_agent/root"):
        await inventory.add_identity(NewIdentity.build("ai_agent", "child", "alice@example.com",
                                                       parent="ai_agent/root"), actor=ACTOR)
    await inventory.add_identity(NewIdentity.build("ai_agent", "root", "alice@example.com"),
                                 actor=ACTOR)
    child = await inventory.add_identity(NewIdentity.build(
        "ai_agent", "child", "alice@example.com", parent="ai_agent/root"), actor=ACTOR)
    assert child.parent == "ai_agent/root"


async def test_every_change_is_audited_and_has_an_event(inventory: Inventory) -> None:
    await _owner(inventory)
    await inventory.add_identity(NewIdentity.build("device", "d", "alice@example.com"),
                                 actor=ACTOR)
    await inventory.set_status(IdentityRef.parse("device/d"), "suspended", actor=ACTOR)
    entries = await inventory.audit_entries()
    assert [e.action for e in entries] == ["owner.add", "identity.add", "identity.suspended"]
    assert entries[2].before == '{"status":"active"}'
    async with inventory.db.read() as s:
        types = (await s.scalars(select(OutboxEvent.type).order_by(OutboxEvent.id))).all()
    assert types == ["owner.added", "identity.created", "identity.suspended"]
    assert (await inventory.verify_audit()).ok


async def test_refused_change_writes_nothing(inventory: Inventory) -> None:
    await _owner(inventory)
    await inventory.add_identity(NewIdentity.build("device", "d", "alice@example.com",
                                                   macs=["aabbccddeeff"]), actor=ACTOR)
    async with inventory.db.read() as s:
        before = (await s.scalar(select(func.count()).select_from(AuditRecord)),
                  await s.scalar(select(func.count()).select_from(Identity)))
    with pytest.raises(Conflict):
        await inventory.add_identity(NewIdentity.build("device", "e", "alice@example.com",
                                                       macs=["aabbccddeeff"]), actor=ACTOR)
    async with inventory.db.read() as s:
        after = (await s.scalar(select(func.count()).select_from(AuditRecord)),
                 await s.scalar(select(func.count()).select_from(Identity)))
    assert before == after


async def test_audit_verify_names_the_edited_record(inventory: Inventory) -> None:
    await _owner(inventory)
    for name in ("a", "b", "c"):
        await inventory.add_identity(NewIdentity.build("device", name, "alice@example.com"),
                                     actor=ACTOR)
    assert (await inventory.verify_audit()).records == 4
    async with inventory.db.transaction() as s:
        await s.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3"))
    verdict = await inventory.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 3
    assert "edited" in verdict.reason


async def test_audit_verify_detects_removed_and_reordered(inventory: Inventory) -> None:
    await _owner(inventory)
    for name in ("a", "b", "c"):
        await inventory.add_identity(NewIdentity.build("device", name, "alice@example.com"),
                                     actor=ACTOR)
    async with inventory.db.transaction() as s:
        await s.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    verdict = await inventory.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 2 and "missing" in verdict.reason


async def test_audit_verify_detects_truncated_tail(inventory: Inventory) -> None:
    await _owner(inventory)
    await inventory.add_identity(NewIdentity.build("device", "a", "alice@example.com"),
                                 actor=ACTOR)
    async with inventory.db.transaction() as s:
        await s.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    verdict = await inventory.verify_audit()
    assert not verdict.ok and "tail removed" in verdict.reason
