"""The CA hierarchy: a root and one issuing intermediate per trust domain.

``create_hierarchy`` makes both (RFC 5280 §4.2.1.9 basic constraints,
§4.2.1.3 key usage, §4.2.1.10 name constraints). The intermediate has pathLen 0
so it can only sign leaves, and a critical name constraint that permits URIs
whose host is the trust domain, so a certificate it signed for another trust
domain fails path validation anywhere. ``import_issuing_ca`` takes an existing
intermediate (bring your own CA) after checking that it is a CA, that the key
is its key, and that it chains to a self-signed root.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pki.errors import CaMaterialInvalid
from pki.keys import (
    DEFAULT_KEY_TYPE,
    KeyType,
    PrivateKey,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_der,
    public_key_fingerprint,
    signature_hash,
)
from pki.names import check_trust_domain

#: The root signs rarely and lives offline if the admin wants: about ten years.
ROOT_LIFETIME = timedelta(days=3653)
#: The issuing intermediate: about five years, well inside the root's life.
INTERMEDIATE_LIFETIME = timedelta(days=1826)
#: Longest chain accepted on import (issuing CA, further intermediates, root).
MAX_CHAIN_LENGTH = 8
#: RFC 5280 §4.1.2.6 ub-common-name.
MAX_COMMON_NAME = 64
#: CA serials: 159 random bits, as for leaves (RFC 5280 §4.1.2.2: at most 20 octets).
SERIAL_BITS = 159


@dataclass(frozen=True)
class IssuingCa:
    """The CA that signs leaves: its certificate and key, and the path to the root.

    ``intermediates`` starts with ``certificate`` and goes up to, but excludes,
    ``root``: it is what a client sends as its chain (``chain.pem``).
    """

    certificate: x509.Certificate
    key: PrivateKey
    intermediates: tuple[x509.Certificate, ...]
    root: x509.Certificate

    @property
    def chain_pem(self) -> bytes:
        return certificates_pem(self.intermediates)

    @property
    def root_pem(self) -> bytes:
        return certificates_pem([self.root])

    @property
    def certificate_pem(self) -> bytes:
        return certificates_pem([self.certificate])

    def key_pem(self, passphrase: bytes) -> bytes:
        """The issuing key as encrypted PKCS#8, for storage at rest."""
        return private_key_pem(self.key, passphrase)

    @property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        """The AKI for what this CA signs: its SKI, or one derived from its key if it has none."""
        try:
            ski = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        except x509.ExtensionNotFound:
            ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    @property
    def ca_key_fingerprints(self) -> frozenset[str]:
        """SPKI SHA-256 of every CA key in the chain: no leaf may reuse one."""
        return frozenset(
            public_key_fingerprint(c.public_key())  # type: ignore[arg-type]
            for c in (*self.intermediates, self.root)
        )


@dataclass(frozen=True)
class CaHierarchy:
    """A freshly created root and issuing CA. ``root_key`` is None once taken offline."""

    trust_domain: str
    root_key: PrivateKey | None
    issuing: IssuingCa

    @property
    def root(self) -> x509.Certificate:
        return self.issuing.root

    def root_key_pem(self, passphrase: bytes) -> bytes:
        """The root key as encrypted PKCS#8, to take off the machine."""
        if self.root_key is None:
            raise CaMaterialInvalid("the root key is offline; it is not held here")
        return private_key_pem(self.root_key, passphrase)

    def without_root_key(self) -> CaHierarchy:
        return CaHierarchy(self.trust_domain, None, self.issuing)


def create_hierarchy(
    trust_domain: str,
    now: datetime,
    key_type: KeyType | str = DEFAULT_KEY_TYPE,
    *,
    root_lifetime: timedelta = ROOT_LIFETIME,
    intermediate_lifetime: timedelta = INTERMEDIATE_LIFETIME,
) -> CaHierarchy:
    """A new root and issuing intermediate for ``trust_domain``, both keys of ``key_type``."""
    check_trust_domain(trust_domain)
    if intermediate_lifetime > root_lifetime:
        raise CaMaterialInvalid("the intermediate cannot outlive its root")
    now = now.replace(microsecond=0)
    root_key = generate_private_key(key_type)
    root_name = _ca_name(trust_domain, "Root CA")
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(_serial())
        .not_valid_before(now)
        .not_valid_after(now + root_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(root_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, signature_hash(root_key))
    )
    issuing_key = generate_private_key(key_type)
    issuing = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(trust_domain, "Issuing CA"))
        .issuer_name(root_name)
        .public_key(issuing_key.public_key())
        .serial_number(_serial())
        .not_valid_before(now)
        .not_valid_after(now + intermediate_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        # RFC 5280 §4.2.1.10: a URI constraint is a host; the extension MUST be critical.
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, signature_hash(root_key))
    )
    return CaHierarchy(trust_domain, root_key, IssuingCa(issuing, issuing_key, (issuing,), root))


