"""OCSP (RFC 6960), sans-I/O: the responder (request bytes in, response bytes out), and a
client's check of a response (``build_request``, ``check_response``).

The responder signs with a delegated responder certificate (RFC 6960 §4.2.2.2:
issued by the CA, with the id-kp-OCSPSigning EKU; ours also carries
id-pkix-ocsp-nocheck). Answers:

- a request that does not decode, or carries a nonce outside 1..32 octets
  (RFC 8954 §2.1), gets the unsigned ``malformedRequest`` status (§2.3);
- a request about another CA's certificates gets ``unauthorized`` (§2.3);
- otherwise one signed ``successful`` response with good, revoked (with time
  and reason) or unknown from the status lookup, and the request's nonce
  echoed (§4.4.1).

The HTTP shell passes the POST body to ``respond``, or the last path component
of a GET to ``respond_get`` (RFC 6960 Appendix A.1: base64 of the DER, then
URL-encoded).

Per-response speed matters, and ``ocsp.OCSPResponseBuilder`` costs several
times the signature itself. As the issuer does for leaves (``pki.issuer``),
a responder writes each response's ResponseData (§4.2.1) by concatenating the
bytes that never change for it (ResponderID, signatureAlgorithm, the certs
field with the responder certificate, cut once from a response the builder
signed) with the few values each answer changes (CertID, status, times,
nonce), and signs it with the responder key directly. The template is trusted
only once proven: in ``__init__`` probe answers are built both ways and their
ResponseData bytes compared; any difference keeps that responder on the
builder. One difference is by design: the builder writes the system clock at
signing into producedAt, the template writes ``now`` (the thisUpdate), as the
rest of this module takes time only as ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID

from pki import der
from pki.crl import REASON_CODES
from pki.errors import CaMaterialInvalid, MalformedOcspRequest, OcspResponseInvalid
from pki.keys import (
    PrivateKey,
    direct_signer,
    public_key_der,
    signature_hash,
    subject_public_key_bits,
)

#: An OCSP request for one certificate is ~100 bytes; this leaves room for extensions.
MAX_OCSP_REQUEST_BYTES = 4096
#: RFC 8954 §2.1: a nonce is 1 to 32 octets.
MAX_NONCE_BYTES = 32
#: How long a response stays fresh (nextUpdate - thisUpdate).
DEFAULT_RESPONSE_VALIDITY = timedelta(hours=1)
#: How far a client lets an OCSP response's thisUpdate/nextUpdate miss its own clock.
OCSP_CLOCK_SKEW = timedelta(minutes=5)
#: The digests a CertID may use (OpenSSL sends SHA-1 by default).
_CERT_ID_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (
    hashes.SHA1,
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)


class CertStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SerialStatus:
    """What the CA knows about one serial; revoked_at is required when revoked."""

    status: CertStatus
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None


GOOD = SerialStatus(CertStatus.GOOD)
UNKNOWN = SerialStatus(CertStatus.UNKNOWN)

StatusLookup = Callable[[int], SerialStatus]

#: RFC 6960 §4.2.1: OCSPResponseStatus successful, and responseBytes [0] EXPLICIT.
_SUCCESSFUL = der.enumerated(0)
_RESPONSE_BYTES_TAG = 0xA0
#: §4.2.1 CertStatus: good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo,
#: unknown [2] IMPLICIT NULL; RevokedInfo's revocationReason is [0] EXPLICIT CRLReason.
_GOOD = bytes((0x80, 0))
_REVOKED_TAG = 0xA1
_UNKNOWN = bytes((0x82, 0))
_REVOCATION_REASON_TAG = 0xA0
#: §4.2.1 SingleResponse nextUpdate [0] EXPLICIT; ResponseData responseExtensions [1] EXPLICIT.
_NEXT_UPDATE_TAG = 0xA0
_RESPONSE_EXTENSIONS_TAG = 0xA1
#: §4.2.1 ResponderID byKey [2] EXPLICIT: what ``OCSPResponderEncoding.HASH`` writes.
_BY_KEY_TAG = 0xA2
#: RFC 6960 §4.4.1 id-pkix-ocsp-nonce.
_NONCE_OID = der.object_identifier(OCSPExtensionOID.NONCE.dotted_string)
@dataclass(frozen=True, slots=True)
class _Answer:
    """What one response says: the input of either encoder.

    ``reason`` is the one written (``_reason``), None for good and unknown;
    ``revoked_at`` is set exactly when ``status`` is revoked.
    """

    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    status: CertStatus
    revoked_at: datetime | None
    reason: x509.ReasonFlags | None
    this_update: datetime
    next_update: datetime
    nonce: bytes | None


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


MALFORMED_REQUEST = _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
INTERNAL_ERROR = _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)


def decode_get_request(path_component: str) -> bytes:
    """The DER request in an OCSP GET URL component (RFC 6960 Appendix A.1)."""
    text = unquote(path_component)
    if len(text) > MAX_OCSP_REQUEST_BYTES * 4 // 3 + 4:
        raise MalformedOcspRequest(f"OCSP GET request longer than {MAX_OCSP_REQUEST_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedOcspRequest("OCSP GET request is not base64") from None


class OcspResponder:
    """Answers OCSP requests for certificates issued by ``issuer``."""

    def __init__(
        self,
        issuer: x509.Certificate,
        responder_certificate: x509.Certificate,
        responder_key: PrivateKey,
        status_lookup: StatusLookup,
        *,
        response_validity: timedelta = DEFAULT_RESPONSE_VALIDITY,
    ) -> None:
        _check_responder(issuer, responder_certificate, responder_key)
        self._issuer = issuer
        self._certificate = responder_certificate
        self._key = responder_key
        self._hash = signature_hash(responder_key)
        self._lookup = status_lookup
        self._validity = response_validity
        # RFC 6960 §4.1.1: issuerNameHash over the DER name, issuerKeyHash over the key bits.
        name_der = issuer.subject.public_bytes()
        key_bits = _subject_public_key_bits(issuer)
        self._issuer_hashes = {
            algorithm.name: (
                hashlib.new(algorithm.name, name_der).digest(),
                hashlib.new(algorithm.name, key_bits).digest(),
            )
            for algorithm in (a() for a in _CERT_ID_HASHES)
        }
        # None: this responder signs every response with ocsp.OCSPResponseBuilder.
        self._template = self._proven_template()

    @property
    def responder_not_after(self) -> datetime:
        """When the delegated responder certificate expires: replace it before then."""
        return self._certificate.not_valid_after_utc

    def respond_get(self, path_component: str, now: datetime) -> bytes:
        """``respond`` for an HTTP GET, given the URL component after the responder path."""
        try:
            request = decode_get_request(path_component)
        except MalformedOcspRequest:
            return MALFORMED_REQUEST
        return self.respond(request, now)

    def respond(self, request_der: bytes, now: datetime) -> bytes:
        """The DER OCSPResponse to ``request_der``; never raises for a peer's bad input."""
        try:
            request, nonce = self.parse_request(request_der)
        except MalformedOcspRequest:
            return MALFORMED_REQUEST
        if not self.is_ours(request):
            return UNAUTHORIZED
        return self.build_response(request, nonce, self._lookup(request.serial_number), now)

    def is_ours(self, request: ocsp.OCSPRequest) -> bool:
        """Whether the CertID names our issuer (else the answer is ``UNAUTHORIZED``).

        A caller that looks the status up asynchronously uses ``parse_request``, this
        and ``build_response`` instead of ``respond``, and parses the request once.
        """
        hashes_for = self._issuer_hashes.get(request.hash_algorithm.name)
        return hashes_for == (request.issuer_name_hash, request.issuer_key_hash)

    def parse_request(self, request_der: bytes) -> tuple[ocsp.OCSPRequest, bytes | None]:
        """Decode a request and its nonce; raises ``MalformedOcspRequest`` with the reason."""
        if len(request_der) > MAX_OCSP_REQUEST_BYTES:
            raise MalformedOcspRequest(f"OCSP request longer than {MAX_OCSP_REQUEST_BYTES} bytes")
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            extensions = request.extensions
        except (ValueError, UnsupportedAlgorithm, NotImplementedError) as exc:
            raise MalformedOcspRequest(f"OCSP request cannot be decoded: {exc}") from None
        if request.serial_number < 0:
            # RFC 5280 §4.1.2.2: serials are positive; no CA of ours issued this one.
            raise MalformedOcspRequest("OCSP request asks about a negative serial number")
        if not isinstance(algorithm, _CERT_ID_HASHES):
            raise MalformedOcspRequest(f"CertID hash {algorithm.name} is not supported")
        try:
            nonce: bytes | None = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_BYTES:
            raise MalformedOcspRequest(f"OCSP nonce must be 1 to {MAX_NONCE_BYTES} octets")
        return request, nonce

    def build_response(
        self,
        request: ocsp.OCSPRequest,
        nonce: bytes | None,
        status: SerialStatus,
        now: datetime,
    ) -> bytes:
        """The signed DER OCSPResponse saying ``status`` about ``request``'s certificate,
        current from ``now`` for the response validity, echoing ``nonce`` if given."""
        this_update = now.astimezone(UTC).replace(microsecond=0)
        revoked = status.status is CertStatus.REVOKED
        if revoked and status.revoked_at is None:
            raise CaMaterialInvalid("a revoked status needs its revocation time")
        answer = _Answer(
            algorithm=request.hash_algorithm,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial=request.serial_number,
            status=status.status,
            revoked_at=status.revoked_at if revoked else None,
            reason=_reason(status) if revoked else None,
            this_update=this_update,
            next_update=this_update + self._validity,
            nonce=nonce,
        )
        if self._template is not None and self._template.covers(answer):
            return self._template.response(answer, produced_at=this_update)
        return self._build(answer).public_bytes(serialization.Encoding.DER)

    def _build(self, answer: _Answer) -> ocsp.OCSPResponse:
        """``answer`` built and signed by ``ocsp.OCSPResponseBuilder``.

        The fallback when the template is not proven or does not cover an answer,
        and the reference it is proven against.
        """
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=answer.issuer_name_hash,
                issuer_key_hash=answer.issuer_key_hash,
                serial_number=answer.serial,
                algorithm=answer.algorithm,
                cert_status=_STATUS[answer.status],
                this_update=answer.this_update,
                next_update=answer.next_update,
                revocation_time=answer.revoked_at,
                revocation_reason=answer.reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self._certificate)
            .certificates([self._certificate])
        )
        if answer.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(answer.nonce), critical=False)
        return builder.sign(self._key, self._hash)

    def _proven_template(self) -> _ResponseTemplate | None:
        """This responder's DER template, or None unless it writes exactly what the builder does.

        Each probe answer is built by the builder, and its ResponseData written
        by the template from the same answer and the builder's own producedAt
        (the builder reads the system clock for it); the two must agree in every
        byte, and the template must wrap the builder's ResponseData and
        signature into the builder's whole response. A response the template
        signed must verify under the responder certificate's key. Any
        difference, any error on the way, or a key the template cannot sign
        with leaves this responder on the builder.
        """
        sign = direct_signer(self._key, self._hash)
        if sign is None:
            return None
        probes = _probe_answers()
        try:
            built = [self._build(answer) for answer in probes]
            cert_id_algorithms = {
                answer.algorithm.name: _cert_id_algorithm(response.tbs_response_bytes)
                for answer, response in zip(probes, built, strict=True)
            }
            template = _ResponseTemplate(
                built[0].public_bytes(serialization.Encoding.DER), cert_id_algorithms, sign
            )
            for answer, response in zip(probes, built, strict=True):
                if not template.covers(answer):
                    return None
                tbs = response.tbs_response_bytes
                if template.tbs(answer, response.produced_at_utc) != tbs:
                    return None
                whole = template.assemble(tbs, response.signature)
                if whole != response.public_bytes(serialization.Encoding.DER):
                    return None
            signed = ocsp.load_der_ocsp_response(
                template.response(probes[0], produced_at=probes[0].this_update)
            )
            _verify(
                self._certificate.public_key(),
                signed.signature,
                signed.tbs_response_bytes,
                signed.signature_hash_algorithm,
            )
        except (ValueError, TypeError, KeyError, InvalidSignature, UnsupportedAlgorithm):
            return None
        return template


