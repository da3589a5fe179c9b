"""Foundation: the refusals a user would try by hand.

- No identity without an *active* owner, on the CLI and the API: a departed owner is
  refused like an unknown one, and nothing is written.
- Every route under /api/v1 refuses a request without a valid token (none, malformed,
  unknown, revoked), and an auditor's attempts change nothing at all (audit chain, owners,
  identities, NAS clients, API tokens stay as they were).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nhi_nac import apitokens
from nhi_nac.api.routes import ROUTES
from nhi_nac.api.server import make_app
from nhi_nac.apitokens import Role
from nhi_nac.inventory import Inventory, NewIdentity
from tests.test_cli import env, run  # noqa: F401 - env is a fixture

_PATH_ARGS = {"version": "1", "kind": "device", "name": "cam-1", "serial": "ab",
              "email": "alice@example.com", "id": "1"}


@pytest.fixture
async def client(inventory: Inventory) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    server = TestServer(make_app(inventory, max_body=65536), host="127.0.0.1", port=0)
    async with TestClient(server) as c:
        yield c


def test_cli_refuses_a_departed_owner(env: dict[str, str]) -> None:  # noqa: F811
    run(env, "init")
    run(env, "owner", "add", "alice@example.com", "--name", "Alice")
    run(env, "owner", "offboard", "alice@example.com")
    p = run(env, "identity", "add", "device", "cam-1", "--owner", "alice@example.com",
            ok=False)
    assert p.returncode == 1
    assert len(p.stderr.strip().splitlines()) == 1
    assert "departed" in p.stderr and "alice@example.com" in p.stderr
    assert json.loads(run(env, "--json", "identity", "list").stdout) == []


async def test_api_refuses_unknown_and_departed_owners(
    client: TestClient, inventory: Inventory  # type: ignore[type-arg]
) -> None:
    token = await apitokens.create_token(inventory, "ops", "admin", actor="t")
    admin = {"Authorization": f"Bearer {token}"}
    body = {"kind": "device", "name": "cam-1", "owner": "bob@example.com"}
    r = await client.post("/api/v1/identities", headers=admin, json=body)
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert "unknown owner bob@example.com" in (await r.json())["detail"]

    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    await inventory.offboard_owner("alice@example.com", actor="t")
    r = await client.post("/api/v1/identities", headers=admin,
                          json={**body, "owner": "alice@example.com"})
    assert r.status == 400 and "departed" in (await r.json())["detail"]
    r = await client.post("/api/v1/import", headers=admin,
                          json=[{"kind": "device", "name": "cam-2",
                                 "owner": "alice@example.com"}])
    assert r.status == 400 and "departed" in (await r.json())["detail"]
    assert await inventory.list_identities() == []


async def test_every_api_route_refuses_a_missing_or_invalid_token(
    client: TestClient, inventory: Inventory  # type: ignore[type-arg]
) -> None:
    revoked = await apitokens.create_token(inventory, "old", "admin", actor="t")
    await apitokens.revoke_token(inventory, "old", actor="t")
    bad_headers: tuple[dict[str, str], ...] = (
        {}, {"Authorization": "Bearer"}, {"Authorization": "Basic b3BzOng="},
        {"Authorization": "Bearer nhi_" + "0" * 43}, {"Authorization": f"Bearer {revoked}"})
    assert len(ROUTES) > 30
    for route in ROUTES:
        path = route.path.format(**_PATH_ARGS)
        for headers in bad_headers:
            r = await client.request(route.method, path, headers=headers, json={})
            assert r.status == 401, (route.method, path, headers, r.status)
            assert r.content_type == "application/problem+json"


async def _state(inv: Inventory) -> tuple[object, ...]:
    return ((await inv.verify_audit()).records,
            [(v.ref, v.status, v.owner) for v in await inv.list_identities()],
            [(o.email, o.status) for o in await inv.list_owners()],
            [n.name for n in await inv.list_nas()],
            await apitokens.list_tokens(inv))


async def test_an_auditor_changes_nothing_through_any_route(
    client: TestClient, inventory: Inventory  # type: ignore[type-arg]
) -> None:
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    await inventory.add_identity(NewIdentity.build("device", "cam-1", "alice@example.com"),
                                 actor="t")
    await inventory.add_nas("sw1", "192.0.2.1", "s" * 24, actor="t")
    token = await apitokens.create_token(inventory, "siem", "auditor", actor="t")
    auditor = {"Authorization": f"Bearer {token}"}
    before = await _state(inventory)
    bodies = {"/api/v1/owners": {"email": "eve@example.com", "name": "Eve"},
              "/api/v1/identities": {"kind": "device", "name": "x",
                                     "owner": "alice@example.com"},
              "/api/v1/nas": {"name": "sw2", "address": "192.0.2.2", "secret": "s" * 24},
              "/api/v1/api-tokens": {"name": "mine", "role": "admin"}}
    tried = 0
    for route in ROUTES:
        if Role.AUDITOR in route.roles:
            continue  # reads, and the two read-only previews tried below
        path = route.path.format(**_PATH_ARGS)
        r = await client.request(route.method, path, headers=auditor,
                                 json=bodies.get(route.path, {}))
        assert r.status == 403, (route.method, path, r.status)
        assert r.content_type == "application/problem+json"
        tried += 1
    assert tried >= 20
    starter = (Path(__file__).parent.parent / "segments" / "examples" / "starter.yaml").read_bytes()
    for preview in ("/api/v1/segments/validate", "/api/v1/segments/diff"):
        r = await client.post(preview, headers=auditor, data=starter)
        assert r.status == 200, (preview, r.status, await r.text())
    assert (await client.get("/api/v1/segments", headers=auditor)).status == 404
    assert await _state(inventory) == before
