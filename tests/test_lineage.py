"""Lineage invariants on every path, and cascades from a parent to its descendants."""

from __future__ import annotations

import json

import pytest

from nhi_nac.domain import IdentityRef
from nhi_nac.errors import InvalidInput
from nhi_nac.importer import ImportRefused, import_identities, parse_import
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.lineage import MAX_LINEAGE_DEPTH

OWNER = "ops@example.com"


async def _agents(inv: Inventory) -> None:
    await inv.add_owner(OWNER, "Ops", "platform", actor="t")
    await inv.add_owner("eve@example.com", "Eve", actor="t")
    await inv.add_identity(NewIdentity.build("ai_agent", "planner", OWNER,
                                             scope={"env": "prod", "zone": "app"}), actor="t")


def _child(name: str, parent: str, scope: dict[str, str] | None = None,
           owner: str = OWNER) -> NewIdentity:
    return NewIdentity.build("ai_agent", name, owner, scope=scope or {"env": "prod"},
                             parent=parent)


@pytest.mark.parametrize("child, reason", [
    (_child("w1", "ai_agent/planner", {"env": "prod", "zone": "db"}), "wider than its parent"),
    (_child("w1", "ai_agent/planner", {"env": "prod", "pci": "yes"}), "pci=yes not in"),
    (_child("w1", "ai_agent/planner", owner="eve@example.com"), "owner is inherited"),
])
async def test_escalations_are_refused(inventory: Inventory, child: NewIdentity,
                                       reason: str) -> None:
    await _agents(inventory)
    with pytest.raises(InvalidInput, match=reason):
        await inventory.add_identity(child, actor="t")
    assert [v.name for v in await inventory.list_identities(kind="ai_agent")] == ["planner"]


async def test_depth_limit_and_suspended_parent(inventory: Inventory) -> None:
    await _agents(inventory)
    parent = "ai_agent/planner"
    for level in range(1, MAX_LINEAGE_DEPTH + 1):
        await inventory.add_identity(_child(f"l{level}", parent), actor="t")
        parent = f"ai_agent/l{level}"
    with pytest.raises(InvalidInput, match="depth limit 3"):
        await inventory.add_identity(_child("too-deep", parent), actor="t")
    await inventory.set_status(IdentityRef.parse("ai_agent/l1"), "suspended", actor="t")
    with pytest.raises(InvalidInput, match="is suspended"):
        await inventory.add_identity(_child("x", "ai_agent/l1"), actor="t")


async def test_cascade_suspend_and_retire(inventory: Inventory) -> None:
    await _agents(inventory)
    await inventory.add_identity(_child("a", "ai_agent/planner"), actor="t")
    await inventory.add_identity(_child("b", "ai_agent/a"), actor="t")
    await inventory.add_identity(_child("c", "ai_agent/b"), actor="t")
    await inventory.add_credential(IdentityRef.parse("ai_agent/c"), type_="certificate",
                                   fingerprint="cc" * 32, serial="c0ffee", actor="t")
    await inventory.set_status(IdentityRef.parse("ai_agent/planner"), "retired", actor="t")
    family = await inventory.family(IdentityRef.parse("ai_agent/planner"))
    assert [(d, v.name, v.status) for d, v in family] == [
        (0, "planner", "retired"), (1, "a", "retired"), (2, "b", "retired"),
        (3, "c", "retired")]
    assert family[3][1].credentials[0].status == "revoked"
    entries = [e for e in await inventory.audit_entries(limit=10)
               if e.action == "identity.retired"]
    assert [e.target for e in entries] == ["ai_agent/planner", "ai_agent/a", "ai_agent/b",
                                           "ai_agent/c"]
    assert '"cascade_from":"ai_agent/planner"' in (entries[-1].after or "")


async def test_import_holds_the_same_invariants(inventory: Inventory) -> None:
    await _agents(inventory)
    doc = [{"kind": "ai_agent", "name": "w1", "owner": OWNER, "parent": "ai_agent/planner",
            "scope": {"env": "prod"}},
           {"kind": "ai_agent", "name": "w2", "owner": OWNER, "parent": "ai_agent/w1",
            "scope": {"env": "prod", "zone": "app"}}]
    owners, rows = parse_import(json.dumps(doc).encode(), "agents.json")
    with pytest.raises(ImportRefused, match=r"identities\[1\]: child scope is wider"):
        await import_identities(inventory, owners, rows, actor="t")
    assert [v.name for v in await inventory.list_identities(kind="ai_agent")] == ["planner"]