class _ResponseTemplate:
    """One responder's successful responses as DER: fixed bytes around what each answer says.

    The responseStatus and responseType, the ResponderID, the
    signatureAlgorithm and the certs field are cut from ``reference``, a
    response the builder signed for this responder, so they are the builder's
    own bytes for this key and certificate. ``cert_id_algorithms`` maps a
    CertID hash name to the AlgorithmIdentifier the builder writes for it.
    ``sign`` signs ResponseData bytes with the responder key.
    """

    def __init__(
        self,
        reference: bytes,
        cert_id_algorithms: Mapping[str, bytes],
        sign: Callable[[bytes], bytes],
    ) -> None:
        status, response_bytes = _exactly(2, reference, "OCSPResponse")
        response_type, basic = _exactly(
            2, _exactly(1, response_bytes, "responseBytes")[0], "ResponseBytes"
        )
        if status != _SUCCESSFUL or response_bytes[0] != _RESPONSE_BYTES_TAG:
            raise ValueError("the reference is not a successful OCSPResponse (RFC 6960 §4.2.1)")
        tbs, signature_algorithm, _, certs = _exactly(4, der.contents(basic), "BasicOCSPResponse")
        # ResponseData: version omitted (v1, the DEFAULT), so the ResponderID comes first.
        responder_id = der.split(tbs)[0]
        if responder_id[0] != _BY_KEY_TAG:
            raise ValueError("the reference's ResponderID is not byKey (RFC 6960 §4.2.1)")
        self._responder_id = responder_id
        self._signature_algorithm = signature_algorithm
        self._certs = certs
        self._status = status
        self._response_type = response_type
        self._cert_id_algorithms = dict(cert_id_algorithms)
        self._sign = sign

    def covers(self, answer: _Answer) -> bool:
        """Whether the template writes ``answer``; else the builder does (and may refuse it)."""
        size = answer.algorithm.digest_size
        return (
            answer.algorithm.name in self._cert_id_algorithms
            and len(answer.issuer_name_hash) == size
            and len(answer.issuer_key_hash) == size
            and answer.serial >= 0
            and (answer.reason is None or answer.reason in REASON_CODES)
        )

    def tbs(self, answer: _Answer, produced_at: datetime) -> bytes:
        """The DER ResponseData (RFC 6960 §4.2.1) of ``answer``, produced at ``produced_at``."""
        cert_id = der.sequence(
            self._cert_id_algorithms[answer.algorithm.name],
            der.octet_string(answer.issuer_name_hash),
            der.octet_string(answer.issuer_key_hash),
            der.integer(answer.serial),
        )
        single = der.sequence(
            cert_id,
            _cert_status(answer),
            der.generalized_time(answer.this_update),
            der.tlv(_NEXT_UPDATE_TAG, der.generalized_time(answer.next_update)),
        )
        extensions = b""
        if answer.nonce is not None:
            # RFC 8954 §2.1: the extnValue holds the Nonce, itself an OCTET STRING;
            # not critical, so DER leaves the BOOLEAN out (X.690 §11.5).
            nonce = der.sequence(_NONCE_OID, der.octet_string(der.octet_string(answer.nonce)))
            extensions = der.tlv(_RESPONSE_EXTENSIONS_TAG, der.sequence(nonce))
        return der.sequence(
            self._responder_id,
            der.generalized_time(produced_at),
            der.sequence(single),
            extensions,
        )

    def assemble(self, tbs: bytes, signature: bytes) -> bytes:
        """The OCSPResponse around ``tbs`` and its ``signature`` (RFC 6960 §4.2.1)."""
        # The signature is a BIT STRING of whole octets: no unused bits.
        basic = der.sequence(
            tbs,
            self._signature_algorithm,
            der.tlv(der.BIT_STRING, b"\x00" + signature),
            self._certs,
        )
        response_bytes = der.sequence(self._response_type, der.octet_string(basic))
        return der.sequence(self._status, der.tlv(_RESPONSE_BYTES_TAG, response_bytes))

    def response(self, answer: _Answer, produced_at: datetime) -> bytes:
        """``answer`` signed, as the DER OCSPResponse."""
        tbs = self.tbs(answer, produced_at)
        return self.assemble(tbs, self._sign(tbs))


