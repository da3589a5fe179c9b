"""Bulk import: all or nothing, and a bad row is named."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from nhi_nac.importer import ANALYZE_AFTER_ROWS, ImportRefused, import_identities, parse_import
from nhi_nac.inventory import Inventory

CSV_OK = b"""kind,name,owner,scope,macs,allow_mab
device,cam-1,alice@example.com,zone=lobby function=camera,aa:bb:cc:00:00:01,true
device,cam-2,alice@example.com,zone=lobby,AABB.CC00.0002,true
workload,billing,alice@example.com,env=prod;team=pay,,
"""


async def _load(inv: Inventory, data: bytes, name: str) -> int:
    owners, rows = parse_import(data, name)
    return (await import_identities(inv, owners, rows, actor="test")).created


async def test_csv_import(inventory: Inventory) -> None:
    await inventory.add_owner("alice@example.com", "Alice", actor="test")
    assert await _load(inventory, CSV_OK, "fleet.csv") == 3
    cam = await inventory.find_by_mac("aabb.cc00.0002")
    assert cam is not None and cam.name == "cam-2" and cam.allow_mab
    rows = await inventory.list_identities(scope={"team": "pay"})
    assert [r.name for r in rows] == ["billing"]
    assert (await inventory.verify_audit()).records == 4


@pytest.mark.parametrize("bad_line, reason", [
    (b"device,cam-3,nobody@example.com,,,\n", "line 5: unknown owner nobody@example.com"),
    (b"device,cam-1,alice@example.com,,,\n", "line 5: identity device/cam-1 already exists"),
    (b"device,cam-3,alice@example.com,,aa:bb:cc:00:00:01,\n", "line 5: MAC aa:bb:cc:00:00:01"),
    (b"robot,r2,alice@example.com,,,\n", "line 5: unknown identity kind 'robot'"),
    (b"device,cam-3,alice@example.com,Zone=x,,\n", "line 5: invalid scope key 'Zone'"),
    (b"device,cam-3,,,,\n", "line 5: an owner is required"),
])
async def test_csv_with_one_bad_row_changes_nothing(
    inventory: Inventory, bad_line: bytes, reason: str
) -> None:
    await inventory.add_owner("alice@example.com", "Alice", actor="test")
    with pytest.raises(ImportRefused) as err:
        await _load(inventory, CSV_OK + bad_line, "fleet.csv")
    assert reason in str(err.value)
    assert "nothing was imported" in str(err.value)
    assert await inventory.list_identities() == []
    assert (await inventory.verify_audit()).records == 1


async def test_json_import_with_owners_and_parents(inventory: Inventory) -> None:
    doc = {
        "owners": [{"email": "ops@example.com", "name": "Ops", "team": "platform"}],
        "identities": [
            {"kind": "ai_agent", "name": "planner", "owner": "ops@example.com",
             "scope": {"env": "prod"}},
            {"kind": "ai_agent", "name": "worker-1", "owner": "ops@example.com",
             "parent": "ai_agent/planner"},
        ],
    }
    assert await _load(inventory, json.dumps(doc).encode(), "agents.json") == 2
    worker = (await inventory.list_identities(kind="ai_agent"))[1]
    assert worker.parent == "ai_agent/planner"


async def test_json_bad_row_is_named(inventory: Inventory) -> None:
    doc = [{"kind": "device", "name": "ok", "owner": "a@example.com"},
           {"kind": "device", "name": "bad name", "owner": "a@example.com"}]
    with pytest.raises(ImportRefused, match=r"identities\[1\]: invalid identity name"):
        await _load(inventory, json.dumps(doc).encode(), "x.json")


def test_unknown_file_type_is_refused() -> None:
    with pytest.raises(Exception, match="end in .csv or .json"):
        parse_import(b"", "x.yaml")


async def _planner_row_count(inv: Inventory, table: str) -> float | None:
    """What the query planner believes ``table`` holds (None: no statistics)."""
    async with inv.db.engine.connect() as conn:
        if inv.db.is_sqlite:
            has_stats = (await conn.execute(text(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"))).scalar()
            if not has_stats:
                return None
            stat = (await conn.execute(text(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table})).scalar()
            return None if stat is None else float(stat.split()[0])
        tuples = (await conn.execute(text(
            "SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table})).scalar()
        return None if tuples is None or tuples < 0 else float(tuples)


async def test_a_bulk_import_gives_the_planner_statistics_at_once(inventory: Inventory) -> None:
    """Without them PostgreSQL plans on a freshly loaded table as if it were tiny (each
    enrollment batch then scanned every active identity) until autovacuum, if it runs,
    gets there."""
    await inventory.add_owner("alice@example.com", "Alice", actor="test")
    rows = "".join(f"device,d-{i},alice@example.com,zone=z{i % 7},,\n"
                   for i in range(ANALYZE_AFTER_ROWS))
    await _load(inventory, f"kind,name,owner,scope,macs,allow_mab\n{rows}".encode(), "f.csv")
    assert await _planner_row_count(inventory, "identities") == ANALYZE_AFTER_ROWS
    assert await _planner_row_count(inventory, "identity_labels") == ANALYZE_AFTER_ROWS
