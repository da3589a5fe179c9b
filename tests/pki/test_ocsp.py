"""OCSP responder (RFC 6960): statuses, nonce echo, malformed and unauthorized requests."""

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
    PrivateKey,
    SerialStatus,
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
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer_cert, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


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
