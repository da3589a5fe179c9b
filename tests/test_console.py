"""Web console: login, pages, actions, CSRF and redirects, in real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from nhi_nac import apitokens
from nhi_nac.admission_store import InventoryDirectory
from nhi_nac.api.server import make_app
from nhi_nac.config import GovernanceConfig
from nhi_nac.domain import IdentityRef
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.radius.decision import AdmissionDecision, AuthMethod, Verdict
from tests.interop import missing, require_tool

ARTIFACTS = Path(os.environ.get("NHI_TEST_ARTIFACTS",
                                Path(__file__).parent.parent / "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _browser() -> tuple[str, Any]:
    """Debian's chromium and Playwright's async API, or skip/fail saying which is missing."""
    chromium = require_tool("chromium", "chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("playwright not installed (pip install playwright)")
    return chromium, async_playwright


@pytest.fixture
async def server(inventory: Inventory) -> AsyncIterator[str]:
    srv = TestServer(make_app(inventory), host="127.0.0.1", port=0)
    await srv.start_server()
    yield f"http://127.0.0.1:{srv.port}"
    await srv.close()


@pytest.fixture
async def seeded(inventory: Inventory) -> dict[str, str]:
    await inventory.add_owner("alice@example.com", "Alice", "netops", actor="t")
    await inventory.add_identity(NewIdentity.build(
        "device", "printer-3f-01", "alice@example.com", scope={"zone": "office"},
        macs=["aabbccddeeff"], allow_mab=True), actor="t")
    await inventory.add_identity(NewIdentity.build("workload", "billing", "alice@example.com",
                                                   scope={"env": "prod"}), actor="t")
    return {role: await apitokens.create_token(inventory, f"ui-{role}", role, actor="t")
            for role in ("admin", "auditor")}


async def test_unauthenticated_pages_redirect_to_login(server: str) -> None:
    async with _client(server) as http:
        for path in ("/ui/", "/ui/identities", "/ui/findings", "/ui/admissions", "/ui/report",
                     "/ui/identities/device/x"):
            r = await http.get(server + path, allow_redirects=False)
            assert r.status == 303, path
            assert r.headers["Location"].startswith("/ui/login?next=")


def _client(server: str) -> ClientSession:
    """A client that, like a browser, treats the loopback origin as secure for cookies."""
    return ClientSession(cookie_jar=CookieJar(unsafe=True, treat_as_secure_origin=server))


async def _login(http: ClientSession, server: str, token: str) -> None:
    page = await http.get(server + "/ui/login")
    html = await page.text()
    csrf = html.split('name="csrf" value="')[1].split('"')[0]
    r = await http.post(server + "/ui/login", data={"csrf": csrf, "token": token,
                                                    "next": "/ui/"},
                        headers={"Origin": server}, allow_redirects=False)
    assert r.status == 303


async def test_csrf_less_and_cross_site_posts_are_refused(
    server: str, seeded: dict[str, str], inventory: Inventory
) -> None:
    async with _client(server) as http:
        await _login(http, server, seeded["admin"])
        url = server + "/ui/identities/workload/billing/suspend"
        r = await http.post(url, data={}, headers={"Origin": server}, allow_redirects=False)
        assert r.status == 403
        page = await (await http.get(server + "/ui/identities/workload/billing")).text()
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        r = await http.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"},
                            allow_redirects=False)
        assert r.status == 403
        assert (await inventory.list_identities(status="suspended")) == []
        r = await http.post(url, data={"csrf": csrf}, headers={"Origin": server},
                            allow_redirects=False)
        assert r.status == 303
        assert [v.name for v in await inventory.list_identities(status="suspended")] == [
            "billing"]


async def test_login_rejects_bad_token_and_sets_safe_cookie(
    server: str, seeded: dict[str, str]
) -> None:
    async with _client(server) as http:
        page = await http.get(server + "/ui/login")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        html = await page.text()
        csrf = html.split('name="csrf" value="')[1].split('"')[0]
        r = await http.post(server + "/ui/login", data={"csrf": csrf, "token": "nhi_bad"},
                            headers={"Origin": server}, allow_redirects=False)
        assert r.status == 401 and "Invalid or revoked" in await r.text()
        r = await http.get(server + "/ui/login")
        html = await r.text()
        csrf = html.split('name="csrf" value="')[1].split('"')[0]
        r = await http.post(server + "/ui/login", data={"csrf": csrf, "token": seeded["admin"]},
                            headers={"Origin": server}, allow_redirects=False)
        cookie = r.headers.getall("Set-Cookie")
        session = next(c for c in cookie if c.startswith("nhi_session="))
        for attr in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"):
            assert attr in session


async def test_browser_flow_with_screenshots(
    server: str, seeded: dict[str, str], inventory: Inventory
) -> None:
    chromium, async_playwright = _browser()
    ARTIFACTS.mkdir(exist_ok=True)
    backend = inventory.db.engine.dialect.name
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(server + "/ui/identities")
        assert "/ui/login" in page.url
        await page.get_by_label("API token").fill(seeded["admin"])
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url("**/ui/identities")
        await page.screenshot(path=str(ARTIFACTS / f"ui-inventory-{backend}.png"), full_page=True)
        await page.get_by_label("Scope label").fill("zone=office")
        await page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        assert await rows.count() == 1
        await page.get_by_role("link", name="device/printer-3f-01").click()
        page.on("dialog", lambda d: d.accept())
        await page.get_by_role("button", name="Suspend").click()
        await page.wait_for_selector("text=is now suspended")
        await page.get_by_role("button", name="Quarantine").click()
        await page.wait_for_selector("text=quarantined: device/printer-3f-01")
        assert await page.locator("dd strong", has_text="quarantined").count() == 1
        await page.screenshot(path=str(ARTIFACTS / f"ui-identity-{backend}.png"), full_page=True)
        await page.get_by_role("button", name="Release from quarantine").click()
        await page.wait_for_selector("text=released: device/printer-3f-01")
        assert (await inventory.quarantine_state(
            IdentityRef.parse("device/printer-3f-01")))[0] is None
        await inventory.offboard_owner("alice@example.com", actor="t")
        await page.goto(server + "/ui/findings")
        await Governance(inventory, GovernanceConfig()).scan()
        await page.reload()
        await page.get_by_role("button", name="Acknowledge").first.click()
        await page.wait_for_selector("text=finding acknowledged")
        await page.screenshot(path=str(ARTIFACTS / f"ui-findings-{backend}.png"), full_page=True)
        for name in ("admissions", "report", ""):
            await page.goto(f"{server}/ui/{name}")
            await page.screenshot(path=str(ARTIFACTS / f"ui-{name or 'overview'}-{backend}.png"),
                                  full_page=True)
        # An auditor sees no action buttons and cannot change anything.
        ctx = await browser.new_context()
        aud = await ctx.new_page()
        await aud.goto(server + "/ui/login")
        await aud.get_by_label("API token").fill(seeded["auditor"])
        await aud.get_by_role("button", name="Log in").click()
        await aud.goto(server + "/ui/identities/workload/billing")
        assert await aud.get_by_role("button", name="Suspend").count() == 0
        await browser.close()


async def test_segment_editor_in_browser(
    seeded: dict[str, str], inventory: Inventory, tmp_path: Path
) -> None:
    """Edit with an error, see it at its line, fix, preview, apply: radclient sees the VLAN."""
    import dataclasses
    import subprocess

    from nhi_nac.config import Config, RadiusConfig
    from nhi_nac.radius.server import Service as RadiusPort
    from nhi_nac.radius_service import RadiusNode
    from nhi_nac.segment_service import SegmentService, starter_map_text

    chromium, async_playwright = _browser()
    radclient = require_tool("radclient", "freeradius-utils")
    svc = SegmentService(inventory)
    await svc.apply(starter_map_text(), "starter.yaml", author="t")
    await inventory.add_identity(NewIdentity.build(
        "device", "mfp-2", "alice@example.com", scope={"function": "printer"},
        macs=["02:00:00:00:00:42"], allow_mab=True), actor="t")
    secret = "console-test-shared-secret"
    await inventory.add_nas("sw-ui", "127.0.0.1", secret, actor="t")
    config = dataclasses.replace(Config(), data_dir=str(tmp_path / "data"),
                                 radius=RadiusConfig(listen=("127.0.0.1",), auth_port=0,
                                                     acct_port=0))
    radius = RadiusNode(config, inventory.db, svc)
    await radius.start()
    srv = TestServer(make_app(inventory, segment_service=svc), host="127.0.0.1", port=0)
    await srv.start_server()
    server = f"http://127.0.0.1:{srv.port}"

    def mab_vlan() -> str:
        p = subprocess.run([radclient, "-x", "-r", "1", "-t", "2",
                            f"127.0.0.1:{radius.shell.port(RadiusPort.AUTH)}", "auth", secret],
                           input='User-Name = "020000000042", User-Password = "020000000042", '
                                 'Message-Authenticator = 0x00',
                           capture_output=True, text=True, timeout=30)
        line = next(x for x in p.stdout.splitlines() if "Tunnel-Private-Group-Id" in x)
        return line.split("=", 1)[1].strip().strip('"')

    backend = inventory.db.engine.dialect.name
    text = starter_map_text()
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if "vlan: 120" in line)
    try:
        assert await asyncio.to_thread(mab_vlan) == "120"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            page.on("dialog", lambda d: d.accept())
            await page.goto(server + "/ui/segments")
            await page.get_by_label("API token").fill(seeded["admin"])
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_url("**/ui/segments")
            editor = page.get_by_label("Segment map (YAML)")
            await editor.fill(text.replace("vlan: 120", "vlan: 5000", 1))
            problem = page.locator(f"#problems li[data-line='{bad_line}']")
            await problem.wait_for()
            assert "VLAN 5000" in await problem.inner_text()
            # Pinned to its line: marked in the gutter beside it, and its link puts the
            # caret on that line of the editor.
            gutter = page.locator(f"#map-gutter span[data-line='{bad_line}']")
            assert await gutter.get_attribute("class") == "mark-error"
            assert await page.locator("#map-gutter span.mark-error").count() == 1
            await problem.get_by_role("link").click()
            caret_line = await editor.evaluate(
                "e => e.value.slice(0, e.selectionStart).split('\\n').length")
            assert caret_line == bad_line
            assert await editor.evaluate("e => document.activeElement === e")
            await page.screenshot(path=str(ARTIFACTS / f"ui-segments-error-{backend}.png"),
                                  full_page=True)
            await editor.fill(text.replace("vlan: 120", "vlan: 121", 1))
            await problem.wait_for(state="detached")
            assert await page.locator("#problems li.problem-error").count() == 0
            await page.get_by_role("button", name="Preview changes").click()
            await page.wait_for_load_state()
            await page.locator("#preview", has_text="VLAN 120 -> VLAN 121: 1").wait_for()
            await page.screenshot(path=str(ARTIFACTS / f"ui-segments-preview-{backend}.png"),
                                  full_page=True)
            await page.get_by_label("Comment").fill("renumber printers")
            await page.get_by_role("button", name="Apply").click()
            await page.wait_for_selector("text=version 2 applied")
            await page.screenshot(path=str(ARTIFACTS / f"ui-segments-applied-{backend}.png"),
                                  full_page=True)
            # The auditor sees the map but has no Apply and no Roll back.
            ctx = await browser.new_context()
            aud = await ctx.new_page()
            await aud.goto(server + "/ui/login?next=/ui/segments")
            await aud.get_by_label("API token").fill(seeded["auditor"])
            await aud.get_by_role("button", name="Log in").click()
            await aud.wait_for_url("**/ui/segments")
            await aud.get_by_role("button", name="Preview changes").click()
            assert await aud.get_by_role("button", name="Apply").count() == 0
            assert await aud.get_by_role("button", name="Roll back").count() == 0
            await browser.close()
        # The running RADIUS server took the new map: the next MAB request gets VLAN 121.
        assert await asyncio.to_thread(mab_vlan) == "121"
    finally:
        await srv.close()
        await radius.close()
    assert (await svc.history())[0].version == 2


async def test_live_admissions_stream_one_event_per_decision(
    server: str, seeded: dict[str, str], inventory: Inventory
) -> None:
    """The live feed (server-sent events) shows each decision of a written batch."""
    directory = InventoryDirectory(inventory.db, None, "nhi.example")  # type: ignore[arg-type]
    await directory.start()
    async with _client(server) as http:
        await _login(http, server, seeded["auditor"])
        resp = await http.get(server + "/ui/admissions/stream")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await resp.content.readuntil(b"\n\n")  # the stream is open: the first keep-alive
        now = time.time()
        for i, verdict in enumerate((Verdict.ACCEPT, Verdict.REJECT)):
            directory.record_admission(AdmissionDecision(
                verdict, AuthMethod.MAB, ("MAC aa:bb:cc:dd:ee:ff from User-Name",), "sw-1",
                "192.0.2.1", now + i, identity=IdentityRef.parse("device/printer-3f-01"),
                failure=None if verdict is Verdict.ACCEPT else "bad_password",
                mac="aa:bb:cc:dd:ee:ff", nas_port="Gi1/0/7",
                vlan=120 if verdict is Verdict.ACCEPT else None))
        await directory.flush()
        shown: list[dict[str, object]] = []

        async def read() -> None:
            while len(shown) < 2:
                chunk = await resp.content.readuntil(b"\n\n")
                if chunk.startswith(b"event: admission\n"):
                    shown.append(json.loads(chunk.split(b"data: ", 1)[1]))
        await asyncio.wait_for(read(), 10)
        resp.close()
    assert [(a["decision"], a["identity"], a["vlan"]) for a in shown] == [
        ("accept", "device/printer-3f-01", 120), ("reject", "device/printer-3f-01", None)]


async def test_admin_revokes_certificates_from_the_identity_page(
    seeded: dict[str, str], inventory: Inventory, tmp_path: Path
) -> None:
    import datetime as dt
    import subprocess

    import pki
    from nhi_nac.bootstrap_tokens import create_bootstrap_token
    from nhi_nac.ca_service import CaService
    from nhi_nac.config import Config

    chromium, async_playwright = _browser()
    openssl = require_tool("openssl", "openssl")
    (tmp_path / "data").mkdir()
    ca = CaService(inventory, Config(data_dir=str(tmp_path / "data")))
    ca.init_hierarchy(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    token, _ = await create_bootstrap_token(inventory, IdentityRef.parse("workload/billing"),
                                            actor="t")
    bundle = await ca.enroll(token, pki.new_enrollment("p256").csr_pem)
    srv = TestServer(make_app(inventory, ca=ca), host="127.0.0.1", port=0)
    await srv.start_server()
    server = f"http://127.0.0.1:{srv.port}"
    backend = inventory.db.engine.dialect.name
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            # An auditor sees the certificate but no way to revoke it.
            aud = await browser.new_page()
            await aud.goto(server + "/ui/login")
            await aud.get_by_label("API token").fill(seeded["auditor"])
            await aud.get_by_role("button", name="Log in").click()
            await aud.goto(server + "/ui/identities/workload/billing")
            assert await aud.get_by_text(bundle.serial).count() == 1
            assert await aud.get_by_role("button", name="Revoke certificates").count() == 0
            page = await (await browser.new_context()).new_page()
            await page.goto(server + "/ui/login")
            await page.get_by_label("API token").fill(seeded["admin"])
            await page.get_by_role("button", name="Log in").click()
            await page.goto(server + "/ui/identities/workload/billing")
            page.on("dialog", lambda d: d.accept())
            # On hold, then taken off hold (the auditor sees the hold, not the button).
            assert await page.get_by_role("button", name="Release held certificates") \
                .count() == 0
            await page.get_by_label("reason (RFC 5280)").select_option("certificateHold")
            await page.get_by_role("button", name="Revoke certificates").click()
            await page.wait_for_selector(f"text=revoked 1 certificate(s): {bundle.serial}")
            await aud.reload()
            assert await aud.get_by_text("revoked (certificateHold)").count() == 1
            assert await aud.get_by_role("button", name="Release held certificates") \
                .count() == 0
            await page.get_by_role("button", name="Release held certificates").click()
            await page.wait_for_selector(f"text=released 1 certificate(s): {bundle.serial}")
            assert (await ca.serial_status(int(bundle.serial, 16))).status \
                is pki.CertStatus.GOOD
            assert await page.get_by_role("button", name="Release held certificates") \
                .count() == 0
            await page.get_by_label("reason (RFC 5280)").select_option("keyCompromise")
            await page.get_by_role("button", name="Revoke certificates").click()
            await page.wait_for_selector(f"text=revoked 1 certificate(s): {bundle.serial}")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"ui-revoked-{backend}.png"),
                                  full_page=True)
            # Nothing left to revoke: the form is gone.
            assert await page.get_by_role("button", name="Revoke certificates").count() == 0
            await browser.close()
    finally:
        await srv.close()
    # The published CRL, read by openssl, lists the serial with its reason.
    der = (await ca.current_crl()).der
    crl = subprocess.run([openssl, "crl", "-inform", "DER", "-noout", "-text"], input=der,
                         capture_output=True, check=True).stdout.decode()
    assert bundle.serial.upper().lstrip("0") in crl.replace(" ", "").upper()
    assert "Key Compromise" in crl