def _cert_status(answer: _Answer) -> bytes:
    if answer.status is CertStatus.GOOD:
        return _GOOD
    if answer.status is CertStatus.UNKNOWN:
        return _UNKNOWN
    if answer.revoked_at is None:
        raise ValueError("a revoked answer needs its revocation time")
    reason = b""
    if answer.reason is not None:
        reason = der.tlv(_REVOCATION_REASON_TAG, der.enumerated(REASON_CODES[answer.reason]))
    return der.tlv(_REVOKED_TAG, der.generalized_time(answer.revoked_at) + reason)


def _exactly(count: int, element: bytes, what: str) -> list[bytes]:
    parts = der.split(element)
    if len(parts) != count:
        raise ValueError(f"the reference's {what} has {len(parts)} elements, not {count}")
    return parts


def _cert_id_algorithm(tbs: bytes) -> bytes:
    """The hashAlgorithm AlgorithmIdentifier of the one CertID in a DER ResponseData."""
    responses = der.split(tbs)[2]
    single = _exactly(1, responses, "responses")[0]
    cert_id = der.split(single)[0]
    return _exactly(4, cert_id, "CertID")[0]


#: A serial whose top octet has its high bit set (DER adds a zero octet), a 20-octet one.
_PROBE_SERIALS = ((0x80 << 152) | 0x5A5A, 1, (1 << 159) - 1)
_PROBE_NONCES = (None, b"\x01", bytes(range(MAX_NONCE_BYTES)))
_PROBE_THIS_UPDATE = datetime(2049, 12, 31, 23, 30, tzinfo=UTC)
#: Revocation times as a caller may give them: with microseconds, naive (read as UTC),
#: and in another zone.
_PROBE_REVOKED_AT = (
    datetime(2049, 12, 31, 22, 1, 2, 345678, tzinfo=UTC),
    datetime(2010, 1, 2, 3, 4, 5),
    datetime(2030, 6, 7, 8, 9, 10, tzinfo=timezone(timedelta(hours=-5))),
)


