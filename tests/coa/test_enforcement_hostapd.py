"""Continuous enforcement end to end, with hostapd as the NAS (issue 5).

One wired 802.1X port, three supplicants behind it:

    [ns auth]  nhi-nac serve (RADIUS 127.0.0.1:1812/1813, API :8000, CoA -> :3799)
               hostapd driver=wired on veth A: relays EAP-TLS, sends accounting,
               RFC 5176 Dynamic Authorization Server on 3799
                  |
                veth
                  |
    [ns supp]  veth S + three macvlans: wpa_supplicant -D wired (EAP-TLS) on each
               device/port1 (camera), device/port2 (phone), device/port3 (printer)

Every certificate is enrolled from nhi-nac's CA with `nhi-nac enroll`. Then, through the
real service and only the CLI:

A. a map that moves cameras (iot VLAN 130 -> 131) disconnects port1 only; port1's next
   authentication is accepted on VLAN 131 in a new session;
B. revoking port1's certificate disconnects port1 only; its next attempt is refused;
C. retiring port2 disconnects port2 only.

port3 stays AUTHORIZED throughout, and `nhi-nac coa status` records one ACKed
Disconnect-Request per affected session, naming the trigger.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.coa.test_hostapd import ROOT, _preflight, _run, _stop, _wait_file, hostapd_config
from tests.interop import require_tool

pytestmark = pytest.mark.interop

SECRET = "hostapd-shared-secret-e2e"  # RADIUS and DAS: nhi-nac signs CoA with the NAS secret
NAS_ID = "hostapd-e2e"
STEP = 15.0
# identity name -> (documented function, MAC of its macvlan)
STATIONS = {"port1": ("camera", "02:00:5e:00:00:01"),
            "port2": ("phone", "02:00:5e:00:00:02"),
            "port3": ("printer", "02:00:5e:00:00:03")}


class Lab:
    """Namespaces, processes and paths of the test, with bounded waits."""

    def __init__(self, tmp: Path) -> None:
        tag = f"{os.getpid() % 100000}"
        self.tmp = tmp
        self.auth_ns, self.supp_ns = f"nhie2e-a{tag}", f"nhie2e-s{tag}"
        self.auth_if, self.supp_if = f"e2eA{tag}", f"e2eS{tag}"
        self.data = tmp / "data"
        self.ctrl = tmp / "hostapd"
        self.logs: dict[str, Path] = {"serve": tmp / "serve.log", "hostapd": tmp / "hostapd.log"}
        self.procs: list[subprocess.Popen[str]] = []
        self.namespaces: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NHI_NAC_")}
        # Privileged ports are fine: they are bound inside the test's own namespace.
        self.env.update({"NHI_NAC_DATA_DIR": str(self.data), "NHI_NAC_LOG_FORMAT": "json",
                         "NHI_NAC_RADIUS_LISTEN": '["127.0.0.1"]',
                         "NHI_NAC_RADIUS_AUTH_PORT": "1812", "NHI_NAC_RADIUS_ACCT_PORT": "1813",
                         "NHI_NAC_RADIUS_COA_PORT": "3799",
                         "NHI_NAC_API_LISTEN": "127.0.0.1:8000"})

    # -- commands -------------------------------------------------------------------
    def cli(self, *args: str, ns: str | None = None) -> str:
        cmd = (["ip", "netns", "exec", ns] if ns else [])
        cmd += [sys.executable, "-m", "nhi_nac.cli", *args]
        p = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, f"nhi-nac {' '.join(args)}: {p.stdout}{p.stderr}"
        return p.stdout

    def spawn(self, name: str, ns: str, *cmd: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
        self.logs[name] = self.tmp / f"{name}.log"
        with self.logs[name].open("w") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, cwd=ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def wpa_cli(self, name: str, *args: str) -> str:
        return _run("ip", "netns", "exec", self.supp_ns, "wpa_cli", "-p",
                    str(self.tmp / f"wpas-{name}"), "-i", f"m{name[-1]}{self.auth_if[4:]}",
                    *args, check=False)

    # -- observations ---------------------------------------------------------------
    def stations(self) -> dict[str, dict[str, str]]:
        """hostapd's stations by MAC (``hostapd_cli all_sta``), flags under "flags"."""
        out = _run("ip", "netns", "exec", self.auth_ns, "hostapd_cli", "-p", str(self.ctrl),
                   "-i", self.auth_if, "all_sta", check=False)
        stations: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in out.splitlines():
            line = line.strip()
            if line.count(":") == 5 and "=" not in line:
                current = stations.setdefault(line.lower(), {})
            elif current is not None and "=" in line:
                key, _, value = line.partition("=")
                current.setdefault(key, value)
        return stations

    def authorized(self) -> set[str]:
        """Identity names whose station is AUTHORIZED."""
        by_mac = {mac: name for name, (_, mac) in STATIONS.items()}
        return {by_mac.get(mac, mac) for mac, sta in self.stations().items()
                if "[AUTHORIZED]" in sta.get("flags", "")}

    def sessions(self, status: str = "active") -> list[sqlite3.Row]:
        with sqlite3.connect(self.data / "nhi-nac.db") as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute("SELECT * FROM radius_sessions WHERE status = ? ORDER BY id",
                                (status,)).fetchall()

    def active(self) -> dict[str, str]:
        """identity -> Acct-Session-Id of its active sessions (one each here)."""
        return {r["identity"]: r["acct_session_id"] for r in self.sessions()}

    def coa(self) -> list[dict[str, object]]:
        return list(json.loads(self.cli("--json", "coa", "status", ns=self.auth_ns)))

    def decisions(self) -> list[dict[str, object]]:
        out = []
        for line in self.logs["serve"].read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "radius.decision":
                out.append(rec)
        return out

    def until(self, check: Callable[[], object], what: str, timeout: float = STEP) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out ({timeout}s) waiting for {what}\n{self.debug()}")

    def debug(self) -> str:
        parts = [f"stations: {self.stations()}", f"sessions: {[dict(r) for r in self.sessions()]}"]
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} (tail) ---\n{text[-3000:]}")
        return "\n".join(parts)

    # -- setup / teardown -----------------------------------------------------------
    def network(self) -> None:
        for ns in (self.auth_ns, self.supp_ns):
            _run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
        _run("ip", "link", "add", self.auth_if, "type", "veth", "peer", "name", self.supp_if)
        _run("ip", "link", "set", self.auth_if, "netns", self.auth_ns)
        _run("ip", "link", "set", self.supp_if, "netns", self.supp_ns)
        for ns, ifname in ((self.auth_ns, self.auth_if), (self.supp_ns, self.supp_if)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "link", "set", ifname, "up")
        # Three supplicant ports on one wire: macvlans (private mode) over the veth end.
        for name, (_, mac) in STATIONS.items():
            ifname = f"m{name[-1]}{self.auth_if[4:]}"
            _run("ip", "-n", self.supp_ns, "link", "add", ifname, "link", self.supp_if,
                 "address", mac, "type", "macvlan", "mode", "private")
            _run("ip", "-n", self.supp_ns, "link", "set", ifname, "up")

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _stop(proc)
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns, check=False)


