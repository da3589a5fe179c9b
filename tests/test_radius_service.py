"""RADIUS through the real service process: inventory, segment map, accounting, metrics.

`nhi-nac serve` runs as a user would run it (SQLite, loopback, ephemeral ports);
radclient is the NAS. A new segment map applied with the CLI changes the VLAN of the
next MAB request without restarting the server.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service_process import MA, SECRET, Service, service_env

pytestmark = pytest.mark.interop


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(service_env(tmp_path), tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "alice@example.com", "--name", "Alice", "--team", "facilities")
    svc.cli("identity", "add", "device", "printer-3f-01", "--owner", "alice@example.com",
            "--scope", "function=printer", "--mac", "aa:bb:cc:00:00:01", "--allow-mab")
    svc.cli("nas", "add", "sw-test", "--address", "127.0.0.1", "--secret", SECRET,
            "--site", "hq")
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.proc.kill()
        svc.proc.wait()


def _vlan(out: str) -> str | None:
    for line in out.splitlines():
        if "Tunnel-Private-Group-Id" in line:
            return line.split("=", 1)[1].strip().strip('"')
    return None


def test_mab_vlan_follows_the_segment_map_without_restart(service: Service,
                                                          tmp_path: Path) -> None:
    service.start()
    out = service.mab("AA-BB-CC-00-00-01")
    assert "Access-Accept" in out and _vlan(out) == "120", out
    assert "Tunnel-Type:1 = VLAN" in out or "Tunnel-Type = VLAN" in out
    current = json.loads(service.cli("--json", "segments", "show"))["text"]
    new = tmp_path / "new.yaml"
    new.write_text(current.replace("vlan: 120", "vlan: 121", 1))
    service.cli("segments", "apply", str(new), "--yes", "--comment", "renumber printers")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = service.mab("aabb.cc00.0001")
        if _vlan(out) == "121":
            break
        time.sleep(0.3)
    assert _vlan(out) == "121", out
    # Retiring the identity takes effect without restart too: reject.
    service.cli("identity", "retire", "device/printer-3f-01")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = service.mab("aabbcc000001")
        if "Access-Reject" in out:
            break
        time.sleep(0.3)
    assert "Access-Reject" in out, out
    service.stop()
    with service.db() as conn:
        rows = conn.execute("SELECT decision, vlan, identity, method FROM admissions "
                            "ORDER BY id").fetchall()
    assert rows[0] == ("accept", 120, "device/printer-3f-01", "mab")
    assert ("accept", 121, "device/printer-3f-01", "mab") in rows
    assert rows[-1][0] == "reject"


def test_unknown_mac_accounting_and_metrics(service: Service) -> None:
    service.start()
    out = service.mab("02-00-5e-00-53-99")
    assert "Access-Accept" in out and _vlan(out) == "999", out  # starter map: quarantine
    # No reply without Message-Authenticator, and none with a wrong secret.
    out = service.radclient_run('User-Name = "aabbcc000001", User-Password = "aabbcc000001"')
    assert "Access-Accept" not in out and "Access-Reject" not in out
    out = service.radclient_run(f'User-Name = "aabbcc000001", User-Password = "x", {MA}',
                                secret="not-the-secret-at-all")
    assert "Access-Accept" not in out and "Access-Reject" not in out
    out = service.radclient_run(
        'Acct-Status-Type = Start, Acct-Session-Id = "s-1", User-Name = "aabbcc000001", '
        'Calling-Station-Id = "aa:bb:cc:00:00:01", NAS-Port-Id = "Gi1/0/7"', kind="acct")
    assert "Accounting-Response" in out, out
    with service.db() as conn:
        assert conn.execute("SELECT identity, status FROM radius_sessions").fetchall() == [
            ("device/printer-3f-01", "active")]
    out = service.radclient_run(
        'Acct-Status-Type = Stop, Acct-Session-Id = "s-1", User-Name = "aabbcc000001", '
        'Acct-Input-Octets = 1000, Acct-Output-Octets = 2000', kind="acct")
    assert "Accounting-Response" in out, out
    with urllib.request.urlopen(f"http://127.0.0.1:{service.api}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'nhi_radius_events_total{event="accept"}' in metrics
    assert 'nhi_radius_events_total{event="drop.' in metrics
    assert 'nhi_radius_request_seconds_bucket{le="+Inf"}' in metrics
    service.stop()
    with service.db() as conn:
        assert conn.execute("SELECT status, input_octets, output_octets FROM "
                            "radius_sessions").fetchall() == [("stopped", 1000, 2000)]
        discovered = conn.execute("SELECT mac, nas, count FROM discovered_devices").fetchall()
        seen = conn.execute("SELECT last_seen_at FROM identities").fetchall()
    assert discovered == [("02:00:5e:00:53:99", "sw-test", 1)]
    assert seen[0][0] is not None
    scan = service.cli("governance", "scan")
    assert "unmanaged mac/02:00:5e:00:53:99" in scan
