"""CSR checks: the CSR supplies a key and proves possession of it, nothing more.

As in Boulder (``csr/csr.go``) and step-ca, what the certificate contains is
decided by the profile; the CSR's requested names are only compared with what
the identity may hold, and anything outside that is refused rather than
dropped, so the requester learns why. Each refusal raises ``CsrRejected`` or
``PolicyViolation`` with the reason.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from pki.errors import CsrRejected, PolicyViolation
from pki.keys import RSA_PUBLIC_EXPONENT, PublicKey, public_key_fingerprint
from pki.names import SpiffeId

#: A CSR larger than this is not one we would sign; refuse before parsing.
MAX_CSR_BYTES = 16 * 1024
#: RSA moduli accepted in a CSR (below 2048 is weak; above 4096 only costs the verifier).
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 4096
#: Digests a CSR self-signature may use (SHA-1 and MD5 are refused).
ALLOWED_SIGNATURE_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
#: ECDSA signature algorithms a CSR may use, with their digests.
_ECDSA_HASHES: dict[x509.ObjectIdentifier, type[hashes.HashAlgorithm]] = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: hashes.SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: hashes.SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: hashes.SHA512,
}


class KeyBindings(Protocol):
    """What storage knows about a public key, by its SPKI SHA-256 (hex)."""

    def bound_identity(self, key_fingerprint: str) -> tuple[str, str] | None:
        """The ``(kind, name)`` already holding a certificate for this key, or None."""
        ...


@dataclass(frozen=True, slots=True)
class CheckedCsr:
    """A CSR that passed every check: the key to certify and the DNS names asked for."""

    public_key: PublicKey
    key_fingerprint: str
    dns_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedCsr:
    """A CSR parsed once, with its public key and that key's SPKI SHA-256 (hex).

    Not yet checked: ``check_csr`` still verifies the self-signature and the key's policy.
    Lets a caller look up key bindings before checking without parsing twice.
    """

    csr: x509.CertificateSigningRequest
    public_key: CertificatePublicKeyTypes
    key_fingerprint: str


def parse_csr(data: bytes) -> ParsedCsr:
    """``load_csr``, plus the public key and its fingerprint; failures raise ``CsrRejected``."""
    csr = load_csr(data)
    try:
        key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CsrRejected(f"CSR public key is not supported: {exc}") from None
    return ParsedCsr(csr, key, public_key_fingerprint(key))  # type: ignore[arg-type]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR; anything unparseable raises ``CsrRejected``."""
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CsrRejected(f"CSR cannot be parsed: {exc}") from None


def check_csr(
    data: bytes | x509.CertificateSigningRequest | ParsedCsr,
    identity: SpiffeId,
    *,
    allowed_dns_names: Collection[str] = (),
    key_bindings: KeyBindings | None = None,
    ca_key_fingerprints: Collection[str] = (),
) -> CheckedCsr:
    """Check a CSR for ``identity`` and return what may be certified.

    Refuses a bad self-signature, a key type or size outside policy, a
    CA:TRUE basicConstraints request, a requested name other than the
    identity's SPIFFE ID or one of ``allowed_dns_names``, a CA's key, and a key
    already bound to another identity (asked of ``key_bindings``).
    """
    if isinstance(data, ParsedCsr):
        csr, key, fingerprint = data.csr, data.public_key, data.key_fingerprint
    else:
        csr = data if isinstance(data, x509.CertificateSigningRequest) else load_csr(data)
        key, fingerprint = _public_key_of(csr), ""
    _check_signature(csr, key)
    public_key = _check_public_key(key)
    fingerprint = fingerprint or public_key_fingerprint(public_key)
    dns_names = _check_requested_names(csr, identity, allowed_dns_names)
    if fingerprint in ca_key_fingerprints:
        raise CsrRejected("the CSR's public key belongs to a certificate authority")
    if key_bindings is not None:
        bound = key_bindings.bound_identity(fingerprint)
        if bound is not None and bound != (identity.kind, identity.name):
            raise CsrRejected(
                f"the CSR's public key is already bound to another identity ({bound[0]}/{bound[1]})"
            )
    return CheckedCsr(public_key, fingerprint, dns_names)