def _supplicant_config(lab: Lab, name: str, creds: Path) -> Path:
    fullchain = creds / "fullchain.pem"
    fullchain.write_text((creds / "cert.pem").read_text() + (creds / "chain.pem").read_text())
    conf = lab.tmp / f"wpas-{name}.conf"
    conf.write_text(f"""ctrl_interface={lab.tmp / f"wpas-{name}"}
ap_scan=0
network={{
    key_mgmt=IEEE8021X
    eap=TLS
    identity="device/{name}"
    ca_cert="{creds / "ca.pem"}"
    client_cert="{fullchain}"
    private_key="{creds / "key.pem"}"
    eapol_flags=0
}}
""")
    return conf


def test_changes_disconnect_exactly_the_affected_live_sessions(tmp_path: Path) -> None:
    _preflight()
    require_tool("wpa_cli", "wpasupplicant")
    lab = Lab(tmp_path)
    lab.cli("init")
    lab.cli("owner", "add", "ops@example.com", "--name", "Ops")
    for name, (function, _) in STATIONS.items():
        lab.cli("identity", "add", "device", name, "--owner", "ops@example.com",
                "--scope", f"function={function}")
    lab.cli("nas", "add", "hostapd", "--address", "127.0.0.1", "--secret", SECRET,
            "--vendor", "hostapd")
    try:
        lab.network()
        serve = lab.spawn("serve", lab.auth_ns, sys.executable, "-m", "nhi_nac.cli", "serve",
                          env=lab.env)
        _wait_file(lab.logs["serve"], "api.listening", serve, 30)

        # Enroll each supplicant's certificate from nhi-nac's CA over the API.
        confs = {}
        for name in STATIONS:
            token = lab.cli("token", "create", f"device/{name}").strip()
            creds = tmp_path / f"creds-{name}"
            lab.cli("enroll", "--server", "http://127.0.0.1:8000", "--token", token,
                    "--out", str(creds), ns=lab.auth_ns)
            confs[name] = _supplicant_config(lab, name, creds)

        conf = hostapd_config(lab.auth_if, lab.ctrl, SECRET, SECRET, NAS_ID)
        # Several stations on the wire: EAPOL to each station's own MAC, not the group.
        conf = conf.replace("use_pae_group_addr=1", "use_pae_group_addr=0")
        (tmp_path / "hostapd.conf").write_text(conf)
        hostapd = lab.spawn("hostapd", lab.auth_ns, "hostapd", "-dd",
                            str(tmp_path / "hostapd.conf"))
        lab.until(lambda: (lab.ctrl / lab.auth_if).exists() or hostapd.poll() is not None,
                  "hostapd's control socket")
        assert hostapd.poll() is None, lab.debug()
        for name in STATIONS:
            lab.spawn(f"wpas-{name}", lab.supp_ns, "wpa_supplicant", "-D", "wired", "-i",
                      f"m{name[-1]}{lab.auth_if[4:]}", "-c", str(confs[name]), "-d")

        everyone = set(STATIONS)
        lab.until(lambda: lab.authorized() == everyone, "all three ports AUTHORIZED")
        lab.until(lambda: set(lab.active()) == {f"device/{n}" for n in everyone},
                  "accounting Start of all three sessions in radius_sessions")
        first = lab.active()
        port1_mac = STATIONS["port1"][1]
        row1 = next(r for r in lab.sessions() if r["identity"] == "device/port1")
        assert row1["nas"] == "hostapd" and row1["mac"].lower().replace("-", ":") == \
            port1_mac, dict(row1)
        assert [(d["identity"], d["vlan"]) for d in lab.decisions()
                if d["identity"] == "device/port1"] == [("device/port1", 130)], lab.decisions()

        def acked(trigger: str) -> list[dict[str, object]]:
            return [r for r in lab.coa() if str(r["trigger"]).startswith(trigger)
                    and r["status"] == "acked"]

        # A. A map that moves cameras: only port1's session is ended ...
        current = json.loads(lab.cli("--json", "segments", "show"))["text"]
        assert current.count("vlan: 130") == 1
        new_map = tmp_path / "map.yaml"
        new_map.write_text(current.replace("vlan: 130", "vlan: 131"))
        lab.cli("segments", "apply", str(new_map), "--yes")
        lab.until(lambda: "port1" not in lab.authorized(), "port1 to lose AUTHORIZED", 10)
        assert lab.authorized() == {"port2", "port3"}, lab.debug()
        lab.until(lambda: acked("segments.applied"), "the Disconnect-ACK for the map", 10)
        rows = lab.coa()
        assert [(r["identity"], r["kind"], r["session"], r["status"], r["nas"]) for r in rows] \
            == [("device/port1", "disconnect", first["device/port1"], "acked", "hostapd")], rows
        lab.until(lambda: "device/port1" not in lab.active(), "port1's session to stop")
        # ... and its next authentication lands on the new VLAN, in a new session. (hostapd
        # drops the disconnected station's entry a moment after the ACK; an EAPOL-Start
        # before that would reuse the entry and be cut by its pending removal timer.)
        lab.until(lambda: port1_mac not in lab.stations(), "hostapd to drop port1's entry")
        lab.wpa_cli("port1", "reauthenticate")
        lab.until(lambda: lab.authorized() == everyone, "port1 AUTHORIZED again")
        lab.until(lambda: "device/port1" in lab.active(), "port1's new accounting session")
        second = lab.active()
        assert second["device/port1"] != first["device/port1"]
        assert second["device/port2"] == first["device/port2"]
        assert second["device/port3"] == first["device/port3"]
        assert [d["vlan"] for d in lab.decisions() if d["identity"] == "device/port1"] == \
            [130, 131], lab.decisions()

        # B. Revoking port1's certificate ends its session; its next attempt is refused.
        lab.cli("cert", "revoke", "--identity", "device/port1", "--reason", "keyCompromise")
        lab.until(lambda: "port1" not in lab.authorized(), "port1 to lose AUTHORIZED", 10)
        assert lab.authorized() == {"port2", "port3"}, lab.debug()
        lab.until(lambda: acked("certificate.revoked"), "the Disconnect-ACK for the revocation",
                  10)
        revoked = [r for r in lab.coa() if str(r["trigger"]).startswith("certificate.revoked")]
        assert [(r["identity"], r["session"], r["status"]) for r in revoked] == \
            [("device/port1", second["device/port1"], "acked")], revoked
        n_decisions = len(lab.decisions())
        lab.until(lambda: port1_mac not in lab.stations(), "hostapd to drop port1's entry")
        lab.wpa_cli("port1", "reauthenticate")
        # (The reject's decision log names no identity or MAC: the certificate is refused
        # before its SAN is mapped; only port1 authenticates at this point.)
        lab.until(lambda: any(d["verdict"] == "reject" and d["failure"] == "revoked"
                              for d in lab.decisions()[n_decisions:]),
                  "nhi-nac to refuse port1's next attempt")
        lab.until(lambda: "CTRL-EVENT-EAP-FAILURE" in lab.logs["wpas-port1"].read_text(
            errors="replace"), "port1's supplicant to see EAP-Failure")
        assert [d["verdict"] for d in lab.decisions()[n_decisions:]] == ["reject"]
        assert "port1" not in lab.authorized(), lab.debug()
        assert "device/port1" not in lab.active()

        # C. Retiring port2 ends port2's session only.
        lab.cli("identity", "retire", "device/port2")
        lab.until(lambda: "port2" not in lab.authorized(), "port2 to lose AUTHORIZED", 10)
        lab.until(lambda: acked("identity.retired"), "the Disconnect-ACK for the retirement", 10)
        retired = [r for r in lab.coa() if str(r["trigger"]).startswith("identity.retired")]
        assert [(r["identity"], r["session"], r["status"]) for r in retired] == \
            [("device/port2", first["device/port2"], "acked")], retired
        assert lab.authorized() == {"port3"}, lab.debug()

        # Every outcome recorded, nothing sent for port3, and port3's session untouched.
        rows = lab.coa()
        assert len(rows) == 3 and {r["status"] for r in rows} == {"acked"}, rows
        assert "device/port3" not in {r["identity"] for r in rows}
        assert lab.active().get("device/port3") == first["device/port3"]
        assert serve.poll() is None, lab.debug()
    finally:
        lab.close()
