"""The enrolling side: key and CSR made locally, credentials written atomically,
and the renewal proof a workload signs with its current key.

Enrollment (``nhi-nac enroll``): the key is generated on the host and never
leaves it; the CSR carries only the public key (and, if the client knows it,
the SPIFFE ID it expects). What comes back is written into ``DIR`` as
``key.pem`` (0600 from creation), ``cert.pem``, ``chain.pem`` (intermediates)
and ``ca.pem`` (root), each through a temporary file in ``DIR`` and
``os.replace``, so a reader never sees a half-written file.

Renewal without a token: the client signs ``{typ, csr, serial, cert_sha256,
iat}`` with its current private key (``build_renewal_proof``); the server,
holding the current certificate by that serial, checks it with
``verify_renewal_proof``: issued by our CA, inside its validity, not revoked,
signature by the certified key, and signed within ``RENEWAL_PROOF_MAX_AGE``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pki.errors import EnrollmentRefused, PkiError
from pki.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_der,
    signature_hash,
)
from pki.names import SpiffeId

KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"
CHAIN_FILE = "chain.pem"
CA_FILE = "ca.pem"

RENEWAL_PROOF_TYPE = "nhi-nac-renewal/v1"
#: A proof older than this is refused, which bounds how long a stolen one is useful.
RENEWAL_PROOF_MAX_AGE = timedelta(minutes=5)
#: A proof dated this far in the future is tolerated (clock skew), no more.
RENEWAL_CLOCK_SKEW = timedelta(minutes=1)
#: A proof holds one CSR; anything larger is not a proof.
MAX_RENEWAL_PROOF_BYTES = 32 * 1024
#: Renew by the time this fraction of the lifetime has passed ...
RENEWAL_FRACTION = 2 / 3
#: ... and no earlier than this much (a fraction of the lifetime) before it. Where in
#: that window comes from the certificate's random serial, so a fleet enrolled together
#: (a rack booting) does not come back to the CA in the same second, and one
#: certificate's renewal time is the same every time it is asked (the timer's --if-due).
RENEWAL_JITTER = 1 / 15


@dataclass(frozen=True)
class Enrollment:
    """A key made here and the CSR to send; the key stays on this host."""

    key: PrivateKey
    csr_pem: bytes


@dataclass(frozen=True, slots=True)
class CredentialFiles:
    directory: Path
    key: Path
    certificate: Path
    chain: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class RenewalRequest:
    """A verified renewal: the new CSR, for the identity the current certificate names."""

    csr_pem: bytes
    serial: int
    spiffe_id: SpiffeId
    signed_at: datetime


def build_csr(
    key: PrivateKey, spiffe_id: str | None = None, dns_names: Sequence[str] = ()
) -> bytes:
    """A PEM CSR for ``key``; the subject is empty, the SAN holds what is given."""
    names: list[x509.GeneralName] = []
    if spiffe_id is not None:
        names.append(x509.UniformResourceIdentifier(spiffe_id))
    names.extend(x509.DNSName(n) for n in dns_names)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, signature_hash(key)).public_bytes(serialization.Encoding.PEM)


def new_enrollment(
    key_type: KeyType | str = DEFAULT_KEY_TYPE,
    spiffe_id: str | None = None,
    dns_names: Sequence[str] = (),
) -> Enrollment:
    """Generate a key locally and the CSR that carries its public half."""
    key = generate_private_key(key_type)
    return Enrollment(key, build_csr(key, spiffe_id, dns_names))


def write_credentials(
    directory: str | Path,
    key: PrivateKey,
    certificate_pem: bytes,
    chain_pem: bytes,
    ca_pem: bytes,
) -> CredentialFiles:
    """Write key, certificate, chain and root into ``directory``, each file atomically.

    The certificate must certify ``key``. Every file is staged and fsynced
    first, then renamed into place (the root and chain first, the key and
    certificate last), so a crash leaves either the old or the new files.
    """
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    if public_key_der(certificate.public_key()) != public_key_der(key):  # type: ignore[arg-type]
        raise EnrollmentRefused("the certificate returned does not certify our key")
    target = Path(directory)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = CredentialFiles(
        target, target / KEY_FILE, target / CERT_FILE, target / CHAIN_FILE, target / CA_FILE
    )
    contents = [
        (files.ca, ca_pem, 0o644),
        (files.chain, chain_pem, 0o644),
        (files.key, private_key_pem(key), 0o600),
        (files.certificate, certificate_pem, 0o644),
    ]
    staged: list[tuple[str, Path]] = []
    try:
        for final, data, mode in contents:
            staged.append((_stage(target, final.name, data, mode), final))
        for temporary, final in staged:
            os.replace(temporary, final)
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    fsync_directory(target)
    return files


def read_credentials(directory: str | Path) -> tuple[PrivateKey, x509.Certificate]:
    """The current key and certificate from an enrollment directory (for renewal)."""
    target = Path(directory)
    key = load_private_key((target / KEY_FILE).read_bytes())
    certificate = x509.load_pem_x509_certificate((target / CERT_FILE).read_bytes())
    return key, certificate


def renewal_time(certificate: x509.Certificate) -> datetime:
    """When to renew: between 60% and two thirds into the certificate's lifetime, at a
    point its serial picks (see ``RENEWAL_JITTER``)."""
    start = certificate.not_valid_before_utc
    spread = (certificate.serial_number % 65_536) / 65_536
    fraction = RENEWAL_FRACTION - RENEWAL_JITTER * spread
    return start + (certificate.not_valid_after_utc - start) * fraction


def _stage(directory: Path, name: str, data: bytes, mode: int) -> str:
    # mkstemp creates the file 0600, so the key is never readable by others, not even briefly.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode != 0o600:
            os.chmod(temporary, mode)
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (fsync of the directory itself)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def build_renewal_proof(
    key: PrivateKey, certificate: x509.Certificate, csr_pem: bytes, now: datetime
) -> bytes:
    """A renewal request for ``csr_pem`` signed by ``key``, the current certificate's key."""
    payload = json.dumps(
        {
            "typ": RENEWAL_PROOF_TYPE,
            "csr": csr_pem.decode("ascii"),
            "serial": format(certificate.serial_number, "x"),
            "cert_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
            "iat": int(now.timestamp()),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    signature = _sign(key, payload)
    return json.dumps({"payload": _b64(payload), "signature": _b64(signature)}).encode()


def renewal_proof_serial(proof: bytes) -> int:
    """The serial a proof claims, unverified: to find the certificate to verify it with."""
    return int(_decode_proof(proof)[1]["serial"], 16)


def verify_renewal_proof(
    proof: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    *,
    is_revoked: Callable[[int], bool],
    max_age: timedelta = RENEWAL_PROOF_MAX_AGE,
) -> RenewalRequest:
    """Check a renewal proof against the current ``certificate``; raise ``EnrollmentRefused``.

    Refuses a proof that is malformed, for another certificate, too old or
    from the future, or badly signed; and a certificate that ``issuer`` did not
    sign, that is expired or not yet valid at ``now``, or that ``is_revoked``.
    """
    payload_bytes, payload, signature = _decode_proof(proof)
    if payload.get("typ") != RENEWAL_PROOF_TYPE:
        raise EnrollmentRefused("renewal proof is not of type " + RENEWAL_PROOF_TYPE)
    serial = int(payload["serial"], 16)
    if (
        serial != certificate.serial_number
        or payload.get("cert_sha256") != certificate.fingerprint(hashes.SHA256()).hex()
    ):
        raise EnrollmentRefused("renewal proof is for another certificate")
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrollmentRefused("the current certificate was not issued by this CA") from None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise EnrollmentRefused(
            f"the current certificate is not valid now (valid "
            f"{certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}); enroll with a token"
        )
    if is_revoked(serial):
        raise EnrollmentRefused("the current certificate is revoked; enroll with a token")
    _verify(certificate.public_key(), signature, payload_bytes)  # type: ignore[arg-type]
    signed_at = datetime.fromtimestamp(int(payload["iat"]), UTC)
    if not now - max_age <= signed_at <= now + RENEWAL_CLOCK_SKEW:
        raise EnrollmentRefused(
            f"renewal proof signed at {signed_at:%Y-%m-%dT%H:%M:%SZ} is stale or from the future"
        )
    return RenewalRequest(
        payload["csr"].encode("ascii"), serial, _certificate_identity(certificate), signed_at
    )


def _decode_proof(proof: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    if len(proof) > MAX_RENEWAL_PROOF_BYTES:
        raise EnrollmentRefused(f"renewal proof larger than {MAX_RENEWAL_PROOF_BYTES} bytes")
    try:
        outer = json.loads(proof)
        payload_bytes = _unb64(outer["payload"])
        signature = _unb64(outer["signature"])
        payload = json.loads(payload_bytes)
        int(payload["serial"], 16)
        datetime.fromtimestamp(int(payload["iat"]), UTC)
        payload["csr"].encode("ascii")
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,
        OSError,
        binascii.Error,
    ):
        raise EnrollmentRefused("renewal proof is malformed") from None
    if not isinstance(payload, dict):
        raise EnrollmentRefused("renewal proof is malformed")
    return payload_bytes, payload, signature


def _certificate_identity(certificate: x509.Certificate) -> SpiffeId:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
        return SpiffeId.parse(uri)
    except (x509.ExtensionNotFound, ValueError, PkiError):
        raise EnrollmentRefused("the current certificate names no single SPIFFE ID") from None


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(signature_hash(key) or hashes.SHA256()))
    return key.sign(data, _pss(), hashes.SHA256())


def _verify(key: PublicKey, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(signature_hash(key) or hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _pss(), hashes.SHA256())
        else:
            raise EnrollmentRefused("the current certificate's key type cannot sign a proof")
    except InvalidSignature:
        raise EnrollmentRefused("renewal proof signature does not verify") from None
