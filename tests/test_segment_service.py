"""Segment maps in service: refuse invalid whole, preview, apply, history, rollback."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.segment_service import SegmentMapRefused, SegmentService, starter_map_text
from nhi_nac.storage.models import RadiusSession, SegmentMapVersion

STARTER = starter_map_text()


async def _versions(inv: Inventory) -> int:
    async with inv.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(SegmentMapVersion)) or 0)


@pytest.fixture
async def svc(inventory: Inventory) -> SegmentService:
    service = SegmentService(inventory)
    await service.apply(STARTER, "starter.yaml", author="t")
    await inventory.add_owner("alice@example.com", "Alice", "netops", actor="t")
    await inventory.add_identity(NewIdentity.build(
        "device", "printer-1", "alice@example.com", scope={"function": "printer"},
        macs=["aabbccddee01"], allow_mab=True), actor="t")
    return service


async def test_invalid_map_is_refused_whole_with_lines(
    svc: SegmentService, inventory: Inventory
) -> None:
    before = svc.lookup("device", {"function": "printer"}, "netops", None)
    bad = STARTER.replace("vlan: 120", "vlan: 0", 1)
    with pytest.raises(SegmentMapRefused) as err:
        await svc.apply(bad, "bad.yaml", author="t")
    problem = next(p for p in err.value.problems if p.is_error)
    assert problem.file == "bad.yaml" and problem.line > 0 and problem.column > 0
    assert "out of range" in problem.message
    assert await _versions(inventory) == 1
    after = svc.lookup("device", {"function": "printer"}, "netops", None)
    assert before is not None and after is not None and after.vlan == before.vlan == 120


async def test_preview_apply_history_and_rollback(
    svc: SegmentService, inventory: Inventory
) -> None:
    now = inventory.clock()
    async with inventory.db.transaction() as s:
        s.add(RadiusSession(nas="sw1", nas_address="192.0.2.1", acct_session_id="s1",
                            identity="device/printer-1", vlan=120, status="active",
                            started_at=now, updated_at=now))
    new = STARTER.replace("vlan: 120", "vlan: 121", 1)
    preview = await svc.preview(new, "new.yaml")
    assert preview.diff is not None
    assert preview.diff.moved == frozenset({"device/printer-1"})
    assert preview.diff.transitions == {(120, 121): 1}
    assert preview.sessions_per_nas == {"sw1": 1}
    assert await _versions(inventory) == 1  # preview changes nothing
    info = await svc.apply(new, "new.yaml", author="alice", comment="renumber printers")
    assert info.version == 2 and info.summary["moved"] == 1 and "+" in info.diff
    hit = svc.lookup("device", {"function": "printer"}, "netops", None)
    assert hit is not None and hit.vlan == 121
    back = await svc.rollback(1, author="alice")
    assert back.version == 3 and back.comment == "rollback to version 1"
    hit = svc.lookup("device", {"function": "printer"}, "netops", None)
    assert hit is not None and hit.vlan == 120
    assert [v.version for v in await svc.history()] == [3, 2, 1]
    assert (await inventory.audit_entries(limit=1))[0].action == "segments.apply"


async def test_other_node_picks_up_new_version(svc: SegmentService, inventory: Inventory) -> None:
    other = SegmentService(inventory)
    assert await other.refresh() is True and other.version == 1
    await svc.apply(STARTER.replace("vlan: 120", "vlan: 122", 1), "x.yaml", author="t")
    assert await other.refresh() is True and other.version == 2
    hit = other.lookup("device", {"function": "printer"}, None, None)
    assert hit is not None and hit.vlan == 122
    assert await other.refresh() is False


async def test_fallback_warning_for_active_identities(svc: SegmentService,
                                                      inventory: Inventory) -> None:
    await inventory.add_identity(NewIdentity.build("rpa_bot", "odd", "alice@example.com"),
                                 actor="t")
    v = await svc.validate(STARTER, "m.yaml")
    assert v.ok
    assert any("rpa_bot/odd" in p.message for p in v.warnings)
