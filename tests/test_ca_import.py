"""Bring your own issuing CA after ``init``, and the CA's health on ``/metrics``.

``nhi-nac init`` makes a CA; ``nhi-nac ca import --replace`` then replaces it with the
admin's own (set aside, not deleted) as long as it has issued nothing to an identity. The running
service issues from the imported CA (checked with ``openssl verify``), exports the
notAfter of every certificate it depends on and its CRL's nextUpdate, number and size
(checked against what ``openssl`` reads from the files), refuses a certificate that would
outlive the issuing CA, and says in its log when that CA has less life left than the
profiles may grant.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pki
from nhi_nac.ca_metrics import issuing_ca_warning
from tests.interop import require_tool
from tests.service_process import NHI, Service, service_env

pytestmark = pytest.mark.interop

PASSPHRASE = b"admin's own passphrase"


def _own_ca(tmp_path: Path, days: int) -> list[str]:
    """The admin's issuing CA (and root) with ``days`` of life left; `ca import`'s flags."""
    h = pki.create_hierarchy("nhi.example", dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
                             intermediate_lifetime=dt.timedelta(days=days + 1, hours=1))
    d = tmp_path / f"own-{days}"
    d.mkdir()
    (d / "issuing.pem").write_bytes(h.issuing.certificate_pem)
    (d / "issuing.key").write_bytes(h.issuing.key_pem(PASSPHRASE))
    (d / "chain.pem").write_bytes(h.issuing.root_pem)
    (d / "pass").write_bytes(PASSPHRASE + b"\n")
    (d / "root.key").write_bytes(h.root_key_pem(PASSPHRASE))  # the admin's, kept elsewhere
    return ["ca", "import", "--cert", str(d / "issuing.pem"), "--key", str(d / "issuing.key"),
            "--chain", str(d / "chain.pem"), "--key-passphrase-file", str(d / "pass")]


def _openssl(*args: str) -> str:
    p = subprocess.run([require_tool("openssl", "openssl"), *args], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _not_after(path: Path) -> float:
    """notAfter as openssl prints it, in Unix time."""
    text = _openssl("x509", "-in", str(path), "-noout", "-enddate").strip()
    return dt.datetime.strptime(text.split("=", 1)[1], "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=dt.UTC).timestamp()


def _metrics(svc: Service) -> dict[tuple[str, tuple[str, ...]], float]:
    with urllib.request.urlopen(f"{svc.base}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(s.labels.values())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("nhi_ca_")}


def _snapshot(ca_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ca_dir.iterdir()) if p.is_file()}


def test_own_ca_after_init_metrics_and_the_issuing_ca_warning(tmp_path: Path) -> None:
    svc = Service(service_env(tmp_path), tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "alice@example.com", "--name", "Alice", "--team", "platform")
    svc.cli("identity", "add", "device", "cam-7", "--owner", "alice@example.com")
    ca_dir = svc.data / "ca"
    made_by_init = _snapshot(ca_dir)

    # Too short a life for the service's own certificates: refused, nothing changed.
    short = subprocess.run([*NHI, *_own_ca(tmp_path, 30)], env=svc.env, capture_output=True,
                           text=True, timeout=60)
    assert short.returncode == 1 and "ends in 30 days" in short.stderr, short.stderr
    assert _snapshot(ca_dir) == made_by_init

    own = _own_ca(tmp_path, 200)
    unsaid = subprocess.run([*NHI, *own], env=svc.env, capture_output=True, text=True,
                            timeout=60)
    assert unsaid.returncode == 1 and "add --replace" in unsaid.stderr, unsaid.stderr
    assert _snapshot(ca_dir) == made_by_init
    said = svc.cli(*own, "--replace")
    assert "set aside in" in said and "imported" in said, said
    kept = next(ca_dir.glob("replaced-*"))
    assert _snapshot(kept) == {k: v for k, v in made_by_init.items() if k != "passphrase"}
    root = ca_dir / "root.pem"
    assert root.read_bytes() != made_by_init["root.pem"]
    for own in (ca_dir / "ocsp.pem", svc.data / "radius" / "server.pem"):
        _openssl("verify", "-CAfile", str(root), "-untrusted", str(ca_dir / "chain.pem"),
                 str(own))

    svc.start()
    try:
        m = _metrics(svc)
        expiry = "nhi_ca_certificate_expiry_timestamp_seconds"
        for label, path in (("root", root), ("issuing", ca_dir / "issuing.pem"),
                            ("ocsp_responder", ca_dir / "ocsp.pem"),
                            ("radius_server", svc.data / "radius" / "server.pem")):
            assert m[(expiry, (label,))] == _not_after(path), label
        crl = _openssl("crl", "-in", str(ca_dir / "crl.der"), "-inform", "DER", "-noout",
                       "-nextupdate", "-crlnumber").splitlines()
        next_update = dt.datetime.strptime(crl[0].split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
        assert m[("nhi_ca_crl_next_update_timestamp_seconds", ())] == \
            next_update.replace(tzinfo=dt.UTC).timestamp()
        number = int(crl[1].split("=", 1)[1], 16)
        assert (m[("nhi_ca_crl_number", ())], m[("nhi_ca_crl_entries", ())]) == (number, 0)
        assert m[("nhi_ca_enrollments_waiting", ())] == 0

        # A device certificate may not outlive the issuing CA (200 days left); 90 days may.
        out = tmp_path / "cam"

        def enroll(*extra: str) -> subprocess.CompletedProcess[str]:
            token = svc.cli("token", "create", "device/cam-7").strip()
            return subprocess.run([*NHI, "enroll", "--server", svc.base, "--token", token,
                                   "--out", str(out), *extra], env=svc.env,
                                  capture_output=True, text=True, timeout=60)

        long = enroll("--validity", "300d")
        assert long.returncode == 1 and "beyond the issuing CA's notAfter" in long.stderr
        done = enroll()
        assert done.returncode == 0, done.stderr
        assert (out / "ca.pem").read_bytes() == root.read_bytes()
        _openssl("verify", "-CAfile", str(out / "ca.pem"), "-untrusted",
                 str(out / "chain.pem"), str(out / "cert.pem"))

        # Once it has issued, the CA is not replaced.
        before = _snapshot(ca_dir)
        again = subprocess.run([*NHI, *_own_ca(tmp_path, 300), "--replace"], env=svc.env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "has issued 1 certificate(s)" in again.stderr
        assert _snapshot(ca_dir) == before

        # A revocation through the CLI shows in the service's CRL figures.
        svc.cli("cert", "revoke", "--identity", "device/cam-7", "--reason", "superseded")
        for _ in range(100):
            m = _metrics(svc)
            if m[("nhi_ca_crl_entries", ())] == 1:
                break
            time.sleep(0.1)
        assert (m[("nhi_ca_crl_entries", ())], m[("nhi_ca_crl_number", ())]) == (1, number + 2)

        # `ca show` says what an admin needs: the warning and its remedy, where the root
        # key is (the admin's own: not here), what was issued.
        shown = json.loads(svc.cli("--json", "ca", "show"))
        assert "renew it (nhi-nac ca renew)" in shown["warning"]
        assert shown["root_key"] == "offline" and shown["issued"] == {
            "valid": 0, "held": 0, "revoked": 1, "expired": 0}
        assert dt.datetime.fromisoformat(shown["certificates"]["issuing"]["not_after"]) \
            .timestamp() == _not_after(ca_dir / "issuing.pem")
        assert shown["crl"]["number"] >= number + 2 and shown["crl"]["entries"] == 1

        # The imported CA is renewed instead, by the admin's own root (elsewhere): the
        # same name and key, 400 days from now. Another key, or no certificate and no
        # root key here, is refused and changes nothing.
        before = _snapshot(ca_dir)
        for args, why in ((("ca", "renew"), "the root key is not at"),
                          (("ca", "renew", "--cert", str(tmp_path / "own-300" / "issuing.pem")),
                           "for another key")):
            refused = subprocess.run([*NHI, *args], env=svc.env, capture_output=True,
                                     text=True, timeout=60)
            assert refused.returncode == 1 and why in refused.stderr, refused.stderr
        assert _snapshot(ca_dir) == before
        own = tmp_path / "own-200"
        current = pki.import_issuing_ca(*(
            (own / name).read_bytes() for name in ("issuing.pem", "issuing.key", "chain.pem")),
            dt.datetime.now(dt.UTC), passphrase=PASSPHRASE)
        renewed = pki.renew_issuing_ca(
            current, pki.load_private_key((own / "root.key").read_bytes(), PASSPHRASE),
            dt.datetime.now(dt.UTC), lifetime=dt.timedelta(days=400))
        (own / "renewed.pem").write_bytes(renewed.certificate_pem)
        said = svc.cli("ca", "renew", "--cert", str(own / "renewed.pem"))
        assert "renewed with the same key" in said, said
        assert (ca_dir / "issuing.pem").read_bytes() == renewed.certificate_pem
        assert next(ca_dir.glob("issuing-until-*.pem")).read_bytes() == before["issuing.pem"]
        # The CRL the renewed CA signs lists what the old certificate issued: openssl
        # refuses that certificate, checked against the renewed chain and the CRL.
        (tmp_path / "crl.pem").write_bytes((ca_dir / "crl.pem").read_bytes())
        revoked = subprocess.run(
            [require_tool("openssl", "openssl"), "verify", "-crl_check", "-CAfile", str(root),
             "-CRLfile", str(tmp_path / "crl.pem"), "-untrusted", str(ca_dir / "chain.pem"),
             str(out / "cert.pem")], capture_output=True, text=True, timeout=60)
        assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + \
            revoked.stderr, revoked.stdout + revoked.stderr
        # The running service takes the renewed CA up within seconds, no restart: the
        # 300-day device certificate refused above is issued, and the metric follows.
        for _ in range(50):
            done = enroll("--validity", "300d")
            if done.returncode == 0:
                break
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        assert (out / "chain.pem").read_bytes() == renewed.chain_pem
        _openssl("verify", "-CAfile", str(root), "-untrusted", str(out / "chain.pem"),
                 str(out / "cert.pem"))
        assert _metrics(svc)[(expiry, ("issuing",))] == _not_after(ca_dir / "issuing.pem")
        shown = json.loads(svc.cli("--json", "ca", "show"))
        assert shown["warning"] is None and shown["issued"]["valid"] == 1
        assert shown["certificates"]["issuing"]["days_left"] in (399, 400)
    finally:
        log = svc.stop()
    warned = [line for line in log.splitlines() if "ca.issuing_ca_ending" in line]
    assert warned and "device from" in warned[0] and "certificates that would outlive it " \
        "are refused" in warned[0], log[-2000:]


def test_no_warning_while_the_issuing_ca_outlives_every_profile() -> None:
    now = dt.datetime.now(dt.UTC)
    five_years = pki.create_hierarchy("nhi.example", now).issuing
    assert issuing_ca_warning(five_years, now) is None
    said = issuing_ca_warning(five_years, five_years.certificate.not_valid_after_utc
                              - dt.timedelta(days=100))
    assert said is not None and "(100 days)" in said and "workload from" in said
    assert "expired" in (issuing_ca_warning(five_years, five_years.certificate
                                            .not_valid_after_utc + dt.timedelta(seconds=1))
                         or "")
