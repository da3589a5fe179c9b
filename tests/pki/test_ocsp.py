"""OCSP (RFC 6960): the responder's statuses, nonce echo, malformed and unauthorized
requests; a client's check of its responses."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from pki import (
    CaMaterialInvalid,
    CertificateIssuer,
    CertStatus,
    MalformedOcspRequest,
    OcspResponder,
    OcspResponseInvalid,
    PrivateKey,
    SerialStatus,
    build_request,
    check_response,
    create_hierarchy,
    decode_get_request,
    generate_private_key,
)
from tests.pki.conftest import NOW, Leaf

REVOKED_AT = NOW - timedelta(minutes=1)


@pytest.fixture(scope="module")
def subject(issuer: CertificateIssuer, leaf_key: PrivateKey) -> x509.Certificate:
    issued = issuer.issue(leaf_key.public_key(), "device", "printer", "device", NOW)
    return x509.load_der_x509_certificate(issued.der)


@pytest.fixture(scope="module")
def statuses() -> dict[int, SerialStatus]:
    return {}


@pytest.fixture(scope="module")
def ocsp_responder(
    issuer: CertificateIssuer, responder: Leaf, statuses: dict[int, SerialStatus]
) -> OcspResponder:
    return OcspResponder(
        issuer.ca.certificate,
        x509.load_der_x509_certificate(responder.issued.der),
        responder.key,
        lambda serial: statuses.get(serial, SerialStatus(CertStatus.UNKNOWN)),
    )


def request_for(
    cert: x509.Certificate, issuer_cert: x509.Certificate, nonce: bytes | None = None
) -> bytes:
    """As OpenSSL asks by default: a SHA-1 CertID."""
    return build_request(cert, issuer_cert, nonce, algorithm=hashes.SHA1())


def test_good_revoked_unknown_and_nonce(
    ocsp_responder: OcspResponder,
    issuer: CertificateIssuer,
    subject: x509.Certificate,
    statuses: dict[int, SerialStatus],
    responder: Leaf,
) -> None:
    request = request_for(subject, issuer.ca.certificate, nonce=b"\x01" * 16)
    statuses.clear()
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond(request, NOW))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN

    statuses[subject.serial_number] = SerialStatus(CertStatus.GOOD)
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond(request, NOW))
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == subject.serial_number
    assert response.this_update_utc == NOW
    assert response.next_update_utc is not None and response.next_update_utc > NOW
    nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert nonce == b"\x01" * 16
    responder_cert = x509.load_der_x509_certificate(responder.issued.der)
    assert response.certificates == [responder_cert]
    assert response.responder_key_hash is not None

    statuses[subject.serial_number] = SerialStatus(
        CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise
    )
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond(request, NOW))
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == REVOKED_AT
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_no_nonce_no_nonce_extension(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    response = ocsp.load_der_ocsp_response(
        ocsp_responder.respond(request_for(subject, issuer.ca.certificate), NOW)
    )
    assert len(response.extensions) == 0


def test_get_request(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    der = request_for(subject, issuer.ca.certificate)
    component = quote(base64.b64encode(der).decode(), safe="")
    assert decode_get_request(component) == der
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond_get(component, NOW))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    with pytest.raises(MalformedOcspRequest, match="not base64"):
        decode_get_request("!!!")
    bad = ocsp.load_der_ocsp_response(ocsp_responder.respond_get("%%%", NOW))
    assert bad.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("nonce", [b"", b"x" * 33])
def test_nonce_outside_rfc8954_size_is_malformed(
    ocsp_responder: OcspResponder,
    issuer: CertificateIssuer,
    subject: x509.Certificate,
    nonce: bytes,
) -> None:
    request = request_for(subject, issuer.ca.certificate, nonce=nonce)
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond(request, NOW))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_request_for_another_ca_is_unauthorized(
    ocsp_responder: OcspResponder, subject: x509.Certificate
) -> None:
    other = create_hierarchy("other.example", NOW)
    response = ocsp.load_der_ocsp_response(
        ocsp_responder.respond(request_for(subject, other.issuing.certificate), NOW)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_responder_must_hold_ocsp_signing(
    issuer: CertificateIssuer, subject: x509.Certificate, leaf_key: PrivateKey
) -> None:
    with pytest.raises(CaMaterialInvalid, match="OCSPSigning"):
        OcspResponder(issuer.ca.certificate, subject, leaf_key, lambda s: SerialStatus("good"))  # type: ignore[arg-type]
    with pytest.raises(CaMaterialInvalid, match="does not match"):
        OcspResponder(
            issuer.ca.certificate,
            subject,
            generate_private_key(),
            lambda s: SerialStatus("good"),  # type: ignore[arg-type]
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzzed_requests_get_a_decodable_response(
    ocsp_responder: OcspResponder, data: bytes
) -> None:
    # One allowed outcome for any input: a well-formed OCSP response, never an exception.
    response = ocsp.load_der_ocsp_response(ocsp_responder.respond(data, NOW))
    assert response.response_status in (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
        ocsp.OCSPResponseStatus.SUCCESSFUL,
    )


# -- a client's check of the response (RFC 6960 §3.2): what it says, or why not rely on it


def test_good_revoked_and_unknown_are_told_apart(
    ocsp_responder: OcspResponder,
    issuer: CertificateIssuer,
    subject: x509.Certificate,
    statuses: dict[int, SerialStatus],
) -> None:
    ca = issuer.ca.certificate
    statuses.clear()
    request = build_request(subject, ca, nonce=b"n" * 16)
    assert check_response(ocsp_responder.respond(request, NOW), subject, ca, NOW,
                          nonce=b"n" * 16).status is CertStatus.UNKNOWN
    statuses[subject.serial_number] = SerialStatus(CertStatus.GOOD)
    assert check_response(ocsp_responder.respond(request, NOW), subject, ca, NOW,
                          nonce=b"n" * 16).status is CertStatus.GOOD
    statuses[subject.serial_number] = SerialStatus(
        CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise)
    got = check_response(ocsp_responder.respond(request, NOW), subject, ca, NOW,
                         nonce=b"n" * 16)
    assert got == SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise)


def test_a_response_to_another_nonce_is_refused(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    ca = issuer.ca.certificate
    response = ocsp_responder.respond(build_request(subject, ca, nonce=b"a" * 16), NOW)
    with pytest.raises(OcspResponseInvalid, match="another nonce"):
        check_response(response, subject, ca, NOW, nonce=b"b" * 16)


def test_a_response_about_another_certificate_is_refused(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    ca = issuer.ca.certificate
    other = x509.load_der_x509_certificate(issuer.issue(
        generate_private_key().public_key(), "workload", "other", "workload", NOW).der)
    response = ocsp_responder.respond(build_request(other, ca), NOW)
    with pytest.raises(OcspResponseInvalid, match="another certificate"):
        check_response(response, subject, ca, NOW)


def test_a_tampered_response_is_refused(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    ca = issuer.ca.certificate
    response = bytearray(ocsp_responder.respond(build_request(subject, ca), NOW))
    signature = ocsp.load_der_ocsp_response(bytes(response)).signature
    response[bytes(response).index(signature) + len(signature) - 1] ^= 0x01
    with pytest.raises(OcspResponseInvalid, match="signature does not verify"):
        check_response(bytes(response), subject, ca, NOW)


def test_stale_and_future_responses_are_refused(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    ca = issuer.ca.certificate
    response = ocsp_responder.respond(build_request(subject, ca), NOW)
    # nextUpdate is an hour after NOW; five minutes of skew are forgiven.
    check_response(response, subject, ca, NOW + timedelta(minutes=64))
    with pytest.raises(OcspResponseInvalid, match="stale"):
        check_response(response, subject, ca, NOW + timedelta(minutes=66))
    # Signed ten minutes ahead of a clock that reads NOW + 4 minutes.
    ahead = ocsp_responder.respond(build_request(subject, ca), NOW + timedelta(minutes=10))
    with pytest.raises(OcspResponseInvalid, match="in the future"):
        check_response(ahead, subject, ca, NOW + timedelta(minutes=4))


def test_an_unsuccessful_or_undecodable_answer_is_refused(
    ocsp_responder: OcspResponder, issuer: CertificateIssuer, subject: x509.Certificate
) -> None:
    ca = issuer.ca.certificate
    with pytest.raises(OcspResponseInvalid, match="MALFORMED_REQUEST"):
        check_response(ocsp_responder.respond(b"junk", NOW), subject, ca, NOW)
    with pytest.raises(OcspResponseInvalid, match="cannot be decoded"):
        check_response(b"<html>", subject, ca, NOW)


def _signed_by(certificate: x509.Certificate, key: PrivateKey, subject: x509.Certificate,
               ca: x509.Certificate) -> bytes:
    """A GOOD response for ``subject`` signed by ``key``, naming ``certificate``."""
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(cert=subject, issuer=ca, algorithm=hashes.SHA256(),
                      cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW,
                      next_update=NOW + timedelta(hours=1), revocation_time=None,
                      revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, certificate)
    )
    if certificate is not ca:
        builder = builder.certificates([certificate])
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_the_ca_itself_may_sign(issuer: CertificateIssuer, subject: x509.Certificate) -> None:
    ca = issuer.ca.certificate
    response = _signed_by(ca, issuer.ca.key, subject, ca)
    assert check_response(response, subject, ca, NOW).status is CertStatus.GOOD


def test_a_responder_without_the_cas_authority_is_refused(
    issuer: CertificateIssuer, subject: x509.Certificate, leaf_key: PrivateKey
) -> None:
    ca = issuer.ca.certificate
    # Issued by the CA but not for OCSP (no id-kp-OCSPSigning): the subject's own key.
    with pytest.raises(OcspResponseInvalid, match="OCSPSigning"):
        check_response(_signed_by(subject, leaf_key, subject, ca), subject, ca, NOW)
    # A proper OCSP responder, of another CA.
    other = create_hierarchy("other.example", NOW)
    rogue_key = generate_private_key()
    rogue = x509.load_der_x509_certificate(CertificateIssuer(
        other.issuing, "other.example", crl_url="http://x/crl", ocsp_url="http://x/ocsp",
    ).issue(rogue_key.public_key(), "service", "ocsp", "ocsp-responder", NOW).der)
    with pytest.raises(OcspResponseInvalid, match="not issued by the CA"):
        check_response(_signed_by(rogue, rogue_key, subject, ca), subject, ca, NOW)