def import_issuing_ca(
    certificate_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes,
    now: datetime,
    *,
    passphrase: bytes | None = None,
    trust_domain: str | None = None,
) -> IssuingCa:
    """Bring your own CA: the issuing certificate, its key, and the chain to its root.

    ``chain_pem`` holds the certificates above the issuing CA, ending with (or
    only holding) the self-signed root, in any order. Refuses, with the reason,
    a certificate that is not a CA or may not sign certificates, a key that is
    not the certificate's, a chain that does not reach a self-signed root, any
    certificate outside its validity at ``now``, and name constraints that
    exclude ``trust_domain``.
    """
    certificate = _single_certificate(certificate_pem)
    key = load_private_key(key_pem, passphrase)
    if public_key_der(key) != public_key_der(certificate.public_key()):  # type: ignore[arg-type]
        raise CaMaterialInvalid("the private key does not match the CA certificate")
    _check_is_ca(certificate)
    if not certificate.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign:
        raise CaMaterialInvalid("the issuing CA lacks the cRLSign key usage; it cannot sign CRLs")
    path = _build_path(certificate, load_certificates(chain_pem))
    _check_path_in_force(path, now)
    if trust_domain is not None:
        _check_permits_trust_domain(path, check_trust_domain(trust_domain))
    return IssuingCa(certificate, key, tuple(path[:-1]), path[-1])


def renew_issuing_ca(
    ca: IssuingCa,
    signer_key: PrivateKey,
    now: datetime,
    *,
    lifetime: timedelta = INTERMEDIATE_LIFETIME,
) -> IssuingCa:
    """The issuing CA certified again by the CA above it: same name, same key, same
    extensions (name constraints, pathLen, key identifiers), a new serial and a new
    validity from ``now``, ending at ``now + lifetime`` or with its issuer, whichever is
    first. Certificates, CRLs and OCSP answers the old certificate's key signed verify
    under the new one too (RFC 5280 §6.1: the path is matched by name and checked with
    the key), so nothing issued before has to change.

    ``signer_key`` is the key of the issuing CA's own issuer (the root for a hierarchy
    ``create_hierarchy`` made). Refused, with the reason, when it is another key, or when
    the new certificate would not end later than the current one."""
    issuer = ca.intermediates[1] if len(ca.intermediates) > 1 else ca.root
    if public_key_der(signer_key) != public_key_der(issuer.public_key()):  # type: ignore[arg-type]
        raise CaMaterialInvalid(
            f"the key given is not the key of {issuer.subject.rfc4514_string()}, which "
            "issued the issuing CA")
    now = now.replace(microsecond=0)
    not_after = min(now + lifetime, issuer.not_valid_after_utc)
    _check_extends(ca.certificate, not_after, issuer)
    old = ca.certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(issuer.subject)
        .public_key(old.public_key())
        .serial_number(_serial())
        .not_valid_before(now)
        .not_valid_after(not_after)
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    renewed = builder.sign(signer_key, signature_hash(signer_key))
    return IssuingCa(renewed, ca.key, (renewed, *ca.intermediates[1:]), ca.root)


def install_renewed_issuing_ca(
    ca: IssuingCa,
    certificate_pem: bytes,
    chain_pem: bytes | None,
    now: datetime,
    *,
    trust_domain: str | None = None,
) -> IssuingCa:
    """A renewal of the issuing CA signed elsewhere (bring your own CA): a certificate
    for the same name and the same key, valid now, ending later than the current one,
    and chaining (through ``chain_pem``, by default the current chain above it) to the
    same root, whose name constraints still admit ``trust_domain``. Anything else is
    refused with the reason: a new key or a new root is another CA, which the
    certificates already issued would not chain to."""
    renewed = _single_certificate(certificate_pem)
    if renewed.subject != ca.certificate.subject:
        raise CaMaterialInvalid(
            f"the renewed certificate names {renewed.subject.rfc4514_string()}, not "
            f"{ca.certificate.subject.rfc4514_string()}")
    if public_key_der(ca.key) != public_key_der(renewed.public_key()):  # type: ignore[arg-type]
        raise CaMaterialInvalid(
            "the renewed certificate is for another key; a renewal keeps the issuing "
            "CA's key (the certificates it issued are checked with it)")
    _check_is_ca(renewed)
    above = load_certificates(chain_pem) if chain_pem else [*ca.intermediates[1:], ca.root]
    path = _build_path(renewed, above)
    if path[-1] != ca.root:
        raise CaMaterialInvalid(
            f"the renewed certificate chains to {path[-1].subject.rfc4514_string()}, not "
            "to this CA's root (which workloads and supplicants trust)")
    _check_path_in_force(path, now)
    _check_extends(ca.certificate, renewed.not_valid_after_utc, path[1])
    if trust_domain is not None:
        _check_permits_trust_domain(path, check_trust_domain(trust_domain))
    return IssuingCa(renewed, ca.key, tuple(path[:-1]), ca.root)


