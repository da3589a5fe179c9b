"""The OCSP responder's DER template writes, byte for byte, the ResponseData the builder writes.

For every responder key type ``create_hierarchy`` makes (P-256, P-384, Ed25519,
RSA), each status (good; revoked without a reason, with one, and with
``unspecified``, which is left out; unknown), with and without a nonce, and
with SHA-1 and SHA-256 CertIDs, a response from the template responder and
one from the same responder with its template off (the builder fallback) must
agree in every ResponseData byte but producedAt (RFC 6960 §4.2.1), which the
builder takes from the system clock and the template from ``now``; the outer
structure must be the builder's too. The template's response must verify
under the responder certificate's key, pass ``check_response`` with the right
status, and pass ``openssl ocsp``. A responder whose template fails its probe
in ``__init__`` must fall back to the builder and still answer correctly.
Last, the DER helpers the template added, against X.690 examples.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp

import pki.ocsp as ocsp_module
from pki import (
    CertificateIssuer,
    CertStatus,
    KeyType,
    OcspResponder,
    PrivateKey,
    SerialStatus,
    build_request,
    check_response,
    create_hierarchy,
    der,
    generate_private_key,
)
from tests.interop import require_tool
from tests.pki.conftest import NOW, Leaf, new_issuer

REVOKED_AT = NOW - timedelta(minutes=1)
NONCE = bytes(range(16))
#: A serial whose top octet has its high bit set: DER needs a leading zero octet.
HIGH_BIT_SERIAL = (0xC3 << 144) | 0x1234
KEY_COMPROMISE = SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise)

#: (status, what check_response must return): RFC 5280 §5.3.1 leaves "unspecified" out.
STATUS_CASES = {
    "good": (SerialStatus(CertStatus.GOOD), SerialStatus(CertStatus.GOOD)),
    "unknown": (SerialStatus(CertStatus.UNKNOWN), SerialStatus(CertStatus.UNKNOWN)),
    "revoked": (
        SerialStatus(CertStatus.REVOKED, REVOKED_AT.replace(microsecond=654321)),
        SerialStatus(CertStatus.REVOKED, REVOKED_AT),
    ),
    "revoked-key-compromise": (
        SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise),
        SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise),
    ),
    "revoked-unspecified": (
        SerialStatus(
            CertStatus.REVOKED,
            REVOKED_AT.astimezone(timezone(timedelta(hours=2))),
            x509.ReasonFlags.unspecified,
        ),
        SerialStatus(CertStatus.REVOKED, REVOKED_AT),
    ),
}


@dataclass
class Setup:
    """One CA of one key type, a responder it issued (same key type), and a subject leaf."""

    key_type: str
    issuer: CertificateIssuer
    responder_certificate: x509.Certificate
    responder_key: PrivateKey
    subject: x509.Certificate
    subject_pem: bytes
    statuses: dict[int, SerialStatus] = field(default_factory=dict)

    @property
    def ca(self) -> x509.Certificate:
        return self.issuer.ca.certificate

    def responder(self) -> OcspResponder:
        return OcspResponder(
            self.ca,
            self.responder_certificate,
            self.responder_key,
            lambda serial: self.statuses.get(serial, SerialStatus(CertStatus.UNKNOWN)),
        )


@pytest.fixture(scope="module", params=[k.value for k in KeyType])
def setup(request: pytest.FixtureRequest) -> Setup:
    issuer = new_issuer(create_hierarchy("nhi.example", NOW, request.param))
    key = generate_private_key(request.param)
    issued = issuer.issue(key.public_key(), "service", "ocsp", "ocsp-responder", NOW)
    subject = issuer.issue(generate_private_key().public_key(), "device", "printer", "device", NOW)
    return Setup(
        request.param,
        issuer,
        x509.load_der_x509_certificate(issued.der),
        key,
        x509.load_der_x509_certificate(subject.der),
        subject.pem,
    )


@dataclass(frozen=True)
class Pair:
    template: OcspResponder
    builder: OcspResponder


@pytest.fixture(scope="module")
def pair(setup: Setup) -> Pair:
    template, builder = setup.responder(), setup.responder()
    builder._template = None  # the private fallback: every response through the builder
    return Pair(template, builder)


def verify_signature(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> None:
    """The response's signature under ``certificate``'s key, as a client checks it."""
    key = certificate.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    algorithm = response.signature_hash_algorithm
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert algorithm is not None
        key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        assert isinstance(key, rsa.RSAPublicKey) and algorithm is not None
        key.verify(signature, data, padding.PKCS1v15(), algorithm)


def wrapping(response_der: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """An OCSPResponse's responseStatus, responseType and BasicOCSPResponse elements
    (tbsResponseData, signatureAlgorithm, signature, certs), RFC 6960 §4.2.1."""
    status, response_bytes = der.split(response_der)
    response_type, basic = der.split(der.split(response_bytes)[0])
    return status, response_type, der.split(der.contents(basic))


def answer_both(pair: Pair, request: bytes) -> ocsp.OCSPResponse:
    """Answer ``request`` both ways and check the template's against the builder's."""
    assert pair.template._template is not None, "the template was not proven for this key"
    templated_der = pair.template.respond(request, NOW)
    built_der = pair.builder.respond(request, NOW)
    templated = ocsp.load_der_ocsp_response(templated_der)
    built = ocsp.load_der_ocsp_response(built_der)
    # ResponseData: responderID, producedAt, responses, responseExtensions (version omitted).
    mine, theirs = der.split(templated.tbs_response_bytes), der.split(built.tbs_response_bytes)
    assert mine[1] == der.generalized_time(NOW)
    assert templated.produced_at_utc == NOW
    assert theirs[1][0] == der.GENERALIZED_TIME
    # With the builder's producedAt in its place, every byte is the builder's.
    assert der.sequence(mine[0], theirs[1], *mine[2:]) == built.tbs_response_bytes
    # Around it, the wrapping, signatureAlgorithm and certs are the builder's.
    status, response_type, ours = wrapping(templated_der)
    assert (status, response_type) == wrapping(built_der)[:2]
    reference = wrapping(built_der)[2]
    assert len(ours) == len(reference) == 4
    assert ours[0] == templated.tbs_response_bytes
    assert (ours[1], ours[3]) == (reference[1], reference[3])
    assert ours[2] == der.tlv(der.BIT_STRING, b"\x00" + templated.signature)
    verify_signature(templated, pair.template._certificate)
    return templated


def test_template_is_proven_for_every_key_type(pair: Pair) -> None:
    assert pair.template._template is not None
    assert pair.builder._template is None


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()], ids=["sha1", "sha256"])
@pytest.mark.parametrize("nonce", [None, NONCE], ids=["no-nonce", "nonce"])
@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_template_matches_builder_per_status_nonce_and_cert_id(
    setup: Setup, pair: Pair, case: str, nonce: bytes | None, algorithm: hashes.HashAlgorithm
) -> None:
    status, expected = STATUS_CASES[case]
    setup.statuses[setup.subject.serial_number] = status
    request = build_request(setup.subject, setup.ca, nonce, algorithm=algorithm)
    response = answer_both(pair, request)
    assert response.hash_algorithm.name == algorithm.name
    extensions = response.extensions
    if nonce is None:
        assert len(extensions) == 0
    else:
        assert extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    response_der = response.public_bytes(serialization.Encoding.DER)
    got = check_response(response_der, setup.subject, setup.ca, NOW, nonce=nonce)
    assert got == expected


@pytest.mark.parametrize(
    "serial", [0, 1, 0x7F, 0x80, 0xFF, HIGH_BIT_SERIAL, (1 << 159) - 1, 1 << 300]
)
@pytest.mark.parametrize(
    "algorithm",
    [hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
    ids=["sha1", "sha256", "sha384", "sha512"],
)
def test_template_matches_builder_per_serial_shape(
    issuer: CertificateIssuer, responder: Leaf, serial: int, algorithm: hashes.HashAlgorithm
) -> None:
    """Any serial a request may ask about, copied into the CertID as the builder copies it.

    The CertID does not depend on the responder key: one P-256 responder is enough.
    """
    revoked = SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.cessation_of_operation)
    pair = Pair(_responder(issuer, responder, revoked), _responder(issuer, responder, revoked))
    pair.builder._template = None
    name_hash, key_hash = pair.template._issuer_hashes[algorithm.name]
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash, key_hash, serial, algorithm)
        .add_extension(x509.OCSPNonce(b"\x01"), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = answer_both(pair, request)
    assert response.serial_number == serial
    assert response.revocation_reason is x509.ReasonFlags.cessation_of_operation


def test_produced_at_is_now_with_the_template_and_the_clock_with_the_builder(
    setup: Setup, pair: Pair
) -> None:
    """The one designed difference: the builder reads the system clock for producedAt."""
    setup.statuses[setup.subject.serial_number] = SerialStatus(CertStatus.GOOD)
    request = build_request(setup.subject, setup.ca)
    moment = datetime(2031, 5, 6, 7, 8, 9, 999999, tzinfo=timezone(timedelta(hours=-7)))
    before = datetime.now(UTC).replace(microsecond=0)
    templated = ocsp.load_der_ocsp_response(pair.template.respond(request, moment))
    built = ocsp.load_der_ocsp_response(pair.builder.respond(request, moment))
    after = datetime.now(UTC)
    expected = moment.astimezone(UTC).replace(microsecond=0)
    assert templated.produced_at_utc == templated.this_update_utc == expected
    assert built.this_update_utc == expected
    assert before <= built.produced_at_utc <= after


@pytest.mark.interop
def test_openssl_verifies_good_and_revoked_template_responses(
    setup: Setup, pair: Pair, tmp_path: Path
) -> None:
    tool = require_tool("openssl", "openssl")
    assert pair.template._template is not None
    files = {
        "issuer.pem": setup.issuer.ca.certificate_pem,
        "ca.pem": setup.issuer.ca.root_pem,
        "chain.pem": setup.issuer.ca.chain_pem,
        "cert.pem": setup.subject_pem,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    request = build_request(setup.subject, setup.ca, algorithm=hashes.SHA1())
    cases = [
        (SerialStatus(CertStatus.GOOD), ": good"),
        (SerialStatus(CertStatus.REVOKED, REVOKED_AT, x509.ReasonFlags.superseded), ": revoked"),
    ]
    for status, expected in cases:
        setup.statuses[setup.subject.serial_number] = status
        response = tmp_path / "resp.der"
        response.write_bytes(pair.template.respond(request, NOW))
        result = subprocess.run(
            [
                tool,
                "ocsp",
                "-respin",
                str(response),
                "-resp_text",
                "-issuer",
                str(tmp_path / "issuer.pem"),
                "-cert",
                str(tmp_path / "cert.pem"),
                "-no_nonce",
                "-CAfile",
                str(tmp_path / "ca.pem"),
                "-verify_other",
                str(tmp_path / "chain.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Response verify OK" in output
        assert expected in output, output
    assert "superseded" in output


# --- Fallback: a template that is not proven is never used. ---------------------------


def _answers_correctly(responder: OcspResponder, issuer: CertificateIssuer) -> None:
    subject = x509.load_der_x509_certificate(
        issuer.issue(generate_private_key().public_key(), "device", "fb", "device", NOW).der
    )
    request = build_request(subject, issuer.ca.certificate, NONCE, algorithm=hashes.SHA1())
    answer = responder.respond(request, NOW)
    got = check_response(answer, subject, issuer.ca.certificate, NOW, nonce=NONCE)
    assert got == KEY_COMPROMISE


def _responder(
    issuer: CertificateIssuer,
    responder: Leaf,
    revoked: SerialStatus = KEY_COMPROMISE,
) -> OcspResponder:
    """A P-256 responder (the session's) whose lookup answers ``revoked`` for every serial."""
    return OcspResponder(
        issuer.ca.certificate,
        x509.load_der_x509_certificate(responder.issued.der),
        responder.key,
        lambda serial: revoked,
    )


def _utc_time_everywhere(moment: datetime) -> bytes:
    return der.time(moment.replace(year=2020))


def _wrong_signer(key: PrivateKey, algorithm: object) -> Callable[[bytes], bytes] | None:
    other = ec.generate_private_key(ec.SECP256R1())
    return lambda data: other.sign(data, ec.ECDSA(hashes.SHA256()))


def _raises(answer: object) -> bytes:
    raise ValueError("broken on purpose")


@pytest.mark.parametrize(
    ("target", "name", "replacement"),
    [
        (der, "generalized_time", _utc_time_everywhere),
        (der, "enumerated", lambda value: der.integer(value)),
        (ocsp_module, "_cert_status", _raises),
        (ocsp_module, "direct_signer", _wrong_signer),
        (ocsp_module, "direct_signer", lambda key, algorithm: None),
        (ocsp_module, "_NONCE_OID", der.object_identifier("1.3.6.1.5.5.7.48.1.99")),
        (
            ocsp_module,
            "REASON_CODES",
            {**ocsp_module.REASON_CODES, x509.ReasonFlags.key_compromise: 2},
        ),
    ],
    ids=[
        "utc-time",
        "enumerated-as-integer",
        "encoder-raises",
        "wrong-signer",
        "no-signer",
        "nonce-oid",
        "reason-code",
    ],
)
def test_a_broken_template_falls_back_to_the_builder(
    monkeypatch: pytest.MonkeyPatch,
    issuer: CertificateIssuer,
    responder: Leaf,
    target: object,
    name: str,
    replacement: object,
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(target, name, replacement)
        broken = _responder(issuer, responder)
        assert broken._template is None
        _answers_correctly(broken, issuer)
    # The same responder material with nothing broken is proven.
    assert _responder(issuer, responder)._template is not None


def test_an_answer_the_template_does_not_cover_goes_to_the_builder(
    issuer: CertificateIssuer, responder: Leaf
) -> None:
    """A CertID hash outside the probed ones (SHA-224 via ``build_response``)."""
    responder_obj = _responder(issuer, responder)
    assert responder_obj._template is not None
    name_hash = hashes.Hash(hashes.SHA224())
    name_hash.update(issuer.ca.certificate.subject.public_bytes())
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(name_hash.finalize(), b"\x00" * 28, 5, hashes.SHA224())
        .build()
    )
    status = SerialStatus(CertStatus.GOOD)
    response = ocsp.load_der_ocsp_response(responder_obj.build_response(request, None, status, NOW))
    assert response.hash_algorithm.name == "sha224"
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    verify_signature(response, responder_obj._certificate)


# --- The DER helpers the template added (X.690). ---------------------------------------


def test_generalized_time_in_every_year_and_zone() -> None:
    # X.690 §11.7: YYYYMMDDHHMMSSZ, no fraction; RFC 6960 uses it even before 2050.
    assert der.generalized_time(datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)) == (
        b"\x18\x0f20250102030405Z"
    )
    assert der.generalized_time(datetime(2025, 1, 2, 3, 4, 5)) == b"\x18\x0f20250102030405Z"
    plus_two = timezone(timedelta(hours=2))
    assert der.generalized_time(datetime(2050, 1, 1, 1, 0, tzinfo=plus_two)) == (
        b"\x18\x0f20491231230000Z"
    )


def test_enumerated_and_octet_string() -> None:
    assert der.enumerated(0) == b"\x0a\x01\x00"
    assert der.enumerated(10) == b"\x0a\x01\x0a"
    assert der.enumerated(128) == b"\x0a\x02\x00\x80"
    with pytest.raises(ValueError):
        der.enumerated(-1)
    assert der.octet_string(b"") == b"\x04\x00"
    assert der.octet_string(b"\xaa" * 130) == b"\x04\x81\x82" + b"\xaa" * 130


@pytest.mark.parametrize("size", [0, 127, 128, 255, 256, 0xFFFF, 0x10000])
def test_tlv_lengths_at_each_form_boundary(size: int) -> None:
    # X.690 §8.1.3: short form below 128, else the fewest length octets after 0x80 | count.
    expected = bytes((der.OCTET_STRING,)) + der.length(size)
    assert der.tlv(der.OCTET_STRING, b"\x00" * size) == expected + b"\x00" * size
    assert len(der.length(size)) == (
        1 if size < 0x80 else 2 if size < 0x100 else 3 if size < 0x10000 else 4
    )
