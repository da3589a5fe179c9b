"""Web console guards, over every route the console registers.

- An unauthenticated request to any /ui/ page (GET or POST) redirects to the login page.
- Every console form refuses a post without the session's CSRF token, a cross-site post
  (foreign Origin or Referer) and a post that names no origin at all; nothing changes.
- An auditor cannot apply or roll back a segment map, or act on an identity, even by
  posting the form directly with a valid CSRF token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from nhi_nac import apitokens
from nhi_nac.api.server import make_app
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.segment_service import SegmentService, starter_map_text
from tests.test_console import _client, _login

_ARGS = {"kind": "workload", "name": "billing", "action": "suspend", "version": "1",
         "id": "1", "framework": "soc2", "fmt": "html"}


@pytest.fixture
async def console(inventory: Inventory) -> AsyncIterator[tuple[str, TestServer, SegmentService]]:
    svc = SegmentService(inventory)
    await svc.apply(starter_map_text(), "starter.yaml", author="t")
    await inventory.add_owner("alice@example.com", "Alice", "netops", actor="t")
    await inventory.add_identity(NewIdentity.build("workload", "billing", "alice@example.com",
                                                   scope={"env": "prod"}), actor="t")
    srv = TestServer(make_app(inventory, segment_service=svc), host="127.0.0.1", port=0)
    await srv.start_server()
    yield f"http://127.0.0.1:{srv.port}", srv, svc
    await srv.close()


def _ui_routes(srv: TestServer, method: str) -> list[str]:
    paths = []
    for route in srv.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if route.method != method or not path.startswith("/ui") or path == "/ui/login":
            continue
        paths.append(path.format(**_ARGS))
    return paths


async def _csrf(http: ClientSession, url: str) -> str:
    html = await (await http.get(url)).text()
    return html.split('name="csrf" value="')[1].split('"')[0]


async def _state(inv: Inventory, svc: SegmentService) -> tuple[object, ...]:
    await svc.refresh()
    return (svc.version, (await inv.verify_audit()).records,
            [(v.ref, v.status) for v in await inv.list_identities()])


async def test_any_ui_request_without_a_session_redirects_to_login(
    console: tuple[str, TestServer, SegmentService]
) -> None:
    server, srv, _ = console
    gets, posts = _ui_routes(srv, "GET"), _ui_routes(srv, "POST")
    assert {"/ui/", "/ui/segments", "/ui/report/soc2.html", "/ui/admissions/stream"} <= set(gets)
    assert "/ui/segments/apply" in posts
    async with ClientSession() as http:
        for method, path in [("GET", p) for p in gets] + [("POST", p) for p in posts]:
            r = await http.request(method, server + path, allow_redirects=False,
                                   headers={"Origin": server})
            assert r.status == 303, (method, path, r.status)
            assert r.headers["Location"].startswith("/ui/login?next="), (method, path)
        # The redirect lands on a login form.
        r = await http.get(server + "/ui/segments")
        assert r.url.path == "/ui/login" and 'name="token"' in await r.text()


async def test_every_ui_form_refuses_csrf_less_and_cross_site_posts(
    console: tuple[str, TestServer, SegmentService], inventory: Inventory
) -> None:
    server, srv, svc = console
    token = await apitokens.create_token(inventory, "ui-admin", "admin", actor="t")
    posts = _ui_routes(srv, "POST")
    good = starter_map_text().replace("vlan: 120", "vlan: 121", 1)
    async with _client(server) as http:
        # The login form itself: no CSRF token, or from another site.
        r = await http.post(server + "/ui/login", data={"token": token},
                            headers={"Origin": server}, allow_redirects=False)
        assert r.status == 403
        login_csrf = await _csrf(http, server + "/ui/login")
        r = await http.post(server + "/ui/login", data={"token": token, "csrf": login_csrf},
                            headers={"Origin": "https://evil.example"}, allow_redirects=False)
        assert r.status == 403
        await _login(http, server, token)
        csrf = await _csrf(http, server + "/ui/segments")
        before = await _state(inventory, svc)
        for path in posts:
            form = {"yaml": good, "comment": "x"}
            attempts = [
                ({}, {"Origin": server}),                                  # no CSRF token
                ({"csrf": "wrong"}, {"Origin": server}),                   # a wrong one
                ({"csrf": csrf}, {"Origin": "https://evil.example"}),      # cross-site
                ({"csrf": csrf}, {"Referer": "https://evil.example/x"}),   # cross-site
                ({"csrf": csrf}, {}),                                      # no origin at all
            ]
            for extra, headers in attempts:
                r = await http.post(server + path, data={**form, **extra}, headers=headers,
                                    allow_redirects=False)
                assert r.status == 403, (path, extra, headers, r.status)
        assert await _state(inventory, svc) == before
        # The same form, from this origin with the token, is accepted.
        r = await http.post(server + "/ui/identities/workload/billing/suspend",
                            data={"csrf": csrf}, headers={"Origin": server},
                            allow_redirects=False)
        assert r.status == 303
        assert [v.status for v in await inventory.list_identities()] == ["suspended"]


async def test_an_auditor_cannot_apply_even_by_posting_the_form(
    console: tuple[str, TestServer, SegmentService], inventory: Inventory
) -> None:
    server, _, svc = console
    token = await apitokens.create_token(inventory, "ui-auditor", "auditor", actor="t")
    good = starter_map_text().replace("vlan: 120", "vlan: 121", 1)
    async with _client(server) as http:
        await _login(http, server, token)
        page = await (await http.get(server + "/ui/segments")).text()
        assert ">Apply<" not in page and "Roll back" not in page
        csrf = await _csrf(http, server + "/ui/segments")
        before = await _state(inventory, svc)
        # Validation and preview are reads: the auditor may look.
        r = await http.post(server + "/ui/segments/preview", data={"csrf": csrf, "yaml": good},
                            headers={"Origin": server})
        html = await r.text()
        assert r.status == 200 and 'id="preview"' in html
        assert "segment printers: vlan 120 -&gt; 121" in html
        assert ">Apply</button>" not in html
        for path, form in (("/ui/segments/apply", {"yaml": good, "comment": "x"}),
                           ("/ui/segments/rollback/1", {}),
                           ("/ui/identities/workload/billing/suspend", {}),
                           ("/ui/identities/workload/billing/retire", {})):
            r = await http.post(server + path, data={"csrf": csrf, **form},
                                headers={"Origin": server}, allow_redirects=False)
            assert r.status == 403, (path, r.status)
        assert await _state(inventory, svc) == before
