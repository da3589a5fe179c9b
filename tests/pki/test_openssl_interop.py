"""Interop with OpenSSL: path validation, CRL checking, name constraints, OCSP."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki import (
    CaHierarchy,
    CertificateIssuer,
    CertStatus,
    OcspResponder,
    PrivateKey,
    RevokedEntry,
    SerialStatus,
    build_crl,
    generate_private_key,
)
from pki.keys import signature_hash
from tests.interop import require_tool
from tests.pki.conftest import NOW, PROFILE_CASES, Leaf

pytestmark = pytest.mark.interop


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("openssl", "openssl")
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def verify(pki_files: Path, cert: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return openssl(
        "verify",
        *extra,
        "-CAfile",
        pki_files / "ca.pem",
        "-untrusted",
        pki_files / "chain.pem",
        cert,
    )


@pytest.mark.parametrize(("profile", "kind", "name", "dns"), PROFILE_CASES)
def test_openssl_verify_each_profile(
    issuer: CertificateIssuer,
    leaf_key: PrivateKey,
    pki_files: Path,
    tmp_path: Path,
    profile: str,
    kind: str,
    name: str,
    dns: tuple[str, ...],
) -> None:
    issued = issuer.issue(leaf_key.public_key(), kind, name, profile, NOW, dns_names=dns)
    cert = tmp_path / "cert.pem"
    cert.write_bytes(issued.pem)
    result = verify(pki_files, cert)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def test_revoked_certificate_fails_crl_check(
    hierarchy: CaHierarchy,
    issuer: CertificateIssuer,
    leaf_key: PrivateKey,
    pki_files: Path,
    tmp_path: Path,
) -> None:
    issued = issuer.issue(leaf_key.public_key(), "device", "printer-9", "device", NOW)
    cert = tmp_path / "cert.pem"
    cert.write_bytes(issued.pem)
    crl = tmp_path / "crl.pem"

    crl.write_bytes(build_crl(hierarchy.issuing, [], number=1, now=NOW).pem)
    before = verify(pki_files, cert, "-crl_check", "-CRLfile", crl)
    assert before.returncode == 0, before.stdout + before.stderr

    revoked = [
        RevokedEntry(issued.serial, NOW + timedelta(minutes=1), x509.ReasonFlags.key_compromise)
    ]
    crl.write_bytes(build_crl(hierarchy.issuing, revoked, number=2, now=NOW).pem)
    after = verify(pki_files, cert, "-crl_check", "-CRLfile", crl)
    assert after.returncode != 0
    assert "certificate revoked" in after.stdout + after.stderr


def test_uri_outside_trust_domain_fails_name_constraints(
    hierarchy: CaHierarchy, leaf_key: PrivateKey, pki_files: Path, tmp_path: Path
) -> None:
    # Signed with the intermediate's key directly, bypassing the issuer's checks.
    ca = hierarchy.issuing
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://evil.example/workload/x")]
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, signature_hash(ca.key))
    )
    cert = tmp_path / "forged.pem"
    cert.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    result = verify(pki_files, cert)
    assert result.returncode != 0
    assert "permitted subtree violation" in result.stdout + result.stderr


def test_openssl_ocsp_good_then_revoked_with_nonce(
    issuer: CertificateIssuer,
    responder: Leaf,
    leaf_key: PrivateKey,
    pki_files: Path,
    tmp_path: Path,
) -> None:
    issued = issuer.issue(leaf_key.public_key(), "workload", "ocsp-subject", "workload", NOW)
    cert, issuer_pem = tmp_path / "cert.pem", tmp_path / "issuer.pem"
    cert.write_bytes(issued.pem)
    issuer_pem.write_bytes(issuer.ca.certificate_pem)
    request = tmp_path / "req.der"
    made = openssl("ocsp", "-issuer", issuer_pem, "-cert", cert, "-nonce", "-reqout", request)
    assert made.returncode == 0, made.stderr

    statuses = {issued.serial: SerialStatus(CertStatus.GOOD)}
    responder_obj = OcspResponder(
        issuer.ca.certificate,
        x509.load_der_x509_certificate(responder.issued.der),
        responder.key,
        lambda serial: statuses.get(serial, SerialStatus(CertStatus.UNKNOWN)),
    )

    def check() -> str:
        response = tmp_path / "resp.der"
        response.write_bytes(responder_obj.respond(request.read_bytes(), NOW))
        trust = ("-CAfile", pki_files / "ca.pem", "-verify_other", pki_files / "chain.pem")
        # With -reqin, openssl compares the request's nonce with the response's and
        # fails with "Nonce Verify error" (or warns "no nonce in response") otherwise.
        echoed = openssl("ocsp", "-reqin", request, "-respin", response, "-resp_text", *trust)
        output = echoed.stdout + echoed.stderr
        assert echoed.returncode == 0, output
        assert "Response verify OK" in output
        assert "nonce" in output.lower() and "WARNING" not in output, output
        # With -cert, openssl matches the response to the certificate and prints its status
        # (it would build a fresh request, hence -no_nonce here).
        status = openssl(
            "ocsp",
            "-respin",
            response,
            "-issuer",
            issuer_pem,
            "-cert",
            cert,
            "-no_nonce",
            *trust,
        )
        output = status.stdout + status.stderr
        assert status.returncode == 0, output
        assert "Response verify OK" in output
        return output

    assert f"{cert}: good" in check()
    statuses[issued.serial] = SerialStatus(
        CertStatus.REVOKED, NOW + timedelta(minutes=1), x509.ReasonFlags.key_compromise
    )
    output = check()
    assert f"{cert}: revoked" in output
    assert "keyCompromise" in output


def test_openssl_reads_rsa_and_ed25519_leaves(
    issuer: CertificateIssuer, pki_files: Path, tmp_path: Path
) -> None:
    for key_type in ("rsa3072", "ed25519"):
        key = generate_private_key(key_type)
        issued = issuer.issue(key.public_key(), "workload", f"w-{key_type}", "workload", NOW)
        cert = tmp_path / f"{key_type}.pem"
        cert.write_bytes(issued.pem)
        result = verify(pki_files, cert)
        assert result.returncode == 0, result.stdout + result.stderr
