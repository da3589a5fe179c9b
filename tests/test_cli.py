"""The nhi-nac command as a user runs it: real processes, a real SQLite file."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

NHI = [sys.executable, "-m", "nhi_nac.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("NHI_NAC_")}
    e["NHI_NAC_DATA_DIR"] = str(tmp_path / "data")
    e["NHI_NAC_LOG_FORMAT"] = "json"
    return e


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*NHI, *args], env=env, capture_output=True, text=True, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_init_owner_identity_and_refusals(env: dict[str, str]) -> None:
    assert "database at migration" in run(env, "init").stdout
    run(env, "owner", "add", "alice@example.com", "--name", "Alice", "--team", "net")
    run(env, "identity", "add", "device", "printer-3f-01", "--owner", "alice@example.com",
        "--scope", "zone=office", "--mac", "aabb.ccdd.eeff", "--allow-mab")
    p = run(env, "identity", "add", "device", "p2", ok=False)
    assert p.returncode == 1
    assert p.stderr.strip() == ("nhi-nac: an owner is required: every identity belongs to a "
                                "human")
    p = run(env, "identity", "add", "device", "p2", "--owner", "bob@example.com", ok=False)
    assert p.returncode == 1 and "unknown owner bob@example.com" in p.stderr
    shown = json.loads(run(env, "--json", "identity", "show", "device/printer-3f-01").stdout)
    assert shown["macs"] == ["aa:bb:cc:dd:ee:ff"] and shown["scope"] == {"zone": "office"}
    table = run(env, "identity", "list", "--scope", "zone=office").stdout
    assert "device/printer-3f-01" in table.splitlines()[1]
    p = run(env, "owner", "offboard", "alice@example.com")
    assert "1 identities left orphaned" in p.stdout and "device/printer-3f-01" in p.stdout


def test_nas_commands(env: dict[str, str]) -> None:
    run(env, "init")
    p = run(env, "nas", "add", "sw1", "--address", "10.0.0.0/24", "--secret", "short", ok=False)
    assert "shared secret must be" in p.stderr
    run(env, "nas", "add", "sw1", "--address", "10.0.0.0/24", "--secret", "s" * 24,
        "--vendor", "cisco", "--site", "hq")
    rows = json.loads(run(env, "--json", "nas", "list").stdout)
    assert rows[0]["address"] == "10.0.0.0/24" and rows[0]["require_message_authenticator"]
    assert "secret" not in rows[0]
    run(env, "nas", "remove", "sw1")
    assert json.loads(run(env, "--json", "nas", "list").stdout) == []


def test_import_csv_bad_row_changes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "init")
    run(env, "owner", "add", "alice@example.com", "--name", "Alice")
    f = tmp_path / "fleet.csv"
    f.write_text("kind,name,owner,macs\ndevice,a,alice@example.com,aabbccddee01\n"
                 "device,b,alice@example.com,not-a-mac\n")
    p = run(env, "import", str(f), ok=False)
    assert p.returncode == 1
    assert "fleet.csv line 3: invalid MAC address 'not-a-mac'" in p.stderr
    assert json.loads(run(env, "--json", "identity", "list").stdout) == []
    f.write_text("kind,name,owner,macs\ndevice,a,alice@example.com,aabbccddee01\n")
    assert "imported 1 identities" in run(env, "import", str(f)).stdout


def test_audit_verify_names_an_edited_row(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "init")
    run(env, "owner", "add", "alice@example.com", "--name", "Alice")
    for name in ("a", "b", "c"):
        run(env, "identity", "add", "workload", name, "--owner", "alice@example.com")
    # init applied the starter segment map (1), then owner (2) and three identities.
    assert run(env, "audit", "verify").stdout.startswith("OK: 5 audit records")
    with sqlite3.connect(tmp_path / "data" / "nhi-nac.db") as conn:
        conn.execute("UPDATE audit_log SET after = replace(after, 'workload', 'device') "
                     "WHERE seq = 3")
    p = run(env, "audit", "verify", ok=False)
    assert p.returncode == 3
    assert "FAILED at record 3" in p.stdout


def test_invalid_config_stops_with_one_line(env: dict[str, str]) -> None:
    p = run({**env, "NHI_NAC_RADIUS_AUTH_PORT": "eighteen"}, "serve", ok=False)
    assert p.returncode == 1
    assert p.stderr.strip() == "nhi-nac: config radius.auth_port: 'eighteen' is not an integer"


def test_serve_refuses_unmigrated_database(env: dict[str, str]) -> None:
    p = run({**env, "NHI_NAC_API_LISTEN": f"127.0.0.1:{free_port()}"}, "serve", ok=False)
    assert p.returncode == 1 and "run 'nhi-nac init'" in p.stderr


def test_serve_answers_and_stops_on_sigterm(env: dict[str, str]) -> None:
    run(env, "init")
    token = run(env, "api-token", "create", "ops", "--role", "auditor").stdout.strip()
    port = free_port()
    proc = subprocess.Popen([*NHI, "serve"], env={**env, "NHI_NAC_API_LISTEN":
                                                   f"127.0.0.1:{port}",
                                                   "NHI_NAC_RADIUS_AUTH_PORT": "0",
                                                   "NHI_NAC_RADIUS_ACCT_PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert json.load(r)["status"] == "ready"
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/identities",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert '"event": "stopped"' in err


def test_events_tail_and_governance(env: dict[str, str]) -> None:
    run(env, "init")
    run(env, "owner", "add", "alice@example.com", "--name", "Alice")
    run(env, "identity", "add", "workload", "w", "--owner", "alice@example.com")
    run(env, "owner", "offboard", "alice@example.com")
    lines = run(env, "events", "tail", "--no-follow", "--limit", "2").stdout.splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["identity.created", "owner.departed"]
    assert "1 opened" in run(env, "governance", "scan").stdout
    rows = json.loads(run(env, "--json", "findings", "list").stdout)
    assert rows[0]["type"] == "orphaned" and rows[0]["subject"] == "workload/w"
    assert "acknowledged" in run(env, "findings", "ack", str(rows[0]["id"])).stdout
    assert json.loads(run(env, "--json", "governance", "due").stdout) == []


def test_segments_cli(env: dict[str, str], tmp_path: Path) -> None:
    assert "starter segment map applied as version 1" in run(env, "init").stdout
    assert "starter segment map" not in run(env, "init").stdout  # only once
    current = json.loads(run(env, "--json", "segments", "show").stdout)
    assert current["version"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(current["text"].replace("vlan: 120", "vlan: 4095", 1))
    p = run(env, "segments", "validate", str(bad), ok=False)
    assert p.returncode == 1
    assert f"{bad}:" in p.stdout and "VLAN 4095" in p.stdout
    line = int(p.stdout.split(f"{bad}:")[1].split(":")[0])
    assert "vlan: 4095" in bad.read_text().splitlines()[line - 1]
    p = run(env, "segments", "apply", str(bad), "--yes", ok=False)
    assert p.returncode == 1 and "current map stays in force" in p.stderr
    assert json.loads(run(env, "--json", "segments", "show").stdout)["version"] == 1
    good = tmp_path / "good.yaml"
    good.write_text(current["text"].replace("vlan: 120", "vlan: 121", 1))
    p = run(env, "segments", "apply", str(good), ok=False)  # no tty, no --yes
    assert "pass --yes" in p.stderr
    p = run(env, "segments", "apply", str(good), "--yes", "--comment", "renumber")
    assert "segment printers: vlan 120 -> 121" in p.stdout and "version 2 applied" in p.stdout
    assert "re-applied as version 3" in run(env, "segments", "rollback", "1", "--yes").stdout
    history = json.loads(run(env, "--json", "segments", "history").stdout)
    assert [h["version"] for h in history] == [3, 2, 1]
    assert history[1]["comment"] == "renumber"


def test_agent_tree_and_lineage_refusal(env: dict[str, str]) -> None:
    run(env, "init")
    run(env, "owner", "add", "ops@example.com", "--name", "Ops")
    run(env, "identity", "add", "ai_agent", "planner", "--owner", "ops@example.com",
        "--scope", "env=prod")
    run(env, "identity", "add", "ai_agent", "worker", "--owner", "ops@example.com",
        "--scope", "env=prod", "--parent", "ai_agent/planner")
    p = run(env, "identity", "add", "ai_agent", "rogue", "--owner", "ops@example.com",
            "--scope", "env=prod", "--scope", "zone=db", "--parent", "ai_agent/worker",
            ok=False)
    assert p.returncode == 1 and "zone=db not in the parent's scope" in p.stderr
    tree = run(env, "agent", "tree", "ai_agent/planner").stdout.splitlines()
    assert tree[0].startswith("ai_agent/planner [active] owner ops@example.com")
    assert tree[1].strip().startswith("└─ ai_agent/worker [active]")


def _openssl(*args: str) -> str:
    from tests.interop import require_tool

    p = subprocess.run([require_tool("openssl", "openssl"), *args], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_ca_init_sets_up_a_fresh_machine_and_replaces_only_with_replace(
        env: dict[str, str], tmp_path: Path) -> None:
    """``ca init --key-type`` is the explicit form of init's CA: on a fresh machine it
    sets up the database too; once a CA exists it is refused unless ``--replace``, which
    sets the old one aside; never once the CA has issued a certificate."""
    said = run(env, "ca", "init", "--key-type", "p384").stdout
    assert "database at migration" in said and "CA created" in said and "(p384)" in said
    ca = tmp_path / "data" / "ca"
    assert "NIST CURVE: P-384" in _openssl("x509", "-in", str(ca / "issuing.pem"), "-noout",
                                           "-text")
    assert "CA created" not in run(env, "init").stdout  # init keeps it
    first = (ca / "root.pem").read_bytes()
    again = run(env, "ca", "init", "--key-type", "ed25519", ok=False)
    assert again.returncode == 1 and "add --replace" in again.stderr
    other = run(env, "ca", "init", "--trust-domain", "other.example", "--replace", ok=False)
    assert other.returncode == 1 and "differs from the configured" in other.stderr
    assert (ca / "root.pem").read_bytes() == first and not list(ca.glob("replaced-*"))
    said = run(env, "ca", "init", "--key-type", "ed25519", "--replace").stdout
    assert "set aside in" in said and "(ed25519)" in said
    kept = next(ca.glob("replaced-*"))
    assert (kept / "root.pem").read_bytes() == first
    # The service's own certificates come from the new CA.
    _openssl("verify", "-CAfile", str(ca / "root.pem"), "-untrusted", str(ca / "chain.pem"),
             str(ca / "ocsp.pem"), str(tmp_path / "data" / "radius" / "server.pem"))


def test_ca_export_root_keeps_the_key_until_the_copy_is_on_disk(
        env: dict[str, str], tmp_path: Path) -> None:
    run(env, "init")
    key = tmp_path / "data" / "ca" / "root.key"
    original = key.read_bytes()
    # A copy that cannot be written, or would overwrite a file: refused, the key stays.
    lost = run(env, "ca", "export-root", "-o", str(tmp_path / "no" / "such" / "dir" / "k"),
               "--offline", ok=False)
    assert lost.returncode == 1 and "the root key stays" in lost.stderr, lost.stderr
    (tmp_path / "taken.key").write_text("something else\n")
    taken = run(env, "ca", "export-root", "-o", str(tmp_path / "taken.key"), "--offline",
                ok=False)
    assert taken.returncode == 1 and "not written over a file" in taken.stderr
    onto_itself = run(env, "ca", "export-root", "-o", str(key), "--offline", ok=False)
    assert onto_itself.returncode == 1
    assert key.read_bytes() == original
    assert (tmp_path / "taken.key").read_text() == "something else\n"
    # Off the machine: the copy is private, decrypts with the passphrase to the root's key.
    out = tmp_path / "offline-root.key"
    said = run(env, "ca", "export-root", "-o", str(out), "--offline").stdout
    assert "removed it from this machine" in said and not key.exists()
    assert out.stat().st_mode & 0o777 == 0o600 and out.read_bytes() == original
    passphrase = f"file:{tmp_path / 'data' / 'ca' / 'passphrase'}"
    assert _openssl("pkey", "-in", str(out), "-passin", passphrase, "-pubout") == \
        _openssl("x509", "-in", str(tmp_path / "data" / "ca" / "root.pem"), "-noout", "-pubkey")
    gone = run(env, "ca", "export-root", "-o", str(tmp_path / "again.key"), ok=False)
    assert gone.returncode == 1 and "not on this machine" in gone.stderr

    # Years later the issuing CA is renewed with the root key brought back for the
    # occasion: same name and key, a later notAfter; nothing changes without the key.
    ca = tmp_path / "data" / "ca"
    old = {p.name: p.read_bytes() for p in ca.iterdir() if p.is_file()}
    without = run(env, "ca", "renew", ok=False)
    assert without.returncode == 1 and "the root key is not at" in without.stderr
    wrong = tmp_path / "wrong-root.key"
    wrong.write_bytes(old["issuing.key"])  # a key the passphrase opens, not the root's
    refused = run(env, "ca", "renew", "--root-key", str(wrong), ok=False)
    assert refused.returncode == 1 and "is not the key of" in refused.stderr, refused.stderr
    assert {p.name: p.read_bytes() for p in ca.iterdir() if p.is_file()} == old
    time.sleep(1.1)  # notAfter has whole seconds: the renewal must end later
    said = run(env, "ca", "renew", "--root-key", str(out)).stdout
    assert "renewed with the same key" in said, said

    def x509_field(path: Path, *flags: str) -> str:
        return _openssl("x509", "-in", str(path), "-noout", *flags)
    for flags in (("-subject",), ("-pubkey",), ("-ext", "nameConstraints,basicConstraints,"
                                                      "subjectKeyIdentifier")):
        assert x509_field(ca / "issuing.pem", *flags) == x509_field(
            next(ca.glob("issuing-until-*.pem")), *flags)
    assert x509_field(ca / "issuing.pem", "-serial") != x509_field(
        next(ca.glob("issuing-until-*.pem")), "-serial")

    def ends(path: Path) -> dt.datetime:
        text = x509_field(path, "-enddate").strip().split("=", 1)[1]
        return dt.datetime.strptime(text, "%b %d %H:%M:%S %Y GMT")
    assert ends(ca / "issuing.pem") > ends(next(ca.glob("issuing-until-*.pem")))
    # What the old certificate issued verifies under the renewed one (the OCSP responder
    # made at init is still on the old file's side), and so does what it issues now.
    (tmp_path / "old-ocsp.pem").write_bytes(old["ocsp.pem"])
    for leaf in (tmp_path / "old-ocsp.pem", ca / "ocsp.pem",
                 tmp_path / "data" / "radius" / "server.pem"):
        _openssl("verify", "-CAfile", str(ca / "root.pem"), "-untrusted",
                 str(ca / "chain.pem"), str(leaf))
    assert (ca / "chain.pem").read_bytes() == (ca / "issuing.pem").read_bytes()
    assert not key.exists()  # the root key stays offline
    shown = run(env, "ca", "show").stdout
    assert "root key      offline" in shown, shown
    issuing_row = next(line for line in shown.splitlines() if line.startswith("issuing "))
    assert ends(ca / "issuing.pem").strftime("%Y-%m-%dT%H:%M:%SZ") in issuing_row


def test_every_command_and_option_explains_itself() -> None:
    """``nhi-nac X --help`` is what an operator reads first: every subcommand, at every
    level, has a line in its parent's help, and every --option says what it does."""
    import argparse

    from nhi_nac.cli import build_parser

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {c.dest for c in action._choices_actions if c.help}
                for name, sub in action.choices.items():
                    if name not in listed:
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif action.option_strings and not action.help:
                missing.append(f"{path} {action.option_strings[-1]}")

    walk(build_parser(), "nhi-nac")
    assert missing == []
    listing = run({**os.environ}, "cert", "--help").stdout
    for line in ("list", "show", "revoke", "release"):
        assert any(row.split()[:1] == [line] and len(row.split()) > 1
                   for row in listing.splitlines()), listing


@pytest.mark.parametrize("command", ["config", "init"])  # more than a buffer; a few lines
def test_a_reader_that_goes_away_ends_the_command_quietly(env: dict[str, str],
                                                          command: str) -> None:
    """`nhi-nac … | head`: when the reader closes the pipe, the command ends with the
    shell's SIGPIPE status (141), not a Python traceback on the terminal."""
    p = subprocess.Popen([*NHI, command], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    p.stdout.close()  # before the command has started writing
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (141, "")
