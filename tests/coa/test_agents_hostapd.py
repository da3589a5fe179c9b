"""AI agents end to end, with hostapd as the NAS (issue 6).

The lab of ``test_enforcement_hostapd`` (nhi-nac serve and hostapd in one network
namespace, three wired supplicants behind one port in another), with three AI agents:

    ai_agent/port1  (root, enrolled with a bootstrap token)
      └─ ai_agent/port2  (spawned by port1 through the agent API)
           └─ ai_agent/port3  (spawned by port2)

A. port1 asks, with its own certificate, for ``zone=db`` for 20 s, inside the ceiling its
   owner set: granted at once; nhi-nac disconnects its session (RFC 5176, ACKed by
   hostapd); the re-authentication lands on the db-agents VLAN 310; when the grant ends
   by itself, the same happens back to VLAN 300.
B. port1 spawns port2, port2 spawns port3; all three authenticate.
C. Revoking port1's certificates revokes all three certificates in one operation and
   disconnects all three live sessions (three ACKed Disconnect-Requests).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.coa.test_enforcement_hostapd import NAS_ID, SECRET, STATIONS, Lab, _supplicant_config
from tests.coa.test_hostapd import _preflight, _wait_file, hostapd_config
from tests.interop import require_tool

pytestmark = pytest.mark.interop

API = "http://127.0.0.1:8000"
GRANT_SECONDS = 20


def _vlans(lab: Lab, identity: str) -> list[int | None]:
    """The VLANs of the identity's accepted admissions, oldest first."""
    with sqlite3.connect(lab.data / "nhi-nac.db") as conn:
        return [r[0] for r in conn.execute(
            "SELECT vlan FROM admissions WHERE identity = ? AND decision = 'accept' "
            "ORDER BY id", (identity,))]