def _probe_answers() -> list[_Answer]:
    """Answers that between them take every path of the template.

    Every status and every revocation reason, every CertID hash, with and
    without a nonce, the serial shapes and revocation time forms above, and a
    nextUpdate in the next year. Their values need not be real: probes are
    compared, never handed out.
    """
    statuses: list[tuple[CertStatus, x509.ReasonFlags | None]] = [
        (CertStatus.GOOD, None),
        (CertStatus.REVOKED, None),
        (CertStatus.UNKNOWN, None),
        *((CertStatus.REVOKED, reason) for reason in REASON_CODES),
    ]
    probes = []
    for index, (status, reason) in enumerate(statuses):
        algorithm = _CERT_ID_HASHES[index % len(_CERT_ID_HASHES)]()
        revoked = status is CertStatus.REVOKED
        probes.append(
            _Answer(
                algorithm=algorithm,
                issuer_name_hash=bytes((index,)) * algorithm.digest_size,
                issuer_key_hash=bytes((0xFF - index,)) * algorithm.digest_size,
                serial=_PROBE_SERIALS[index % len(_PROBE_SERIALS)],
                status=status,
                revoked_at=_PROBE_REVOKED_AT[index % len(_PROBE_REVOKED_AT)] if revoked else None,
                reason=reason,
                this_update=_PROBE_THIS_UPDATE,
                next_update=_PROBE_THIS_UPDATE + DEFAULT_RESPONSE_VALIDITY,
                nonce=_PROBE_NONCES[index % len(_PROBE_NONCES)],
            )
        )
    return probes


