"""Segment maps over the API: with a map in force, an invalid map is
refused whole with the line and column of each error, and the current map (its version,
its text and the VLAN it gives) stays in force.

(`tests/test_api.py::test_segments_over_api` tries the invalid apply before any map
exists; this tries it on top of one.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nhi_nac import apitokens
from nhi_nac.api.server import make_app
from nhi_nac.inventory import Inventory
from nhi_nac.segment_service import SegmentService, starter_map_text


@pytest.fixture
async def setup(inventory: Inventory) -> AsyncIterator[tuple[TestClient, SegmentService]]:  # type: ignore[type-arg]
    svc = SegmentService(inventory)
    server = TestServer(make_app(inventory, segment_service=svc), host="127.0.0.1", port=0)
    async with TestClient(server) as c:
        yield c, svc


async def test_invalid_map_over_the_api_leaves_the_current_one_in_force(
    setup: tuple[TestClient, SegmentService], inventory: Inventory  # type: ignore[type-arg]
) -> None:
    client, svc = setup
    token = await apitokens.create_token(inventory, "ops", "admin", actor="t")
    admin = {"Authorization": f"Bearer {token}"}
    starter = starter_map_text()
    r = await client.post("/api/v1/segments/apply?comment=first", headers=admin,
                          data=starter.encode())
    assert r.status == 201 and (await r.json())["version"] == 1
    current = await (await client.get("/api/v1/segments", headers=admin)).json()

    lines = starter.splitlines()
    vlan_line = next(i for i, x in enumerate(lines, 1) if "vlan: 120" in x)
    bad = starter.replace("vlan: 120", "vlan: 5000", 1).replace(
        "segment: printers", "segment: printerz", 1)
    bad_lines = bad.splitlines()
    rule_line = next(i for i, x in enumerate(bad_lines, 1) if "segment: printerz" in x)
    r = await client.post("/api/v1/segments/apply?filename=bad.yaml", headers=admin,
                          data=bad.encode())
    assert r.status == 400 and r.content_type == "application/problem+json"
    errors = [p for p in (await r.json())["problems"] if p["severity"] == "error"]
    at = {p["line"]: p for p in errors}
    assert vlan_line in at and "5000" in at[vlan_line]["message"], errors
    assert rule_line in at and "printerz" in at[rule_line]["message"], errors
    assert all(p["column"] > 0 for p in errors)
    col = at[vlan_line]["column"]
    assert bad_lines[vlan_line - 1][col - 1:].startswith("5000"), (bad_lines[vlan_line - 1], col)

    after = await (await client.get("/api/v1/segments", headers=admin)).json()
    assert after["version"] == 1 and after["text"] == current["text"]
    await svc.refresh()
    hit = svc.lookup("device", {"function": "printer"}, None, None)
    assert hit is not None and hit.vlan == 120
    assert [h["version"] for h in await (await client.get("/api/v1/segments/history",
                                                          headers=admin)).json()] == [1]
