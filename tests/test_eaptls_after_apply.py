"""Segment maps: after `segments apply`, the Access-Accept that eapol_test
*receives* for an EAP-TLS authentication carries the new map's VLAN, without a restart.

(`tests/test_pki_service.py` checks the VLAN the server recorded; this checks the reply
attribute the peer saw: Tunnel-Private-Group-Id, RFC 3580 §3.31.)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.service_process import Service
from tests.test_pki_service import eapol, enroll, service  # noqa: F401 - service is a fixture

pytestmark = pytest.mark.interop


def received_vlan(out: str) -> str | None:
    """The Tunnel-Private-Group-Id of the Access-Accept in eapol_test's dump, as text."""
    accept = out.rfind("(Access-Accept)")
    if accept < 0:
        return None
    m = re.search(r"Attribute 81 \(Tunnel-Private-Group-Id\) length=\d+\s*\n\s*Value: (.+)",
                  out[accept:])
    if m is None:
        return None
    value = m.group(1).strip()
    if value.startswith("'"):
        return value.strip("'")
    raw = bytes.fromhex(value.replace("0x", "").replace(" ", ""))
    if raw and raw[0] <= 0x1F:  # RFC 2868 §3.6: an optional tag octet, then the text
        raw = raw[1:]
    return raw.decode()


def test_eap_tls_reply_carries_the_new_maps_vlan(service: Service,  # noqa: F811
                                                 tmp_path: Path) -> None:
    token = service.cli("token", "create", "device/cam-7").strip()
    creds = tmp_path / "cam"
    p = enroll(service, token, creds)
    assert p.returncode == 0, p.stderr
    out = eapol(service, creds, tmp_path)
    assert "SUCCESS" in out and received_vlan(out) == "130", out[-3000:]
    current = json.loads(service.cli("--json", "segments", "show"))["text"]
    new_map = tmp_path / "map.yaml"
    new_map.write_text(current.replace("vlan: 130", "vlan: 131", 1))
    service.cli("segments", "apply", str(new_map), "--yes")
    deadline = time.monotonic() + 10
    vlan = None
    while time.monotonic() < deadline:
        out = eapol(service, creds, tmp_path)
        vlan = received_vlan(out)
        if vlan == "131":
            break
        time.sleep(0.3)
    assert "SUCCESS" in out and vlan == "131", out[-3000:]
    assert service.proc is not None and service.proc.poll() is None  # never restarted