_STATUS = {
    CertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


def _reason(status: SerialStatus) -> x509.ReasonFlags | None:
    # RFC 5280 §5.3.1: leave the reason out rather than say "unspecified".
    if status.reason in (None, x509.ReasonFlags.unspecified):
        return None
    return status.reason


def _subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    return subject_public_key_bits(public_key_der(certificate.public_key()))  # type: ignore[arg-type]


def build_request(certificate: x509.Certificate, issuer: x509.Certificate,
                  nonce: bytes | None = None, *,
                  algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """A DER OCSP request for ``certificate`` (CertID with ``algorithm``, SHA-256 unless
    given), with ``nonce`` if given."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate, issuer, algorithm or hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def check_response(
    response_der: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    *,
    nonce: bytes | None = None,
    clock_skew: timedelta = OCSP_CLOCK_SKEW,
) -> SerialStatus:
    """What an OCSP response says about ``certificate``, after the checks RFC 6960 §3.2
    asks of a client; anything it must not rely on raises ``OcspResponseInvalid``.

    The response must be successful and about this certificate of this issuer (CertID);
    signed by the issuer itself or by a responder certificate the issuer issued directly,
    with id-kp-OCSPSigning and valid now (§4.2.2.2); current (thisUpdate not after now,
    nextUpdate not before it, each within ``clock_skew``); and echo ``nonce`` if one was
    sent and the responder answered with one (RFC 8954 lets a responder ignore it).
    """
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        raise OcspResponseInvalid(f"OCSP response cannot be decoded: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspResponseInvalid(f"OCSP responder answered {response.response_status.name}")
    try:
        answers = len(list(response.responses))
        if answers != 1:
            raise OcspResponseInvalid(f"OCSP response carries {answers} answers, not one")
        extensions = response.extensions
        algorithm = response.hash_algorithm
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OcspResponseInvalid(f"OCSP response cannot be decoded: {exc}") from None
    if not isinstance(algorithm, _CERT_ID_HASHES) or (
        response.serial_number,
        response.issuer_name_hash,
        response.issuer_key_hash,
    ) != (
        certificate.serial_number,
        hashlib.new(algorithm.name, issuer.subject.public_bytes()).digest(),
        hashlib.new(algorithm.name, _subject_public_key_bits(issuer)).digest(),
    ):
        raise OcspResponseInvalid("OCSP response is about another certificate")
    _check_signed_by_authorised_responder(response, issuer, now)
    if response.this_update_utc > now + clock_skew:
        raise OcspResponseInvalid("OCSP response's thisUpdate is in the future")
    next_update = response.next_update_utc
    if next_update is not None and next_update < now - clock_skew:
        raise OcspResponseInvalid(
            f"OCSP response is stale (nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ})")
    if nonce is not None:
        try:
            echoed = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = nonce
        if echoed != nonce:
            raise OcspResponseInvalid("OCSP response echoes another nonce (a replay?)")
    status = response.certificate_status
    if status is ocsp.OCSPCertStatus.REVOKED:
        return SerialStatus(CertStatus.REVOKED, response.revocation_time_utc,
                            response.revocation_reason)
    if status is ocsp.OCSPCertStatus.GOOD:
        return GOOD
    return UNKNOWN


def _check_signed_by_authorised_responder(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
) -> None:
    """RFC 6960 §4.2.2.2: signed by the CA, or by a delegated responder it issued."""
    signer = _responder_certificate(response, issuer)
    if signer is not issuer:
        try:
            _check_responder_certificate(issuer, signer)
        except CaMaterialInvalid as exc:
            raise OcspResponseInvalid(str(exc)) from None
        if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
            raise OcspResponseInvalid("the OCSP responder certificate is not valid now")
    try:
        _verify(signer.public_key(), response.signature, response.tbs_response_bytes,
                response.signature_hash_algorithm)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise OcspResponseInvalid("OCSP response signature does not verify") from None


def _responder_certificate(response: ocsp.OCSPResponse,
                           issuer: x509.Certificate) -> x509.Certificate:
    """The certificate the ResponderID names: the issuer or one carried in the response."""
    for candidate in (issuer, *response.certificates):
        if response.responder_key_hash is not None:
            key_hash = hashlib.sha1(_subject_public_key_bits(candidate),
                                    usedforsecurity=False).digest()
            if key_hash == response.responder_key_hash:
                return candidate
        elif candidate.subject == response.responder_name:
            return candidate
    raise OcspResponseInvalid("OCSP response is signed by a responder it does not identify")


def _verify(key: object, signature: bytes, data: bytes,
            algorithm: hashes.HashAlgorithm | None) -> None:
    """Check ``signature`` as the certificate-signing algorithms sign (PKCS #1 v1.5)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        raise UnsupportedAlgorithm(f"cannot verify with a {type(key).__name__}")


def _check_responder(
    issuer: x509.Certificate, certificate: x509.Certificate, key: PrivateKey
) -> None:
    """RFC 6960 §4.2.2.2: the delegated responder is issued by the CA and has OCSPSigning."""
    if public_key_der(key) != public_key_der(certificate.public_key()):  # type: ignore[arg-type]
        raise CaMaterialInvalid("the OCSP responder key does not match its certificate")
    _check_responder_certificate(issuer, certificate)


def _check_responder_certificate(issuer: x509.Certificate, certificate: x509.Certificate) -> None:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaMaterialInvalid(
            f"the OCSP responder certificate is not issued by the CA: {exc}"
        ) from None
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise CaMaterialInvalid("the OCSP responder certificate lacks the OCSPSigning EKU")
