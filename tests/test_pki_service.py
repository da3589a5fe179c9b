"""The CA through the running service, checked with real peers.

A workload enrolls with `nhi-nac enroll` and a bootstrap token; `openssl verify`
accepts the chain; the same certificate authenticates over EAP-TLS with `eapol_test`;
revocation shows in the CRL (`openssl verify -crl_check`), in OCSP (`openssl ocsp`
against the HTTP responder) and in RADIUS (the next EAP-TLS is rejected).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop import require_tool
from tests.service_process import NHI, SECRET, Service, service_env

pytestmark = pytest.mark.interop


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(service_env(tmp_path), tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "alice@example.com", "--name", "Alice", "--team", "platform")
    svc.cli("identity", "add", "workload", "billing", "--owner", "alice@example.com",
            "--scope", "env=prod")
    svc.cli("identity", "add", "device", "cam-7", "--owner", "alice@example.com",
            "--scope", "function=camera")
    svc.cli("nas", "add", "sw-test", "--address", "127.0.0.1", "--secret", SECRET)
    svc.start()
    yield svc
    if svc.proc is not None and svc.proc.poll() is None:
        svc.stop()


def enroll(svc: Service, token: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NHI, "enroll", "--server", f"http://127.0.0.1:{svc.api}",
                           "--token", token, "--out", str(out), *extra], env=svc.env,
                          capture_output=True, text=True, timeout=60)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("openssl", "openssl")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def fetch(svc: Service, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.api}{path}", timeout=10) as r:
        data: bytes = r.read()
        return data


def test_enroll_verify_renew_revoke(service: Service, tmp_path: Path) -> None:
    token = service.cli("token", "create", "workload/billing", "--ttl", "10m").strip()
    out = tmp_path / "creds"
    p = enroll(service, token, out)
    assert p.returncode == 0, p.stderr
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    verify = openssl("verify", "-CAfile", str(out / "ca.pem"), "-untrusted",
                     str(out / "chain.pem"), str(out / "cert.pem"))
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stderr
    text = openssl("x509", "-in", str(out / "cert.pem"), "-noout", "-text").stdout
    assert "URI:spiffe://nhi.example/workload/billing" in text
    assert "TLS Web Client Authentication, TLS Web Server Authentication" in text
    # The token was used: a second enrollment with it is refused, and nothing is stored.
    again = enroll(service, token, tmp_path / "again")
    assert again.returncode == 1 and "already used" in again.stderr
    assert not (tmp_path / "again" / "cert.pem").exists()
    first = json.loads(service.cli("--json", "cert", "list", "--identity", "workload/billing"))
    assert len(first) == 1
    # Renewal proves possession of the current certificate; no token.
    p = subprocess.run([*NHI, "enroll", "--renew", "--server", f"http://127.0.0.1:{service.api}",
                        "--out", str(out)], env=service.env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    certs = json.loads(service.cli("--json", "cert", "list", "--identity", "workload/billing"))
    assert len(certs) == 2
    serial = next(c["serial"] for c in certs if c["serial"] != first[0]["serial"])
    # OCSP says good, revocation, then revoked; the CRL lists it.
    ca, chain, cert = out / "ca.pem", out / "chain.pem", out / "cert.pem"
    issuer = tmp_path / "issuer.pem"
    issuer.write_text(chain.read_text().split("-----END CERTIFICATE-----")[0]
                      + "-----END CERTIFICATE-----\n")
    url = f"http://127.0.0.1:{service.api}/pki/v1/ocsp"
    good = openssl("ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url", url,
                   "-CAfile", str(ca), "-VAfile", str(service.data / "ca" / "ocsp.pem"))
    assert f"{cert}: good" in good.stdout, good.stdout + good.stderr
    service.cli("cert", "revoke", serial, "--reason", "keyCompromise")
    revoked = openssl("ocsp", "-issuer", str(issuer), "-cert", str(cert), "-url", url,
                      "-CAfile", str(ca), "-VAfile", str(service.data / "ca" / "ocsp.pem"))
    assert f"{cert}: revoked" in revoked.stdout, revoked.stdout + revoked.stderr
    assert "Reason: keyCompromise" in revoked.stdout
    crl = tmp_path / "crl.pem"
    crl.write_bytes(fetch(service, "/pki/v1/crl.pem"))
    check = openssl("verify", "-crl_check", "-CAfile", str(ca), "-untrusted", str(chain),
                    "-CRLfile", str(crl), str(cert))
    assert check.returncode != 0 and "certificate revoked" in (check.stdout + check.stderr)
    # A revoked certificate cannot renew.
    p = subprocess.run([*NHI, "enroll", "--renew", "--server", f"http://127.0.0.1:{service.api}",
                        "--out", str(out)], env=service.env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "revoked" in p.stderr


def test_a_revocation_raised_to_key_compromise_reaches_ocsp_and_the_crl(
        service: Service, tmp_path: Path) -> None:
    # Revoked as superseded from the CLI (another process), then found compromised: the
    # running service's OCSP and the published CRL say keyCompromise, revoked when it was.
    token = service.cli("token", "create", "workload/billing", "--ttl", "10m").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out).returncode == 0
    serial = openssl("x509", "-in", str(out / "cert.pem"), "-noout", "-serial").stdout \
        .strip().split("=")[1].lower()
    chain = (out / "chain.pem").read_text()
    issuer = tmp_path / "issuer.pem"
    issuer.write_text(chain.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")

    def ocsp() -> str:
        return openssl("ocsp", "-issuer", str(issuer), "-cert", str(out / "cert.pem"),
                       "-url", f"http://127.0.0.1:{service.api}/pki/v1/ocsp",
                       "-CAfile", str(out / "ca.pem"),
                       "-VAfile", str(service.data / "ca" / "ocsp.pem")).stdout

    def ocsp_until(reason: str) -> str:
        deadline = time.monotonic() + 15  # the service looks for changes every 2 s
        while True:
            said = ocsp()
            if f"Reason: {reason}" in said or time.monotonic() > deadline:
                return said

    def crl_text() -> str:
        (tmp_path / "crl.pem").write_bytes(fetch(service, "/pki/v1/crl.pem"))
        return openssl("crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text").stdout

    service.cli("cert", "revoke", serial, "--reason", "superseded")
    said = ocsp_until("superseded")
    assert "revoked" in said and "Reason: superseded" in said, said
    when = said.split("Revocation Time: ")[1].splitlines()[0]
    assert "Superseded" in crl_text()
    time.sleep(1.1)  # a later second, so a new revocation date would show
    refused = subprocess.run([*NHI, "cert", "revoke", serial, "--reason", "cessationOfOperation"],
                             env=service.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "already revoked (superseded)" in refused.stderr
    service.cli("cert", "revoke", serial, "--reason", "keyCompromise")
    said = ocsp_until("keyCompromise")
    assert "Reason: keyCompromise" in said and f"Revocation Time: {when}" in said, said
    text = crl_text()
    assert "Key Compromise" in text and "Superseded" not in text, text
    refused = subprocess.run([*NHI, "cert", "revoke", serial, "--reason", "keyCompromise"],
                             env=service.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "already revoked (keyCompromise)" in refused.stderr


def test_a_workload_asks_for_its_dns_names_and_keeps_them_on_renewal(
        service: Service, tmp_path: Path) -> None:
    service.cli("identity", "add", "workload", "web", "--owner", "alice@example.com",
                "--scope", "dns=web.example.com")
    out = tmp_path / "web"

    def verify_host(host: str) -> subprocess.CompletedProcess[str]:
        return openssl("verify", "-CAfile", str(out / "ca.pem"), "-untrusted",
                       str(out / "chain.pem"), "-purpose", "sslserver", "-verify_hostname",
                       host, str(out / "cert.pem"))

    token = service.cli("token", "create", "workload/web").strip()
    outside = enroll(service, token, out, "--dns", "web.example.com", "--dns", "evil.example.com")
    assert outside.returncode == 1 and "'evil.example.com'" in outside.stderr
    assert "scope does not allow" in outside.stderr and not (out / "cert.pem").exists()
    # The refusal left the token usable. Enrolled as the boot unit does it, with its
    # command line (systemd/nhi-nac-enroll@.service) and the env file's values:
    unit = (Path(__file__).resolve().parent.parent / "systemd" / "nhi-nac-enroll@.service")
    exec_start = next(line for line in unit.read_text().splitlines()
                      if line.startswith("ExecStart=/bin/sh -c '"))
    script = exec_start.removeprefix("ExecStart=/bin/sh -c '").removesuffix("'").replace(
        "/usr/bin/nhi-nac", " ".join(NHI))
    unit_env = {**service.env, "NHI_ENROLL_SERVER": f"http://127.0.0.1:{service.api}",
                "NHI_ENROLL_OUT": str(out), "NHI_ENROLL_TOKEN": token,
                "NHI_ENROLL_ARGS": "--dns web.example.com"}
    p = subprocess.run(["/bin/sh", "-c", script], env=unit_env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "enrolled workload/web" in p.stdout, p.stderr
    assert verify_host("web.example.com").returncode == 0
    p = subprocess.run(["/bin/sh", "-c", script], env=unit_env, capture_output=True,
                       text=True, timeout=120)  # the next boot: renewal, not due yet
    assert p.returncode == 0 and "not due yet" in p.stdout, p.stderr
    renew = [*NHI, "enroll", "--renew", "--server", f"http://127.0.0.1:{service.api}",
             "--out", str(out)]
    first = (out / "cert.pem").read_bytes()
    p = subprocess.run(renew, env=service.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (out / "cert.pem").read_bytes() != first
    assert verify_host("web.example.com").returncode == 0  # the renewal kept the name
    kept = (out / "cert.pem").read_bytes()
    p = subprocess.run([*renew, "--dns", "other.example.com"], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "'other.example.com'" in p.stderr
    assert (out / "cert.pem").read_bytes() == kept


def test_refusals_store_nothing(service: Service, tmp_path: Path) -> None:
    # Profile maximum: a workload certificate is at most 7 days; refused, not trimmed.
    token = service.cli("token", "create", "workload/billing").strip()
    p = enroll(service, token, tmp_path / "x", "--validity", "30d")
    assert p.returncode == 1 and "exceeds the workload profile's maximum" in p.stderr
    assert json.loads(service.cli("--json", "cert", "list")) == []
    # The refused attempt did not burn the token.
    p = enroll(service, token, tmp_path / "x", "--validity", "2d")
    assert p.returncode == 0, p.stderr
    # A suspended identity gets nothing, even with a valid token.
    token = service.cli("token", "create", "device/cam-7").strip()
    service.cli("identity", "suspend", "device/cam-7")
    p = enroll(service, token, tmp_path / "y")
    assert p.returncode == 1 and "suspended" in p.stderr
    assert len(json.loads(service.cli("--json", "cert", "list"))) == 1


def eapol(service: Service, creds: Path, tmp_path: Path, tls13: bool = False,
          fragment: int | None = None) -> str:
    tool = require_tool("eapol_test", "eapoltest")
    conf = tmp_path / "eapol.conf"
    fullchain = tmp_path / "fullchain.pem"
    fullchain.write_text((creds / "cert.pem").read_text() + (creds / "chain.pem").read_text())
    conf.write_text(f"""network={{
    key_mgmt=IEEE8021X
    eap=TLS
    identity="device/cam-7"
    ca_cert="{creds / 'ca.pem'}"
    client_cert="{fullchain}"
    private_key="{creds / 'key.pem'}"
    eapol_flags=0
    {'phase1="tls_disable_tlsv1_3=0"' if tls13 else ''}
    {f'fragment_size={fragment}' if fragment else ''}
}}
""")
    p = subprocess.run([tool, "-c", str(conf), "-a", "127.0.0.1", "-p", str(service.auth),
                        "-s", SECRET, "-r", "0", "-t", "15"], capture_output=True, text=True,
                       timeout=60)
    return p.stdout + p.stderr


def test_eap_tls_with_an_enrolled_device_certificate(service: Service, tmp_path: Path) -> None:
    token = service.cli("token", "create", "device/cam-7").strip()
    creds = tmp_path / "cam"
    p = enroll(service, token, creds)
    assert p.returncode == 0, p.stderr
    for tls13, fragment in ((False, None), (True, None), (False, 300)):
        out = eapol(service, creds, tmp_path, tls13, fragment)
        assert "SUCCESS" in out and "MPPE keys OK" in out, out
        assert "Tunnel-Private-Group-Id" in out or "Attribute 81" in out, out
    # The starter map puts function=camera devices on the iot segment, VLAN 130.
    # (Admissions are written in batches just after the reply.)
    deadline = time.monotonic() + 10
    rows: list[tuple[int]] = []
    while time.monotonic() < deadline and len(rows) < 3:
        with service.db() as conn:
            rows = conn.execute("SELECT vlan FROM admissions WHERE method = 'eap-tls' "
                                "AND decision = 'accept'").fetchall()
        time.sleep(0.2)
    assert [v for (v,) in rows] == [130, 130, 130]
    # A new map is taken by the running server: the next EAP-TLS gets its VLAN.
    current = json.loads(service.cli("--json", "segments", "show"))["text"]
    new_map = tmp_path / "map.yaml"
    new_map.write_text(current.replace("vlan: 130", "vlan: 131", 1))
    service.cli("segments", "apply", str(new_map), "--yes")
    time.sleep(1.5)
    assert "SUCCESS" in eapol(service, creds, tmp_path)
    deadline = time.monotonic() + 10
    last: tuple[int] | None = None
    while time.monotonic() < deadline and last != (131,):
        with service.db() as conn:
            last = conn.execute("SELECT vlan FROM admissions WHERE method = 'eap-tls' "
                                "ORDER BY id DESC LIMIT 1").fetchone()
        time.sleep(0.2)
    assert last == (131,)
    # On hold, the device is refused; taken off hold, it is admitted again (both by
    # identity, as an admin holds a device under investigation and then clears it).
    serial = json.loads(service.cli("--json", "cert", "list", "--identity",
                                    "device/cam-7"))[0]["serial"]
    service.cli("cert", "revoke", "--identity", "device/cam-7", "--reason", "certificateHold")
    for expected in ("FAILURE", "SUCCESS"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = eapol(service, creds, tmp_path)
            if expected in out:
                break
            time.sleep(0.5)
        assert expected in out, (expected, out)
        if expected == "FAILURE":
            assert json.loads(service.cli("--json", "cert", "release", "--identity",
                                          "device/cam-7")) == {"released": [serial]}
    service.cli("cert", "revoke", "--identity", "device/cam-7", "--reason", "keyCompromise")
    deadline = time.monotonic() + 10
    out = ""
    while time.monotonic() < deadline:
        out = eapol(service, creds, tmp_path)
        if "FAILURE" in out:
            break
        time.sleep(0.5)
    assert "SUCCESS" not in out and "FAILURE" in out, out
    time.sleep(1)
    with service.db() as conn:
        last = conn.execute("SELECT decision, reasons FROM admissions ORDER BY id DESC "
                            "LIMIT 1").fetchone()
    assert last[0] == "reject" and "revoked" in last[1]


def test_renew_if_due_leaves_a_fresh_certificate(service: Service, tmp_path: Path) -> None:
    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out).returncode == 0
    before = (out / "cert.pem").read_bytes()
    p = subprocess.run([*NHI, "enroll", "--renew", "--if-due", "--server",
                        f"http://127.0.0.1:{service.api}", "--out", str(out)], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "not due yet" in p.stdout
    assert (out / "cert.pem").read_bytes() == before
    # Once revoked, the hourly timer's run fails with the reason (OCSP), not hours later.
    service.cli("cert", "revoke", "--identity", "workload/billing", "--reason", "superseded")
    p = subprocess.run([*NHI, "enroll", "--renew", "--if-due", "--server",
                        f"http://127.0.0.1:{service.api}", "--out", str(out)], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "revoked at" in p.stderr and "(superseded)" in p.stderr, p
    assert (out / "cert.pem").read_bytes() == before


def test_renew_loop_renews_by_two_thirds(service: Service, tmp_path: Path) -> None:
    from nhi_nac.enroll_client import STATUS_CHECK_SECONDS, renew_loop

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out, "--validity", "3h").returncode == 0
    first = (out / "cert.pem").read_bytes()
    waits: dict[bytes, list[float]] = {}

    def fake_clock_sleep(seconds: float) -> None:
        """Stands in for time.sleep: record the wait, by the certificate it is for,
        instead of waiting two hours."""
        waits.setdefault((out / "cert.pem").read_bytes(), []).append(seconds)

    renew_loop(f"http://127.0.0.1:{service.api}", str(out), None, max_rounds=2,
               sleep=fake_clock_sleep)
    # The first certificate's renewal time: between 60% and two thirds of 3 h, minus the
    # seconds already elapsed (the fake clock does not move), waited in steps of
    # STATUS_CHECK_SECONDS with an OCSP check (good) between them.
    assert 0.6 * 3 * 3600 - 60 < sum(waits[first]) <= 2 * 3600
    assert waits[first][:-1] == [STATUS_CHECK_SECONDS] * (len(waits[first]) - 1)
    assert 0 < waits[first][-1] <= STATUS_CHECK_SECONDS
    # Then one wait for the renewed certificate (24 h, the profile's default), and a
    # third certificate on disk.
    assert len(waits) == 2 and (out / "cert.pem").read_bytes() not in waits
    certs = json.loads(service.cli("--json", "cert", "list", "--identity", "workload/billing"))
    assert len(certs) == 3



def test_renew_loop_backs_off_with_jitter_while_the_ca_is_down(
        service: Service, tmp_path: Path) -> None:
    import socket

    from nhi_nac.enroll_client import RETRY_SECONDS, renew_loop

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out, "--validity", "3h").returncode == 0
    with socket.socket() as s:  # a loopback port with nothing listening: the CA is down
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    waits: list[float] = []

    class Enough(Exception):
        pass

    def fake_clock_sleep(seconds: float) -> None:
        """Stands in for time.sleep: record the wait (the clock does not move, so each
        round waits for the renewal time again, then for the retry); stop after six."""
        waits.append(seconds)
        if len(waits) == 12:
            raise Enough

    draws = iter([0.0, 1.0, 0.5, 0.25, 0.75, 0.9])
    with pytest.raises(Enough):
        renew_loop(f"http://127.0.0.1:{dead}", str(out), None, sleep=fake_clock_sleep,
                   rand=lambda: next(draws), check_every=float("inf"))
    assert all(w > 3600 for w in waits[0::2])  # the renewal time, over an hour away
    retries = waits[1::2]
    ceilings = [RETRY_SECONDS[min(i, len(RETRY_SECONDS) - 1)] for i in range(len(retries))]
    # Each retry waits a random point in the upper half of its growing ceiling.
    assert retries == [round(c * (0.5 + d / 2), 1)
                       for c, d in zip(ceilings, [0.0, 1.0, 0.5, 0.25, 0.75, 0.9], strict=True)]
    assert all(c / 2 <= w <= c for c, w in zip(ceilings, retries, strict=True))


def test_enrollment_at_boot_waits_for_the_ca_and_a_refusal_does_not(
        service: Service, tmp_path: Path) -> None:
    """The CA is down when the host boots: ``enroll --retry-for`` tries again after a
    randomised delay and enrolls once the CA is back. With no time left to wait it exits
    75 (EX_TEMPFAIL: the unit's timer tries later) having written nothing; a refusal
    exits 1 at once, without retrying."""
    token = service.cli("token", "create", "workload/billing").strip()
    service.stop()
    out = tmp_path / "creds"
    gone = enroll(service, token, out, "--retry-for", "1s")  # first wait is 2.5 s or more
    assert (gone.returncode, "cannot reach" in gone.stderr) == (75, True), gone.stderr
    assert "retrying" not in gone.stderr and not out.exists()

    client = subprocess.Popen(
        [*NHI, "enroll", "--server", f"http://127.0.0.1:{service.api}", "--token", token,
         "--out", str(out), "--retry-for", "2m"],
        env=service.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stderr is not None
        said = ""
        for _ in range(20):  # the first attempt fails: the CA is down
            said = client.stderr.readline()
            if "retrying in" in said or not said:
                break
        assert "cannot reach" in said and "retrying in" in said, said
        service.start()  # the CA comes back while the host waits
        _, err = client.communicate(timeout=90)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err
    verify = openssl("verify", "-CAfile", str(out / "ca.pem"), "-untrusted",
                     str(out / "chain.pem"), str(out / "cert.pem"))
    assert verify.returncode == 0, verify.stderr

    again = enroll(service, token, tmp_path / "again", "--retry-for", "2m")
    assert (again.returncode, "already used" in again.stderr) == (1, True), again.stderr
    assert "retrying" not in again.stderr and not (tmp_path / "again").exists()


def test_retrying_waits_at_least_what_the_server_asked_and_stops_at_the_deadline() -> None:
    from nhi_nac.enroll_client import Refused, Unreachable, retrying

    now = [0.0]
    waits: list[float] = []

    def fake_clock_sleep(seconds: float) -> None:
        """Stands in for time.sleep, moving the stand-in clock instead of waiting."""
        waits.append(seconds)
        now[0] += seconds

    answers = iter([Unreachable("busy", retry_after=30), Unreachable("down"), "issued"])

    def attempt() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retrying(attempt, 3600, sleep=fake_clock_sleep, rand=lambda: 0.0,
                    clock=lambda: now[0]) == "issued"
    assert waits == [30.0, 7.5]  # Retry-After over its own 2.5 s; then 15 s' lower half
    # Past the deadline the last failure is raised; a refusal is never retried.
    waits.clear()
    with pytest.raises(Unreachable, match="down"):
        retrying(lambda: (_ for _ in ()).throw(Unreachable("down")), 20,
                 sleep=fake_clock_sleep, rand=lambda: 1.0, clock=lambda: now[0])
    assert waits == [5.0, 15.0]  # 5 + 15 = 20 s; the next (60 s) would pass it
    with pytest.raises(Refused):
        retrying(lambda: (_ for _ in ()).throw(Refused("revoked")), 3600,
                 sleep=fake_clock_sleep)
    assert waits == [5.0, 15.0]


def test_renew_loop_stops_with_the_reason_when_the_ca_refuses(
        service: Service, tmp_path: Path) -> None:
    from nhi_nac.enroll_client import Refused, renew_loop

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out, "--validity", "3h").returncode == 0
    service.cli("cert", "revoke", "--identity", "workload/billing", "--reason", "keyCompromise")
    waits: list[float] = []

    def fake_clock_sleep(seconds: float) -> None:
        """Stands in for time.sleep: record the wait instead of waiting two hours."""
        waits.append(seconds)

    with pytest.raises(Refused, match="revoked"):
        # No checks while waiting: the renewal itself is refused.
        renew_loop(f"http://127.0.0.1:{service.api}", str(out), None, sleep=fake_clock_sleep,
                   check_every=float("inf"))
    assert len(waits) == 1  # the wait for the renewal time; no retry of a refusal


def test_renew_loop_stops_soon_after_a_revocation(service: Service, tmp_path: Path) -> None:
    """While it waits to renew, the loop asks OCSP every STATUS_CHECK_SECONDS; a revoked
    certificate ends it with the reason then, not at the renewal time hours later."""
    from nhi_nac.enroll_client import STATUS_CHECK_SECONDS, Refused, renew_loop

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out, "--validity", "3h").returncode == 0
    before = (out / "cert.pem").read_bytes()
    waits: list[float] = []

    def fake_clock_sleep(seconds: float) -> None:
        """Stands in for time.sleep: record the wait; during the third, the certificate
        is revoked (a person acts while the workload waits)."""
        waits.append(seconds)
        if len(waits) == 3:
            service.cli("cert", "revoke", "--identity", "workload/billing",
                        "--reason", "keyCompromise")

    with pytest.raises(Refused, match=r"revoked at .*\(key_compromise\); enroll again"):
        renew_loop(f"http://127.0.0.1:{service.api}", str(out), None, sleep=fake_clock_sleep)
    # Two checks said good; the third, right after the revocation, said revoked.
    assert waits == [STATUS_CHECK_SECONDS] * 3
    assert (out / "cert.pem").read_bytes() == before  # no renewal was attempted


def test_a_held_certificate_says_so_and_renews_once_released(
        service: Service, tmp_path: Path) -> None:
    from nhi_nac.enroll_client import Refused, ensure_not_revoked

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out).returncode == 0
    serial = openssl("x509", "-in", str(out / "cert.pem"), "-noout", "-serial").stdout \
        .strip().split("=")[1].lower().lstrip("0")
    server = f"http://127.0.0.1:{service.api}"
    service.cli("cert", "revoke", serial, "--reason", "certificateHold")
    with pytest.raises(Refused, match=rf"is on hold since .*; it renews again once an admin "
                                      rf"releases it \(nhi-nac cert release {serial}\)"):
        ensure_not_revoked(server, str(out), None)
    renew = [*NHI, "enroll", "--renew", "--server", server, "--out", str(out)]
    p = subprocess.run(renew, env=service.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "revoked" in p.stderr  # held: no renewal
    service.cli("cert", "release", serial)
    deadline = time.monotonic() + 10  # the service looks for changes every 2 s
    while True:
        try:
            ensure_not_revoked(server, str(out), None)
            break
        except Refused:
            assert time.monotonic() < deadline, "still on hold after the release"
            time.sleep(0.3)
    p = subprocess.run(renew, env=service.env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def _get(svc: Service, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", svc.api, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_crl_and_ocsp_get_carry_http_caching_headers(service: Service, tmp_path: Path) -> None:
    import base64
    import email.utils
    import urllib.parse

    token = service.cli("token", "create", "workload/billing").strip()
    out = tmp_path / "creds"
    assert enroll(service, token, out).returncode == 0
    # The CRL: valid until its nextUpdate, and a conditional GET that holds it gets 304.
    status, h, der = _get(service, "/pki/v1/crl")
    assert status == 200 and h["content-type"] == "application/pkix-crl"
    text = subprocess.run([require_tool("openssl", "openssl"), "crl", "-inform", "DER",
                           "-noout", "-lastupdate", "-nextupdate"], input=der,
                          capture_output=True, check=True).stdout.decode()
    last = dt.datetime.strptime(text.split("lastUpdate=")[1].split("\n")[0],
                                "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)
    nxt = dt.datetime.strptime(text.split("nextUpdate=")[1].split("\n")[0],
                               "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)
    assert email.utils.parsedate_to_datetime(h["last-modified"]) == last
    assert email.utils.parsedate_to_datetime(h["expires"]) == nxt
    max_age = int(h["cache-control"].split("max-age=")[1].split(",")[0])
    assert (nxt - dt.datetime.now(dt.UTC)).total_seconds() - 60 < max_age
    assert "must-revalidate" in h["cache-control"]
    assert _get(service, "/pki/v1/crl", **{"If-None-Match": h["etag"]})[0] == 304
    assert _get(service, "/pki/v1/crl", **{"If-Modified-Since": h["last-modified"]})[0] == 304
    # A revocation re-signs it: the old ETag no longer matches, the new CRL lists the serial.
    serial = json.loads(service.cli("--json", "cert", "list"))[0]["serial"]
    service.cli("cert", "revoke", serial, "--reason", "superseded")
    status, h2, der2 = _get(service, "/pki/v1/crl", **{"If-None-Match": h["etag"]})
    assert status == 200 and h2["etag"] != h["etag"]
    listed = subprocess.run([require_tool("openssl", "openssl"), "crl", "-inform", "DER",
                             "-noout", "-text"], input=der2, capture_output=True,
                            check=True).stdout.decode()
    assert serial.upper() in listed.replace(":", "").replace(" ", "").upper()
    # OCSP over GET, without a nonce: cacheable until its nextUpdate, 304 when held.
    chain = (out / "chain.pem").read_text()
    issuer = tmp_path / "issuer.pem"
    issuer.write_text(chain.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
    req = tmp_path / "req.der"
    made = openssl("ocsp", "-issuer", str(issuer), "-cert", str(out / "cert.pem"), "-no_nonce",
                   "-reqout", str(req))
    assert made.returncode == 0, made.stderr
    path = "/pki/v1/ocsp/" + urllib.parse.quote(base64.b64encode(req.read_bytes()).decode(),
                                                safe="")
    status, h3, resp = _get(service, path)
    assert status == 200 and h3["content-type"] == "application/ocsp-response"
    assert "max-age=" in h3["cache-control"] and "public" in h3["cache-control"]
    (tmp_path / "resp.der").write_bytes(resp)
    shown = openssl("ocsp", "-respin", str(tmp_path / "resp.der"), "-resp_text", "-noverify")
    assert "Cert Status: revoked" in shown.stdout
    assert _get(service, path, **{"If-None-Match": h3["etag"]})[0] == 304


def test_https_enrollment_trusts_the_root_by_its_fingerprint(tmp_path: Path) -> None:
    """The API serves HTTPS with a certificate from its own CA; a new host learns the
    root from its fingerprint (given with the token), enrolls, then renews trusting the
    root it saved; openssl and curl verify the server against that root."""
    svc = Service(service_env(tmp_path), tmp_path / "data")
    svc.env["NHI_NAC_API_TLS_NAMES"] = '["127.0.0.1", "nac.nhi.example"]'
    svc.cli("init")
    svc.cli("owner", "add", "alice@example.com", "--name", "Alice")
    svc.cli("identity", "add", "workload", "billing", "--owner", "alice@example.com")
    svc.start()
    try:
        fingerprint = svc.cli("ca", "fingerprint").strip()
        root = tmp_path / "data" / "ca" / "root.pem"
        assert fingerprint == openssl("x509", "-in", str(root), "-noout", "-fingerprint",
                                      "-sha256").stdout.split("=")[1].strip().replace(
                                          ":", "").lower()
        # openssl's own TLS client verifies the served chain and the address.
        shake = subprocess.run([require_tool("openssl", "openssl"), "s_client", "-connect",
                                f"127.0.0.1:{svc.api}", "-CAfile", str(root),
                                "-verify_return_error", "-verify_ip", "127.0.0.1"],
                               input="", capture_output=True, text=True, timeout=30)
        assert "Verify return code: 0 (ok)" in shake.stdout, shake.stdout + shake.stderr
        curl = subprocess.run([require_tool("curl", "curl"), "-sf", "--cacert", str(root),
                               f"{svc.base}/healthz"], capture_output=True, text=True,
                              timeout=30)
        assert curl.returncode == 0 and '"ok"' in curl.stdout
        # Plain HTTP to the HTTPS port gets nothing useful.
        with pytest.raises(OSError):
            fetch(svc, "/healthz")

        token = svc.cli("token", "create", "workload/billing").strip()
        out = tmp_path / "creds"

        def enroll_with(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*NHI, "enroll", "--server", svc.base, "--out", str(out),
                                   *extra], env=svc.env, capture_output=True, text=True,
                                  timeout=60)

        wrong = enroll_with("--token", token, "--root-fingerprint", "ab" * 32)
        assert wrong.returncode == 1 and "refusing to trust it" in wrong.stderr
        assert not (out / "cert.pem").exists()
        untrusted = enroll_with("--token", token)  # the system trust store knows no such CA
        assert untrusted.returncode == 1 and "certificate verify failed" in untrusted.stderr
        done = enroll_with("--token", token, "--root-fingerprint", fingerprint.upper())
        assert done.returncode == 0, done.stderr
        assert (out / "ca.pem").read_bytes() == root.read_bytes()
        renewed = enroll_with("--renew")  # trusts out/ca.pem, learned at enrollment
        assert renewed.returncode == 0, renewed.stderr
        certs = json.loads(svc.cli("--json", "cert", "list", "--identity", "workload/billing"))
        assert len(certs) == 2
        # Certificates name https:// CRL and OCSP locations on this server.
        text = openssl("x509", "-in", str(out / "cert.pem"), "-noout", "-text").stdout
        assert f"URI:https://127.0.0.1:{svc.api}/pki/v1/crl" in text
    finally:
        svc.stop()
