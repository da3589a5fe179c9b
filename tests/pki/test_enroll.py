"""Client enrollment files and the token-less renewal proof."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from pki import (
    CertificateIssuer,
    EnrollmentRefused,
    KeyType,
    PrivateKey,
    build_renewal_proof,
    generate_private_key,
    new_enrollment,
    public_key_fingerprint,
    read_credentials,
    renewal_proof_serial,
    renewal_time,
    verify_renewal_proof,
    write_credentials,
)
from pki.enroll import RENEWAL_PROOF_MAX_AGE
from tests.pki.conftest import NOW, TRUST_DOMAIN


def never_revoked(serial: int) -> bool:
    return False


def enrolled(
    issuer: CertificateIssuer, key_type: KeyType = KeyType.P256
) -> tuple[PrivateKey, x509.Certificate]:
    enrollment = new_enrollment(key_type)
    issued = issuer.issue_for_csr(enrollment.csr_pem, "workload", "api", "workload", NOW)
    return enrollment.key, x509.load_der_x509_certificate(issued.der)


def test_write_credentials(tmp_path: Path, issuer: CertificateIssuer) -> None:
    enrollment = new_enrollment(spiffe_id=f"spiffe://{TRUST_DOMAIN}/workload/api")
    issued = issuer.issue_for_csr(enrollment.csr_pem, "workload", "api", "workload", NOW)
    out = tmp_path / "creds"
    files = write_credentials(
        out, enrollment.key, issued.pem, issuer.ca.chain_pem, issuer.ca.root_pem
    )
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.certificate.stat().st_mode) == 0o644
    assert files.chain.read_bytes() == issuer.ca.chain_pem
    assert files.ca.read_bytes() == issuer.ca.root_pem
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "cert.pem", "chain.pem", "key.pem"]
    key, cert = read_credentials(out)
    assert public_key_fingerprint(key) == public_key_fingerprint(enrollment.key)
    assert cert.serial_number == issued.serial

    # Renewal replaces every file in place, leaving no temporaries behind.
    renewed = new_enrollment()
    again = issuer.issue_for_csr(renewed.csr_pem, "workload", "api", "workload", NOW)
    write_credentials(out, renewed.key, again.pem, issuer.ca.chain_pem, issuer.ca.root_pem)
    assert read_credentials(out)[1].serial_number == again.serial
    assert len(list(out.iterdir())) == 4


def test_write_refuses_certificate_for_another_key(
    tmp_path: Path, issuer: CertificateIssuer
) -> None:
    enrollment = new_enrollment()
    issued = issuer.issue_for_csr(enrollment.csr_pem, "workload", "api", "workload", NOW)
    with pytest.raises(EnrollmentRefused, match="does not certify our key"):
        write_credentials(
            tmp_path, generate_private_key(), issued.pem, issuer.ca.chain_pem, issuer.ca.root_pem
        )
    assert list(tmp_path.iterdir()) == []


def test_renewal_time_is_by_two_thirds_and_spread_over_a_fleet(
        issuer: CertificateIssuer) -> None:
    # A fleet enrolled in the same second (24 h certificates): each renews between 60%
    # and two thirds of its life, at a point its serial picks, the same when asked again.
    times = []
    for _ in range(200):
        _, cert = enrolled(issuer)
        at = renewal_time(cert)
        assert NOW + timedelta(hours=24 * 0.6) <= at <= NOW + timedelta(hours=16)
        assert renewal_time(cert) == at
        times.append(at)
    # Spread over the whole window (96 minutes), not bunched: every 12-minute slice used.
    slices = {int((t - (NOW + timedelta(hours=24 * 0.6))).total_seconds() // 720)
              for t in times}
    assert slices >= set(range(8))


@pytest.mark.parametrize("key_type", [KeyType.P256, KeyType.P384, KeyType.ED25519, KeyType.RSA3072])
def test_renewal_proof_round_trip(issuer: CertificateIssuer, key_type: KeyType) -> None:
    key, cert = enrolled(issuer, key_type)
    csr = new_enrollment().csr_pem
    proof = build_renewal_proof(key, cert, csr, NOW + timedelta(hours=1))
    assert renewal_proof_serial(proof) == cert.serial_number
    request = verify_renewal_proof(
        proof,
        cert,
        issuer.ca.certificate,
        NOW + timedelta(hours=1, seconds=30),
        is_revoked=never_revoked,
    )
    assert request.csr_pem == csr and request.serial == cert.serial_number
    assert request.spiffe_id.uri == f"spiffe://{TRUST_DOMAIN}/workload/api"


def test_renewal_refusals(issuer: CertificateIssuer) -> None:
    key, cert = enrolled(issuer)
    csr = new_enrollment().csr_pem
    later = NOW + timedelta(hours=1)
    proof = build_renewal_proof(key, cert, csr, later)
    ca = issuer.ca.certificate

    def refused(reason: str, **changes: object) -> None:
        args: dict[str, object] = {
            "proof": proof,
            "certificate": cert,
            "issuer": ca,
            "now": later,
            "is_revoked": never_revoked,
        }
        args.update(changes)
        with pytest.raises(EnrollmentRefused, match=reason):
            verify_renewal_proof(**args)  # type: ignore[arg-type]

    refused("is revoked", is_revoked=lambda serial: serial == cert.serial_number)
    expired = cert.not_valid_after_utc + timedelta(seconds=1)
    refused("not valid now", proof=build_renewal_proof(key, cert, csr, expired), now=expired)
    refused("stale", now=later + RENEWAL_PROOF_MAX_AGE + timedelta(seconds=1))
    refused("stale", now=later - timedelta(minutes=2))
    _, other_cert = enrolled(issuer)
    refused("another certificate", certificate=other_cert)
    forged = build_renewal_proof(generate_private_key(), cert, csr, later)
    refused("signature does not verify", proof=forged)
    outer = json.loads(proof)
    outer["signature"] = outer["signature"][:-4] + "AAAA"
    refused("signature does not verify|malformed", proof=json.dumps(outer).encode())
    refused("malformed", proof=b"{}")
    refused("malformed", proof=b"\xff")
    from pki import create_hierarchy

    stranger = create_hierarchy(TRUST_DOMAIN, NOW)
    refused("not issued by this CA", issuer=stranger.issuing.certificate)