def _check_path_in_force(path: Sequence[x509.Certificate], now: datetime) -> None:
    """Every certificate of ``path`` is a CA and valid at ``now``."""
    for cert in path:
        _check_is_ca(cert)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CaMaterialInvalid(
                f"CA certificate {cert.subject.rfc4514_string()} is not valid at "
                f"{now:%Y-%m-%d %H:%M}")


def _check_extends(current: x509.Certificate, not_after: datetime,
                   issuer: x509.Certificate) -> None:
    if not_after <= current.not_valid_after_utc:
        raise CaMaterialInvalid(
            f"the issuing CA would end at {not_after:%Y-%m-%dT%H:%M:%SZ}, no later than now "
            f"({current.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}); its issuer "
            f"{issuer.subject.rfc4514_string()} ends at "
            f"{issuer.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; an empty or broken bundle raises."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CaMaterialInvalid(f"not a PEM certificate bundle: {exc}") from None
    return certs


def certificates_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _single_certificate(pem: bytes) -> x509.Certificate:
    certs = load_certificates(pem)
    if len(certs) != 1:
        raise CaMaterialInvalid(f"expected one CA certificate, found {len(certs)}")
    return certs[0]


def _check_is_ca(cert: x509.Certificate) -> None:
    name = cert.subject.rfc4514_string()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CaMaterialInvalid(f"{name} lacks {exc.oid._name}; it is not a CA") from None
    if not constraints.ca:
        raise CaMaterialInvalid(f"{name} has basicConstraints CA:FALSE; it is not a CA")
    if not usage.key_cert_sign:
        raise CaMaterialInvalid(f"{name} lacks the keyCertSign key usage")


def _build_path(
    start: x509.Certificate, pool: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """From ``start`` up to a self-signed root, each link's signature verified."""
    path = [start]
    current = start
    while current.issuer != current.subject or not _signed_by(current, current):
        if len(path) >= MAX_CHAIN_LENGTH:
            raise CaMaterialInvalid(f"no root within {MAX_CHAIN_LENGTH} certificates")
        parent = next((c for c in pool if c not in path and _signed_by(current, c)), None)
        if parent is None:
            raise CaMaterialInvalid(
                f"no certificate in the chain issued {current.subject.rfc4514_string()}"
            )
        path.append(parent)
        current = parent
    if len(path) < 2:
        raise CaMaterialInvalid("the issuing CA is self-signed; import an intermediate")
    return path


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_permits_trust_domain(path: Sequence[x509.Certificate], trust_domain: str) -> None:
    """RFC 5280 §4.2.1.10: every URI subtree in the path must admit the trust domain."""
    for cert in path:
        try:
            nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        permitted = _uri_constraints(nc.permitted_subtrees)
        excluded = _uri_constraints(nc.excluded_subtrees)
        if nc.permitted_subtrees is not None and not any(
            _uri_host_matches(trust_domain, c) for c in permitted
        ):
            raise CaMaterialInvalid(
                f"{cert.subject.rfc4514_string()} name constraints do not permit "
                f"URIs in {trust_domain}"
            )
        if any(_uri_host_matches(trust_domain, c) for c in excluded):
            raise CaMaterialInvalid(
                f"{cert.subject.rfc4514_string()} name constraints exclude {trust_domain}"
            )


def _uri_constraints(subtrees: Iterable[x509.GeneralName] | None) -> list[str]:
    return [n.value for n in subtrees or () if isinstance(n, x509.UniformResourceIdentifier)]


def _uri_host_matches(host: str, constraint: str) -> bool:
    # RFC 5280 §4.2.1.10: ".example.com" matches subdomains, "example.com" the host only.
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_name(trust_domain: str, role: str) -> x509.Name:
    common_name = f"{trust_domain} {role}"
    if len(common_name) > MAX_COMMON_NAME:
        common_name = f"{trust_domain[: MAX_COMMON_NAME - len(role) - 2]}… {role}"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nhi-nac"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _serial() -> int:
    return secrets.randbits(SERIAL_BITS) | 1
