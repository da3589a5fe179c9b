"""Behavioural enforcement for AI agents through the running service (issue 6).

A real ``nhi-nac serve``; the agent enrolls with ``nhi-nac enroll``, authenticates with
``eapol_test`` (EAP-TLS) through two NAS clients at two sites (``eapol_test -A`` picks
the NAS's source address on loopback), and asks for grants with ``nhi-nac agent
request`` signed by its own key. Each behaviour — a connection from a new site, a
scripted burst of access requests — raises a finding and quarantines the agent: its
next authentication lands on the quarantine segment, its grant requests are refused;
the owner's release undoes it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop import require_tool
from tests.service_process import NHI, SECRET, Service, service_env

pytestmark = pytest.mark.interop

QUARANTINE_VLAN = 999
AGENTS_VLAN = 300


def until(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out ({timeout}s) waiting for {what}")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    env = service_env(tmp_path)
    env["NHI_NAC_AGENTS_BURST_REQUESTS"] = "10"
    svc = Service(env, tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "ops@example.com", "--name", "Ops")
    svc.cli("identity", "add", "ai_agent", "planner", "--owner", "ops@example.com",
            "--scope", "env=prod")
    svc.cli("nas", "add", "sw-hq", "--address", "127.0.0.1", "--secret", SECRET,
            "--site", "hq")
    svc.cli("nas", "add", "sw-branch", "--address", "127.0.0.2", "--secret", SECRET,
            "--site", "branch")
    svc.start()
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.stop()


def _enroll(svc: Service, out: Path) -> None:
    token = svc.cli("token", "create", "ai_agent/planner").strip()
    p = subprocess.run([*NHI, "enroll", "--server", f"http://127.0.0.1:{svc.api}",
                        "--token", token, "--out", str(out)], env=svc.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def _eapol(svc: Service, creds: Path, source: str) -> str:
    tool = require_tool("eapol_test", "eapoltest")
    fullchain = creds / "fullchain.pem"
    fullchain.write_text((creds / "cert.pem").read_text() + (creds / "chain.pem").read_text())
    conf = creds / "eapol.conf"
    conf.write_text(f"""network={{
    key_mgmt=IEEE8021X
    eap=TLS
    identity="ai_agent/planner"
    ca_cert="{creds / 'ca.pem'}"
    client_cert="{fullchain}"
    private_key="{creds / 'key.pem'}"
    eapol_flags=0
}}
""")
    p = subprocess.run([tool, "-c", str(conf), "-a", "127.0.0.1", "-A", source,
                        "-p", str(svc.auth), "-s", SECRET, "-r", "0", "-t", "15"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout + p.stderr


def _accepts(svc: Service) -> list[tuple[str, int]]:
    with sqlite3.connect(svc.data / "nhi-nac.db") as conn:
        return [(r[0], r[1]) for r in conn.execute(
            "SELECT nas, vlan FROM admissions WHERE identity = 'ai_agent/planner' "
            "AND decision = 'accept' ORDER BY id")]


def _findings(svc: Service) -> dict[str, dict[str, object]]:
    return {f["type"]: f for f in json.loads(svc.cli("--json", "findings", "list"))}


def _request(svc: Service, creds: Path, label: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NHI, "--json", "agent", "request", label, "--for", "5m",
                           "--server", f"http://127.0.0.1:{svc.api}", "--dir", str(creds)],
                          env=svc.env, capture_output=True, text=True, timeout=60)


def test_a_new_site_quarantines_the_agent_until_released(service: Service,
                                                         tmp_path: Path) -> None:
    creds = tmp_path / "agent"
    _enroll(service, creds)
    assert "SUCCESS" in _eapol(service, creds, "127.0.0.1")
    until(lambda: _accepts(service) == [("sw-hq", AGENTS_VLAN)], "the HQ admission")
    time.sleep(2.5)  # a behavioural scan runs over the HQ connection: nothing to flag
    assert "new_site" not in _findings(service)
    # The same, valid certificate now connects from the branch office.
    assert "SUCCESS" in _eapol(service, creds, "127.0.0.2")
    until(lambda: "new_site" in _findings(service), "a new_site finding")
    finding = _findings(service)["new_site"]
    assert finding["subject"] == "ai_agent/planner"
    assert finding["evidence"]["site"] == "branch"  # type: ignore[index]
    assert finding["evidence"]["known_sites"] == ["hq"]  # type: ignore[index]
    # The default action for agents: quarantine. The next authentication, from anywhere,
    # lands on the quarantine segment.
    until(lambda: '"identity.quarantined"' in service.cli("--json", "audit", "show",
                                                         "--limit", "20"),
          "the quarantine in the audit trail")
    assert "SUCCESS" in _eapol(service, creds, "127.0.0.1")
    until(lambda: _accepts(service)[-1:] == [("sw-hq", QUARANTINE_VLAN)],
          "admission on the quarantine VLAN")
    # The owner releases the agent: back on its segment.
    service.cli("identity", "release", "ai_agent/planner")
    time.sleep(1.5)  # the serve loop reloads quarantines every second
    assert "SUCCESS" in _eapol(service, creds, "127.0.0.1")
    until(lambda: _accepts(service)[-1:] == [("sw-hq", AGENTS_VLAN)],
          "admission on the agents VLAN again")


def test_a_burst_of_access_requests_quarantines_the_agent(service: Service,
                                                          tmp_path: Path) -> None:
    creds = tmp_path / "agent"
    _enroll(service, creds)
    for i in range(11):  # over the configured burst threshold of 10 in the window
        p = _request(service, creds, f"task=t{i}")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["status"] == "pending"
    until(lambda: "burst" in _findings(service), "a burst finding")
    burst = _findings(service)["burst"]
    assert burst["evidence"]["requests_in_window"] == 11  # type: ignore[index]
    assert burst["severity"] == "high"
    until(lambda: _request(service, creds, "zone=db").returncode != 0,
          "grant requests to be refused")
    p = _request(service, creds, "zone=db")
    assert p.returncode == 1 and "quarantined" in p.stderr
    assert "SUCCESS" in _eapol(service, creds, "127.0.0.1")
    until(lambda: _accepts(service)[-1:] == [("sw-hq", QUARANTINE_VLAN)],
          "admission on the quarantine VLAN")
