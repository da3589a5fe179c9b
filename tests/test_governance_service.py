"""Governance through the running service with real RADIUS traffic (issue 3).

Drift from real accounting: a switch reports (RFC 2866 accounting with the RFC 3580
Tunnel-Private-Group-Id) that a printer's session is on VLAN 999 although the segment
map gives printers VLAN 120; ``nhi-nac governance scan`` opens a drift finding, and it
resolves when the switch's next Interim-Update shows VLAN 120. With the action set to
``quarantine``, the drifting identity is quarantined (audited) and its next MAB lands on
the quarantine VLAN; ``revoke`` revokes an orphaned identity's certificates.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service_process import Service, service_env

pytestmark = pytest.mark.interop

MAC = "02:00:5e:00:53:10"


def _service(tmp_path: Path, **env: str) -> Service:
    e = service_env(tmp_path)
    e.update(env)
    svc = Service(e, tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "fac@example.com", "--name", "Facilities")
    svc.cli("identity", "add", "device", "mfp-3", "--owner", "fac@example.com",
            "--scope", "function=printer", "--mac", MAC, "--allow-mab")
    svc.cli("nas", "add", "sw-test", "--address", "127.0.0.1", "--secret",
            "correct-horse-battery-staple")
    return svc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = _service(tmp_path, NHI_NAC_GOVERNANCE_ACTIONS='{"drift": "quarantine"}')
    svc.start()
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.stop()


def _acct(svc: Service, status: str, vlan: int) -> str:
    return svc.radclient_run(
        f'Acct-Status-Type = {status}, Acct-Session-Id = "s-1", User-Name = "{MAC}", '
        f'Calling-Station-Id = "{MAC}", NAS-Port = 7, Tunnel-Type = VLAN, '
        f'Tunnel-Medium-Type = IEEE-802, Tunnel-Private-Group-Id = "{vlan}"', kind="acct")


def _session_vlan(svc: Service) -> int | None:
    with sqlite3.connect(svc.data / "nhi-nac.db") as conn:
        row = conn.execute("SELECT vlan FROM radius_sessions WHERE acct_session_id = 's-1'"
                           ).fetchone()
    return None if row is None else int(row[0])


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_drift_from_accounting_opens_quarantines_and_resolves(service: Service) -> None:
    assert "Tunnel-Private-Group-Id:1 = \"120\"" in service.mab(MAC)
    # The switch says the session runs on VLAN 999: not what the map gives a printer.
    assert "Accounting-Response" in _acct(service, "Start", 999)
    assert _session_vlan(service) == 999
    scan = service.cli("governance", "scan")
    assert "opened   drift device/mfp-3" in scan, scan
    (drift,) = [f for f in json.loads(service.cli("--json", "findings", "list", "--type",
                                                  "drift"))]
    assert (drift["evidence"]["vlan"], drift["evidence"]["mapped_vlan"]) == (999, 120)
    # The configured action quarantined the printer, audited as governance ...
    audit = json.loads(service.cli("--json", "audit", "show", "--target", "device/mfp-3"))
    assert any(a["action"] == "identity.quarantined" and a["actor"] == "governance"
               for a in audit), audit
    _wait(lambda: "Tunnel-Private-Group-Id:1 = \"999\"" in service.mab(MAC),
          "the next MAB on the quarantine VLAN")
    # ... and where the switch now has it (999) is where it belongs while quarantined:
    # the finding resolves. Released, the printer re-authenticates onto 120 (the enforcer's
    # CoA), and the switch's next Interim-Update confirms it: no drift.
    assert "resolved drift device/mfp-3" in service.cli("governance", "scan")
    service.cli("identity", "release", "device/mfp-3")
    _wait(lambda: "Tunnel-Private-Group-Id:1 = \"120\"" in service.mab(MAC),
          "the next MAB back on the printers VLAN")
    assert "Accounting-Response" in _acct(service, "Interim-Update", 120)
    assert _session_vlan(service) == 120
    scan = service.cli("governance", "scan")
    assert "drift" not in scan, scan
    assert json.loads(service.cli("--json", "findings", "list", "--type", "drift")) == []


def test_revoke_action_on_an_orphaned_identity(tmp_path: Path) -> None:
    svc = _service(tmp_path, NHI_NAC_GOVERNANCE_ACTIONS='{"orphaned": "revoke"}')
    svc.cli("identity", "add", "workload", "billing", "--owner", "fac@example.com",
            "--scope", "env=prod")
    import subprocess

    from tests.service_process import NHI
    svc.start()
    try:
        token = svc.cli("token", "create", "workload/billing").strip()
        p = subprocess.run([*NHI, "enroll", "--server", f"http://127.0.0.1:{svc.api}",
                            "--token", token, "--out", str(tmp_path / "creds")], env=svc.env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        svc.cli("owner", "offboard", "fac@example.com")
        scan = svc.cli("governance", "scan")
        assert "opened   orphaned workload/billing" in scan, scan
        certs = json.loads(svc.cli("--json", "cert", "list", "--identity", "workload/billing"))
        assert [c["status"] for c in certs] == ["revoked"], certs
        audit = json.loads(svc.cli("--json", "audit", "show", "--limit", "50"))
        assert any(a["action"] == "certificate.revoke" and a["actor"] == "governance"
                   for a in audit)
        # The CRL the service publishes lists it within its refresh period.
        serial = certs[0]["serial"]
        _wait(lambda: serial.lower() in _crl_serials(svc), "the CRL to list the serial")
    finally:
        svc.stop()


def _crl_serials(svc: Service) -> str:
    import subprocess
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{svc.api}/pki/v1/crl.pem", timeout=5) as r:
        pem = r.read()
    p = subprocess.run(["openssl", "crl", "-noout", "-text"], input=pem, capture_output=True,
                       timeout=30)
    return p.stdout.decode().replace(":", "").lower()


def test_the_service_rescans_on_a_relevant_change(tmp_path: Path) -> None:
    svc = _service(tmp_path, NHI_NAC_GOVERNANCE_RESCAN_SECONDS="1")
    svc.start()
    try:
        time.sleep(1.5)
        # No `governance scan` here: offboarding the owner is a change the service sees.
        svc.cli("owner", "offboard", "fac@example.com")
        _wait(lambda: [f["subject"] for f in json.loads(
            svc.cli("--json", "findings", "list", "--type", "orphaned"))] == ["device/mfp-3"],
            "the orphaned finding, opened by the running service")
        svc.cli("identity", "retire", "device/mfp-3")  # the cause goes away
        _wait(lambda: json.loads(svc.cli("--json", "findings", "list", "--type",
                                         "orphaned")) == [], "the finding to resolve")
    finally:
        svc.stop()
