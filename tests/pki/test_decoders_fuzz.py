"""Property tests of every decoder: one allowed outcome, a value or the package's error."""

from __future__ import annotations

import ast
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

import pki
from pki import (
    CertificateIssuer,
    CertStatus,
    CsrRejected,
    EnrollmentRefused,
    OcspResponder,
    PkiError,
    SerialStatus,
    SpiffeId,
    build_csr,
    check_csr,
    generate_private_key,
    renewal_proof_serial,
)
from tests.pki.conftest import NOW, TRUST_DOMAIN, Leaf

IDENTITY = SpiffeId(TRUST_DOMAIN, "workload", "fuzz")
_KEY = generate_private_key()
_CSR_DER = x509.load_pem_x509_csr(build_csr(_KEY, IDENTITY.uri)).public_bytes(
    serialization.Encoding.DER
)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer)


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(EDITS)
def test_mutated_csr_is_accepted_or_rejected(edits: list[tuple[int, int]]) -> None:
    try:
        check_csr(mutate(_CSR_DER, edits), IDENTITY)
    except PkiError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_random_csr_bytes_are_rejected(data: bytes) -> None:
    try:
        check_csr(data, IDENTITY)
    except CsrRejected:
        return
    raise AssertionError("random bytes passed as a CSR")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500) | st.text(max_size=200).map(str.encode))
def test_random_renewal_proofs_are_refused(data: bytes) -> None:
    try:
        renewal_proof_serial(data)
    except EnrollmentRefused:
        pass


def test_mutated_ocsp_requests_get_a_response(issuer: CertificateIssuer, responder: Leaf) -> None:
    subject = x509.load_der_x509_certificate(
        issuer.issue(_KEY.public_key(), "device", "fuzz", "device", NOW).der
    )
    ocsp_responder = OcspResponder(
        issuer.ca.certificate,
        x509.load_der_x509_certificate(responder.issued.der),
        responder.key,
        lambda serial: SerialStatus(CertStatus.GOOD),
    )
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(subject, issuer.ca.certificate, hashes.SHA256())
        .add_extension(x509.OCSPNonce(b"\x01" * 16), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )

    @settings(max_examples=400, deadline=None)
    @given(EDITS)
    def check(edits: list[tuple[int, int]]) -> None:
        response = ocsp.load_der_ocsp_response(ocsp_responder.respond(mutate(request, edits), NOW))
        assert response.response_status in (
            ocsp.OCSPResponseStatus.SUCCESSFUL,
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
            ocsp.OCSPResponseStatus.UNAUTHORIZED,
        )

    check()


def test_pki_imports_neither_nhi_nac_nor_segments() -> None:
    # DESIGN.md "Layers": pki is a library below nhi_nac and beside segments.
    for path in Path(pki.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("nhi_nac", "segments"), f"{path}: {name}"