def test_grant_moves_an_agent_and_revocation_cascades(tmp_path: Path) -> None:
    _preflight()
    require_tool("wpa_cli", "wpasupplicant")
    lab = Lab(tmp_path)
    lab.env["NHI_NAC_AGENTS_MAX_GRANT"] = "1h"
    lab.cli("init")
    lab.cli("owner", "add", "ops@example.com", "--name", "Ops")
    lab.cli("identity", "add", "ai_agent", "port1", "--owner", "ops@example.com",
            "--scope", "env=prod")
    lab.cli("agent", "ceiling", "ai_agent/port1", "zone=db")
    lab.cli("nas", "add", "hostapd", "--address", "127.0.0.1", "--secret", SECRET,
            "--vendor", "hostapd")
    current = json.loads(lab.cli("--json", "segments", "show"))["text"]
    new_map = current.replace("segments:\n", "segments:\n  agents-db:\n    vlan: 310\n"
                              "    description: agents granted the database zone\n", 1)
    new_map = new_map.replace("  - name: ai-agents\n", "  - name: ai-agents-db\n    match:\n"
                              "      kind: ai_agent\n      scope:\n        zone: db\n"
                              "    segment: agents-db\n\n  - name: ai-agents\n", 1)
    (tmp_path / "map.yaml").write_text(new_map)
    lab.cli("segments", "apply", str(tmp_path / "map.yaml"), "--yes")
    try:
        lab.network()
        serve = lab.spawn("serve", lab.auth_ns, sys.executable, "-m", "nhi_nac.cli", "serve",
                          env=lab.env)
        _wait_file(lab.logs["serve"], "api.listening", serve, 30)
        creds = {name: tmp_path / f"creds-{name}" for name in STATIONS}
        token = lab.cli("token", "create", "ai_agent/port1").strip()
        lab.cli("enroll", "--server", API, "--token", token, "--out", str(creds["port1"]),
                ns=lab.auth_ns)
        conf = hostapd_config(lab.auth_if, lab.ctrl, SECRET, SECRET, NAS_ID)
        conf = conf.replace("use_pae_group_addr=1", "use_pae_group_addr=0")
        (tmp_path / "hostapd.conf").write_text(conf)
        hostapd = lab.spawn("hostapd", lab.auth_ns, "hostapd", "-dd",
                            str(tmp_path / "hostapd.conf"))
        lab.until(lambda: (lab.ctrl / lab.auth_if).exists() or hostapd.poll() is not None,
                  "hostapd's control socket")
        assert hostapd.poll() is None, lab.debug()

        def start(name: str) -> None:
            lab.spawn(f"wpas-{name}", lab.supp_ns, "wpa_supplicant", "-D", "wired", "-i",
                      f"m{name[-1]}{lab.auth_if[4:]}", "-c",
                      str(_supplicant_config(lab, name, creds[name])), "-d")

        def acked(trigger: str) -> list[dict[str, object]]:
            return [r for r in lab.coa() if str(r["trigger"]).startswith(trigger)
                    and r["status"] == "acked"]

        def bounce(name: str, vlan: int, trigger: str, wait: float = 15) -> None:
            """After a change: the session is ended by an ACKed Disconnect, and the next
            authentication lands on ``vlan``."""
            mac = STATIONS[name][1]
            lab.until(lambda: acked(trigger), f"the Disconnect-ACK for {trigger}", wait)
            lab.until(lambda: name not in lab.authorized(), f"{name} to lose AUTHORIZED", 10)
            lab.until(lambda: mac not in lab.stations(), f"hostapd to drop {name}'s entry")
            lab.wpa_cli(name, "reauthenticate")
            lab.until(lambda: name in lab.authorized(), f"{name} AUTHORIZED again")
            lab.until(lambda: _vlans(lab, f"ai_agent/{name}")[-1:] == [vlan],
                      f"{name}'s admission on VLAN {vlan}")

        start("port1")
        lab.until(lambda: lab.authorized() == {"port1"}, "port1 AUTHORIZED")
        lab.until(lambda: "ai_agent/port1" in lab.active(), "port1's accounting session")
        lab.until(lambda: _vlans(lab, "ai_agent/port1") == [300], "port1 admitted on VLAN 300")

        # A. A grant inside the ceiling: the agent's segment follows it, then reverts.
        answer = json.loads(lab.cli("--json", "agent", "request", "zone=db", "--for",
                                    f"{GRANT_SECONDS}s", "--server", API, "--dir",
                                    str(creds["port1"]), ns=lab.auth_ns))
        assert (answer["status"], answer["decided_by"]) == ("active", "policy"), answer
        bounce("port1", 310, "agent.grant.approved")
        bounce("port1", 300, "agent.grant.expired", GRANT_SECONDS + 15)
        grants = json.loads(lab.cli("--json", "agent", "grants", "--identity",
                                    "ai_agent/port1"))
        assert [g["status"] for g in grants] == ["expired"], grants

        # B. A family of three levels, spawned by the agents themselves.
        lab.cli("agent", "spawn", "--name", "port2", "--scope", "env=prod", "--out",
                str(creds["port2"]), "--server", API, "--dir", str(creds["port1"]),
                ns=lab.auth_ns)
        lab.cli("agent", "spawn", "--name", "port3", "--scope", "env=prod", "--out",
                str(creds["port3"]), "--server", API, "--dir", str(creds["port2"]),
                ns=lab.auth_ns)
        start("port2")
        start("port3")
        everyone = set(STATIONS)
        lab.until(lambda: lab.authorized() == everyone, "all three agents AUTHORIZED")
        lab.until(lambda: set(lab.active()) == {f"ai_agent/{n}" for n in everyone},
                  "three accounting sessions")
        sessions = lab.active()
        tree = lab.cli("agent", "tree", "ai_agent/port1")
        assert "ai_agent/port2" in tree and "└─ ai_agent/port3" in tree, tree

        # C. Revoking the root revokes the family and disconnects every session.
        lab.cli("cert", "revoke", "--identity", "ai_agent/port1", "--reason", "keyCompromise")
        lab.until(lambda: len(acked("certificate.revoked")) == 3,
                  "three Disconnect-ACKs for the revocation", 15)
        lab.until(lambda: not lab.authorized(), "every port to lose AUTHORIZED", 10)
        revoked = acked("certificate.revoked")
        assert sorted((r["identity"], r["session"]) for r in revoked) == sorted(
            sessions.items()), revoked
        certs = json.loads(lab.cli("--json", "cert", "list"))
        agent_certs = [c for c in certs if str(c["identity"]).startswith("ai_agent/")]
        assert agent_certs and {c["status"] for c in agent_certs} == {"revoked"}, certs
        # Every enforcement is in the audit chain, traced to the human owner.
        enforced = [(a["target"], json.loads(a["after"])) for a in json.loads(
            lab.cli("--json", "audit", "show", "--limit", "200")) if a["action"] == "coa.enforce"]
        assert {(t, after["owner"]) for t, after in enforced
                if after["trigger"].startswith("certificate.revoked")} == {
            (f"ai_agent/{n}", "ops@example.com") for n in STATIONS}, enforced
        assert any(after["trigger"].startswith("agent.grant.approved") for _, after in enforced)
        assert serve.poll() is None, lab.debug()
    finally:
        lab.close()
