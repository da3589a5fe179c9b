"""Continuous enforcement end to end, with hostapd as the NAS.

`nhi-nac serve` runs inside the authenticator's namespace; hostapd (wired) relays
EAP-TLS from wpa_supplicant to it and sends it accounting. Revoking the identity's
certificate with the CLI makes the service send a Disconnect-Request to hostapd's
Dynamic Authorization Server: the port loses AUTHORIZED, the ACK is recorded in
`nhi-nac coa status`, and the next authentication is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.coa.test_hostapd import (
    ROOT,
    STEP_TIMEOUT,
    Port,
    _preflight,
    _run,
    _stop,
    _wait_file,
    hostapd_config,
)

pytestmark = pytest.mark.interop

SECRET = "hostapd-shared-secret-e2e"
NAS_ID = "hostapd-e2e"


def _until(check: object, what: str, port: Port, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{port.debug()}")


@pytest.mark.parametrize("trigger", ["certificate.revoked", "segments.applied",
                                     "identity.retired"])
def test_change_disconnects_the_live_session(tmp_path: Path, trigger: str) -> None:
    _preflight()
    tag = f"{os.getpid() % 100000}"
    auth_ns, supp_ns = f"nhie2e-a{tag}", f"nhie2e-s{tag}"
    auth_if, supp_if = f"e2eA{tag}", f"e2eS{tag}"
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NHI_NAC_")}
    env.update({"NHI_NAC_DATA_DIR": str(data), "NHI_NAC_LOG_FORMAT": "json",
                "NHI_NAC_RADIUS_LISTEN": '["127.0.0.1"]', "NHI_NAC_RADIUS_AUTH_PORT": "1812",
                "NHI_NAC_RADIUS_ACCT_PORT": "1813", "NHI_NAC_RADIUS_COA_PORT": "3799",
                "NHI_NAC_API_LISTEN": "127.0.0.1:8000"})
    nhi = [sys.executable, "-m", "nhi_nac.cli"]

    def cli(*args: str, ns: str | None = None) -> str:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [*nhi, *args]
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    cli("init")
    cli("owner", "add", "ops@example.com", "--name", "Ops")
    cli("identity", "add", "device", "port1", "--owner", "ops@example.com",
        "--scope", "function=camera")
    cli("nas", "add", "hostapd", "--address", "127.0.0.1", "--secret", SECRET,
        "--vendor", "hostapd")
    ctrl = tmp_path / "hostapd"
    logs = {"serve": tmp_path / "serve.log", "hostapd": tmp_path / "hostapd.log",
            "wpa_supplicant": tmp_path / "wpas.log"}
    procs: list[subprocess.Popen[str]] = []
    created: list[str] = []
    try:
        for ns in (auth_ns, supp_ns):
            _run("ip", "netns", "add", ns)
            created.append(ns)
        _run("ip", "link", "add", auth_if, "type", "veth", "peer", "name", supp_if)
        _run("ip", "link", "set", auth_if, "netns", auth_ns)
        _run("ip", "link", "set", supp_if, "netns", supp_ns)
        for ns, ifname in ((auth_ns, auth_if), (supp_ns, supp_if)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", ifname, "up")
        port = Port(auth_ns, supp_ns, auth_if, supp_if, tmp_path, ctrl, logs)
        with logs["serve"].open("w") as log:
            serve = subprocess.Popen(["ip", "netns", "exec", auth_ns, *nhi, "serve"], env=env,
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(serve)
        _wait_file(logs["serve"], "api.listening", serve, STEP_TIMEOUT)
        token = cli("token", "create", "device/port1").strip()
        creds = tmp_path / "creds"
        cli("enroll", "--server", "http://127.0.0.1:8000", "--token", token, "--out",
            str(creds), ns=auth_ns)
        fullchain = tmp_path / "fullchain.pem"
        fullchain.write_text((creds / "cert.pem").read_text() + (creds / "chain.pem").read_text())
        hostapd_conf = tmp_path / "hostapd.conf"
        hostapd_conf.write_text(hostapd_config(auth_if, ctrl, SECRET, SECRET, NAS_ID))
        wpas_conf = tmp_path / "wpa_supplicant.conf"
        wpas_conf.write_text(f"""ctrl_interface={tmp_path / "wpas"}
ap_scan=0
network={{
    key_mgmt=IEEE8021X
    eap=TLS
    identity="device/port1"
    ca_cert="{creds / "ca.pem"}"
    client_cert="{fullchain}"
    private_key="{creds / "key.pem"}"
    eapol_flags=0
}}
""")
        with logs["hostapd"].open("w") as log:
            procs.append(subprocess.Popen(["ip", "netns", "exec", auth_ns, "hostapd", "-dd",
                                           str(hostapd_conf)], stdout=log,
                                          stderr=subprocess.STDOUT, text=True))
        _until(lambda: (ctrl / auth_if).exists(), "hostapd control socket", port)
        with logs["wpa_supplicant"].open("w") as log:
            procs.append(subprocess.Popen(["ip", "netns", "exec", supp_ns, "wpa_supplicant",
                                           "-D", "wired", "-i", supp_if, "-c", str(wpas_conf),
                                           "-d"], stdout=log, stderr=subprocess.STDOUT,
                                          text=True))
        port.wait_for("[AUTHORIZED]")

        def active_sessions() -> list[tuple[str, str]]:
            with sqlite3.connect(data / "nhi-nac.db") as conn:
                return conn.execute("SELECT identity, acct_session_id FROM radius_sessions "
                                    "WHERE status = 'active'").fetchall()

        _until(lambda: active_sessions(), "accounting Start from hostapd", port)
        assert active_sessions()[0][0] == "device/port1"

        if trigger == "certificate.revoked":
            cli("cert", "revoke", "--identity", "device/port1", "--reason", "keyCompromise")
        elif trigger == "identity.retired":
            cli("identity", "retire", "device/port1")
        else:
            current = json.loads(cli("--json", "segments", "show"))["text"]
            new = tmp_path / "map.yaml"
            new.write_text(current.replace("vlan: 130", "vlan: 131", 1))
            cli("segments", "apply", str(new), "--yes")
        _until(lambda: "[AUTHORIZED]" not in port.station().get("flags", ""),
               "the port to lose AUTHORIZED", port)

        def acked() -> list[dict[str, object]]:
            rows = json.loads(cli("--json", "coa", "status"))
            return [r for r in rows if r["status"] == "acked"]

        _until(lambda: acked(), "the Disconnect-ACK to be recorded", port)
        rows = json.loads(cli("--json", "coa", "status"))
        assert {r["identity"] for r in rows} == {"device/port1"}
        assert rows[0]["kind"] == "disconnect" and rows[0]["trigger"].startswith(trigger)
        if trigger == "segments.applied":
            # Only the segment changed: the next authentication gets the new VLAN (shown
            # with radclient in tests/test_radius_service.py); here the session was ended.
            pass
        else:
            # The supplicant tries again and is refused.
            time.sleep(3)
            assert "[AUTHORIZED]" not in port.station().get("flags", ""), port.debug()
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for ns in created:
            _run("ip", "netns", "del", ns, check=False)
