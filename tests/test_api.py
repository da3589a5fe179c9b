"""HTTP API over a real loopback socket: auth, roles, problem+json, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nhi_nac import apitokens
from nhi_nac.api.routes import ROUTES
from nhi_nac.api.server import make_app
from nhi_nac.apitokens import Role
from nhi_nac.inventory import Inventory


@pytest.fixture
async def client(inventory: Inventory) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    server = TestServer(make_app(inventory, max_body=65536), host="127.0.0.1", port=0)
    async with TestClient(server) as c:
        yield c


async def _token(inv: Inventory, role: str) -> dict[str, str]:
    token = await apitokens.create_token(inv, f"t-{role}", role, actor="test")
    return {"Authorization": f"Bearer {token}"}


async def test_requests_without_valid_token_are_rejected(client: TestClient) -> None:  # type: ignore[type-arg]
    for headers in ({}, {"Authorization": "Bearer nhi_wrong"}, {"Authorization": "Basic x"}):
        r = await client.get("/api/v1/identities", headers=headers)
        assert r.status == 401
        assert r.content_type == "application/problem+json"
        body = await r.json()
        assert body["status"] == 401 and body["title"] == "Unauthorized"


async def test_admin_flow_and_owner_required(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    admin = await _token(inventory, "admin")
    r = await client.post("/api/v1/identities", headers=admin,
                          json={"kind": "device", "name": "p1"})
    assert r.status == 400 and "owner is required" in (await r.json())["detail"]
    r = await client.post("/api/v1/owners", headers=admin,
                          json={"email": "alice@example.com", "name": "Alice"})
    assert r.status == 201
    r = await client.post("/api/v1/identities", headers=admin, json={
        "kind": "device", "name": "p1", "owner": "alice@example.com",
        "scope": {"zone": "office"}, "macs": ["aabbccddeeff"], "allow_mab": True})
    assert r.status == 201, await r.text()
    r = await client.get("/api/v1/identities/device/p1", headers=admin)
    body = await r.json()
    assert body["macs"] == ["aa:bb:cc:dd:ee:ff"] and body["owner"] == "alice@example.com"
    r = await client.get("/api/v1/identities", headers=admin, params={"scope": "zone=office"})
    assert [i["name"] for i in await r.json()] == ["p1"]
    r = await client.post("/api/v1/identities/device/p1/retire", headers=admin)
    assert (await r.json())["status"] == "retired"
    r = await client.post("/api/v1/identities/device/p1/reactivate", headers=admin)
    assert r.status == 409
    r = await client.get("/api/v1/audit/verify", headers=admin)
    assert (await r.json())["ok"] is True


async def test_auditor_cannot_change_anything(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    auditor = await _token(inventory, "auditor")
    await inventory.add_owner("alice@example.com", "Alice", actor="test")
    changing = [r for r in ROUTES if Role.AUDITOR not in r.roles]
    assert {r.method for r in changing} == {"POST", "PUT", "DELETE", "GET"}
    for route in changing:
        if route.method == "GET":
            continue
        path = route.path.format(version="1", kind="device", name="x", serial="ab",
                                 email="alice@example.com", id="1")
        r = await client.request(route.method, path, headers=auditor, json={})
        assert r.status == 403, (route.method, path, r.status)
    r = await client.get("/api/v1/owners", headers=auditor)
    assert r.status == 200 and len(await r.json()) == 1
    r = await client.get("/api/v1/api-tokens", headers=auditor)
    assert r.status == 403


async def test_revoked_token_stops_working(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    headers = await _token(inventory, "admin")
    assert (await client.get("/api/v1/owners", headers=headers)).status == 200
    await apitokens.revoke_token(inventory, "t-admin", actor="test")
    assert (await client.get("/api/v1/owners", headers=headers)).status == 401


async def test_bounded_body_and_bad_json(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    admin = await _token(inventory, "admin")
    r = await client.post("/api/v1/owners", headers=admin, data=b"{" + b" " * 70000 + b"}",
                          )
    assert r.status == 413 and r.content_type == "application/problem+json"
    r = await client.post("/api/v1/owners", headers=admin, data=b"{nope",
                          )
    assert r.status == 400 and "not JSON" in (await r.json())["detail"]


async def test_import_endpoint_all_or_nothing(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    admin = await _token(inventory, "admin")
    await inventory.add_owner("alice@example.com", "Alice", actor="test")
    csv = "kind,name,owner\ndevice,a,alice@example.com\ndevice,b,nobody@example.com\n"
    r = await client.post("/api/v1/import", headers={**admin, "Content-Type": "text/csv"},
                          data=csv.encode())
    assert r.status == 400 and "line 3: unknown owner" in (await r.json())["detail"]
    assert await inventory.list_identities() == []


async def test_openapi_matches_routes(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {(r.method, r.resource.canonical) for r in client.server.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1/")
              and r.method != "HEAD"}
    served.discard(("GET", "/api/v1/openapi.json"))
    assert documented == served


async def test_health_ready_metrics(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    assert (await client.get("/healthz")).status == 200
    assert (await (await client.get("/readyz")).json())["status"] == "ready"
    await client.get("/api/v1/owners")
    text = await (await client.get("/metrics")).text()
    assert 'nhi_api_requests_total{method="GET",route="/api/v1/owners",status="401"}' in text


async def test_bootstrap_tokens_and_findings_over_api(
    client: TestClient, inventory: Inventory  # type: ignore[type-arg]
) -> None:
    enroller = await _token(inventory, "enroller")
    admin = await _token(inventory, "admin")
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    r = await client.post("/api/v1/bootstrap-tokens", headers=enroller,
                          json={"identity": "workload/api", "ttl": "10m"})
    assert r.status == 400 and "no identity workload/api" in (await r.json())["detail"]
    r = await client.post("/api/v1/identities", headers=enroller, json={})
    assert r.status == 403
    r = await client.post("/api/v1/identities", headers=admin, json={
        "kind": "workload", "name": "api", "owner": "alice@example.com"})
    r = await client.post("/api/v1/bootstrap-tokens", headers=enroller,
                          json={"identity": "workload/api", "ttl": "10m"})
    body = await r.json()
    assert r.status == 201 and body["token"].startswith("nhb_")
    await inventory.offboard_owner("alice@example.com", actor="t")
    r = await client.post("/api/v1/governance/scan", headers=admin)
    assert (await r.json())["opened"] == ["orphaned workload/api"]
    findings = await (await client.get("/api/v1/findings", headers=enroller)).json()
    assert [f["type"] for f in findings] == ["orphaned"]
    r = await client.post(f"/api/v1/findings/{findings[0]['id']}/ack", headers=admin)
    assert (await r.json())["state"] == "acknowledged"


async def test_segments_over_api(client: TestClient, inventory: Inventory) -> None:  # type: ignore[type-arg]
    from nhi_nac.segment_service import starter_map_text

    admin = await _token(inventory, "admin")
    auditor = await _token(inventory, "auditor")
    starter = starter_map_text()
    r = await client.get("/api/v1/segments", headers=auditor)
    assert r.status == 404
    bad = starter.replace("vlan: 120", "vlan: 9999", 1)
    r = await client.post("/api/v1/segments/validate?filename=bad.yaml", headers=auditor,
                          data=bad.encode())
    body = await r.json()
    assert body["ok"] is False
    err = next(p for p in body["problems"] if p["severity"] == "error")
    assert err["file"] == "bad.yaml" and err["line"] > 1 and "9999" in err["message"]
    r = await client.post("/api/v1/segments/apply", headers=admin, data=bad.encode())
    assert r.status == 400
    assert (await r.json())["problems"][0]["line"] > 0
    assert (await client.get("/api/v1/segments", headers=auditor)).status == 404
    r = await client.post("/api/v1/segments/apply", headers=auditor, data=starter.encode())
    assert r.status == 403
    r = await client.post("/api/v1/segments/apply?comment=first", headers=admin,
                          data=starter.encode())
    assert r.status == 201 and (await r.json())["version"] == 1
    r = await client.post("/api/v1/segments/diff", headers=auditor,
                          data=starter.replace("vlan: 120", "vlan: 121", 1).encode())
    assert "map change: ~ segment printers: vlan 120 -> 121" in (await r.json())["summary"]
    r = await client.get("/api/v1/segments", headers=auditor)
    assert (await r.json())["version"] == 1
    r = await client.post("/api/v1/segments/rollback/1", headers=admin)
    assert (await r.json())["version"] == 2
