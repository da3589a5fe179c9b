"""Compliance report: its numbers equal what the database holds; the HTML renders."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from nhi_nac.config import GovernanceConfig
from nhi_nac.domain import IdentityRef
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.report import FRAMEWORKS, compliance_report, render_csv, render_html, render_json
from nhi_nac.storage.models import Admission
from tests.interop import require_tool

ARTIFACTS = Path(os.environ.get("NHI_TEST_ARTIFACTS", Path(__file__).parent.parent
                                / "test-artifacts"))


async def _seed(inv: Inventory) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_owner("bob@example.com", "Bob", actor="t")
    for i in range(5):
        await inv.add_identity(NewIdentity.build(
            "device", f"d{i}", "alice@example.com",
            scope={"zone": "office"} if i % 2 else {}), actor="t")
    await inv.add_identity(NewIdentity.build("workload", "w", "bob@example.com"), actor="t")
    await inv.add_credential(IdentityRef.parse("workload/w"), type_="certificate",
                             fingerprint="aa" * 32, actor="t")
    await inv.add_credential(IdentityRef.parse("device/d1"), type_="certificate",
                             fingerprint="bb" * 32, actor="t")
    # device/d0 renewed: the certificate it replaced has expired (history), the new one
    # is valid; device/d2's only certificate has expired (active past expiry).
    now = inv.clock()
    for ref, fp, expires in (("device/d0", "c0", now - dt.timedelta(hours=1)),
                             ("device/d0", "c1", now + dt.timedelta(days=60)),
                             ("device/d2", "d2", now - dt.timedelta(hours=1))):
        await inv.add_credential(IdentityRef.parse(ref), type_="certificate",
                                 fingerprint=fp * 32, expires_at=expires, actor="t")
    await inv.set_status(IdentityRef.parse("device/d1"), "retired", actor="t")
    await inv.offboard_owner("bob@example.com", actor="t")
    now = inv.clock()
    async with inv.db.transaction() as s:
        for decision in ("accept", "accept", "reject"):
            s.add(Admission(at=now, nas="sw1", method="mab", decision=decision, vlan=None,
                            reasons={"reasons": []}))
    await Governance(inv, GovernanceConfig()).scan()


async def _scalar(inv: Inventory, sql: str) -> int:
    async with inv.db.read() as s:
        return int((await s.execute(text(sql))).scalar_one())


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
async def test_numbers_equal_the_database(inventory: Inventory, framework: str) -> None:
    await _seed(inventory)
    report = await compliance_report(inventory.db, framework, inventory.clock())
    ev = report.evidence
    live = await _scalar(inventory, "SELECT count(*) FROM identities WHERE status != 'retired'")
    owned = await _scalar(inventory, "SELECT count(*) FROM identities i JOIN owners o "
                          "ON o.id = i.owner_id WHERE i.status != 'retired' AND "
                          "o.status = 'active'")
    scoped = await _scalar(inventory, "SELECT count(DISTINCT i.id) FROM identities i JOIN "
                           "identity_labels l ON l.identity_id = i.id "
                           "WHERE i.status != 'retired'")
    assert (ev.inventory["identities_live"], ev.inventory["with_active_owner"],
            ev.inventory["with_scope"]) == (live, owned, scoped) == (5, 4, 1)
    superseded = ("type = 'certificate' AND EXISTS (SELECT 1 FROM credentials n WHERE "
                  "n.identity_id = credentials.identity_id AND n.type = 'certificate' AND "
                  "n.status = 'active' AND n.id > credentials.id)")
    assert ev.credentials["active"] == await _scalar(
        inventory, "SELECT count(*) FROM credentials WHERE status = 'active' AND NOT "
        f"({superseded} AND expires_at <= CURRENT_TIMESTAMP)") == 3
    assert ev.credentials["active_past_expiry"] == 1  # device/d2's, not d0's replaced one
    assert ev.revocations["total"] == await _scalar(
        inventory, "SELECT count(*) FROM credentials WHERE status = 'revoked'") == 1
    assert ev.findings["open_total"] == await _scalar(
        inventory, "SELECT count(*) FROM findings WHERE state != 'resolved'")
    assert ev.admissions == {"accept": 2, "reject": 1}
    assert ev.audit["ok"] and ev.audit["records"] == await _scalar(
        inventory, "SELECT count(*) FROM audit_log")
    assert [c.control for c in report.controls] == [c for c, _, _ in FRAMEWORKS[framework]]
    # An orphaned identity (bob departed) puts owner-related controls in "attention".
    assert any(c.status == "attention" and any("without an active owner" in n for n in c.notes)
               for c in report.controls)
    doc = json.loads(render_json(report))
    assert doc["framework"] == framework
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["control"] for r in rows} == {c for c, _, _ in FRAMEWORKS[framework]}


async def test_html_renders_in_headless_chromium(inventory: Inventory, tmp_path: Path) -> None:
    chromium = require_tool("chromium", "chromium")
    await _seed(inventory)
    report = await compliance_report(inventory.db, "soc2", inventory.clock())
    page = render_html(report)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"compliance-soc2-{inventory.db.engine.dialect.name}.png"
    p = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1100,1400", html_file.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, p.stderr
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile2'}",
         "--dump-dom", html_file.as_uri()], capture_output=True, text=True, timeout=120)
    assert "CC6.1" in dom.stdout and "<svg" in dom.stdout