def _check_signature(csr: x509.CertificateSigningRequest,
                     key: CertificatePublicKeyTypes) -> None:
    """The CSR's self-signature, checked with ``key`` (its own public key, parsed once by
    the caller): ``is_signature_valid`` would parse the key again, which costs a sixth of
    the verification. ECDSA and Ed25519 signatures whose algorithm matches the key are
    checked here; anything else (RSA, SHA-1, a mismatch) by the library's own check."""
    oid = csr.signature_algorithm_oid
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA_HASHES:
            key.verify(csr.signature, csr.tbs_certrequest_bytes,
                       ec.ECDSA(_ECDSA_HASHES[oid]()))
            return
        if isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            key.verify(csr.signature, csr.tbs_certrequest_bytes)
            return
    except InvalidSignature:
        raise CsrRejected("CSR signature does not verify with its own public key") from None
    try:
        valid = csr.is_signature_valid
        algorithm = csr.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CsrRejected(f"CSR signature algorithm is not supported: {exc}") from None
    if not valid:
        raise CsrRejected("CSR signature does not verify with its own public key")
    if algorithm is not None and not isinstance(algorithm, ALLOWED_SIGNATURE_HASHES):
        raise CsrRejected(f"CSR is signed with {algorithm.name}; use SHA-256 or stronger")


def _public_key_of(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    try:
        return csr.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CsrRejected(f"CSR public key is not supported: {exc}") from None


def _check_public_key(key: CertificatePublicKeyTypes) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ALLOWED_CURVES):
            raise CsrRejected(f"elliptic curve {key.curve.name} is not allowed (P-256, P-384)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise CsrRejected(
                f"RSA key of {key.key_size} bits is outside {RSA_MIN_BITS}-{RSA_MAX_BITS}"
            )
        if key.public_numbers().e != RSA_PUBLIC_EXPONENT:
            raise CsrRejected(
                f"RSA public exponent {key.public_numbers().e} is not {RSA_PUBLIC_EXPONENT}"
            )
        return key
    raise CsrRejected(
        f"{type(key).__name__} keys are not allowed (P-256, P-384, Ed25519, RSA 2048-4096)"
    )


def _check_requested_names(
    csr: x509.CertificateSigningRequest, identity: SpiffeId, allowed_dns_names: Collection[str]
) -> tuple[str, ...]:
    try:
        extensions = csr.extensions
    except ValueError as exc:
        raise CsrRejected(f"CSR extensions cannot be parsed: {exc}") from None
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise CsrRejected("CSR asks for basicConstraints CA:TRUE; leaves are never CAs")
    dns_names: list[str] = []
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    for general_name in san:
        if isinstance(general_name, x509.UniformResourceIdentifier):
            if general_name.value != identity.uri:
                raise PolicyViolation(
                    f"CSR asks for URI {general_name.value!r}; this identity is {identity.uri}"
                )
        elif isinstance(general_name, x509.DNSName):
            if general_name.value not in allowed_dns_names:
                raise PolicyViolation(
                    f"CSR asks for DNS name {general_name.value!r}, which this identity's "
                    "scope does not allow"
                )
            if general_name.value not in dns_names:
                dns_names.append(general_name.value)
        else:
            raise PolicyViolation(
                f"CSR asks for a {type(general_name).__name__} name; only the SPIFFE ID "
                "and allowed DNS names can be certified"
            )
    acceptable_cn = {identity.name, f"{identity.kind}/{identity.name}", identity.uri}
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else ""
        if value not in acceptable_cn and value not in allowed_dns_names:
            raise PolicyViolation(
                f"CSR subject common name {value!r} does not name this identity ({identity.uri})"
            )
    return tuple(dns_names)
