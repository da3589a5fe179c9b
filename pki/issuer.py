"""Leaf issuance: one certificate per call, built from the profile, never from the CSR.

Every leaf (RFC 5280 §4.1, SPIFFE X.509-SVID §4, §5):

- exactly one URI SAN, ``spiffe://<trust-domain>/<kind>/<name>``; DNS SANs only
  when the caller says the identity may hold them and the profile allows it;
- basicConstraints CA:FALSE, digitalSignature key usage (keyEncipherment too
  for RSA server keys, for TLS 1.2 RSA key transport), the profile's EKUs;
- AKI/SKI, a CRL distribution point and the OCSP responder in AIA;
- a serial of 159 bits from ``secrets`` (positive, below 2^159, so at most 20
  DER octets per §4.1.2.2);
- a validity within the profile's maximum and within the CA's own life. A
  request beyond either is refused with the reason; it is never trimmed.

Per-issuance speed matters (thousands per second per core), so everything that
does not depend on the request — issuer name, AKI, CRL DP, AIA, basic
constraints, key usages, EKUs per profile — is built once in ``__init__`` as
finished ``x509.Extension`` objects and handed to the builder's constructor.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from pki.csr import KeyBindings, ParsedCsr, check_csr
from pki.errors import LocalError, PolicyViolation
from pki.hierarchy import IssuingCa
from pki.keys import PublicKey, public_key_fingerprint, signature_hash
from pki.names import SpiffeId, check_dns_name, check_trust_domain
from pki.profiles import PROFILES, Profile

#: 159 random bits: positive, < 2^159, and ≥ 64 bits of CSPRNG output (RFC 5280 §4.1.2.2).
SERIAL_BITS = 159
#: RFC 5280 §4.1.2.6 ub-common-name: longer names go in the SAN only.
MAX_COMMON_NAME = 64
#: A caller asking for more DNS names than this is doing something else.
MAX_DNS_NAMES = 32


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One signed leaf, with what storage records about it."""

    serial: int
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    pem: bytes
    der: bytes
    profile: str
    spiffe_id: str
    key_fingerprint: str


@dataclass(frozen=True, slots=True)
class _Plan:
    identity: SpiffeId
    profile: Profile
    not_before: datetime
    not_after: datetime


def new_serial() -> int:
    """A fresh certificate serial: 159 CSPRNG bits, never zero."""
    while True:
        serial = secrets.randbits(SERIAL_BITS)
        if serial:
            return serial


def _ext(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def _fixed(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    """An extension that never changes, DER-encoded once: the builder then copies bytes."""
    return x509.Extension(
        value.oid, critical, x509.UnrecognizedExtension(value.oid, value.public_bytes())
    )


def _key_usage(key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateIssuer:
    """Signs leaves for one trust domain with one issuing CA.

    ``crl_url`` and ``ocsp_url`` go in every leaf; ``ca_issuers_url``, if
    given, adds an AIA caIssuers pointer to the issuing CA certificate.
    """

    def __init__(
        self,
        ca: IssuingCa,
        trust_domain: str,
        *,
        crl_url: str,
        ocsp_url: str,
        ca_issuers_url: str | None = None,
        profiles: Mapping[str, Profile] = PROFILES,
    ) -> None:
        self.ca = ca
        self.trust_domain = check_trust_domain(trust_domain)
        self.profiles = profiles
        self._key = ca.key
        self._hash = signature_hash(ca.key)
        self._issuer_name = ca.certificate.subject
        # The CA's life bounds every leaf: the earliest notAfter on the path to the root.
        self.ca_not_after = min(c.not_valid_after_utc for c in (*ca.intermediates, ca.root))
        self.ca_not_before = ca.certificate.not_valid_before_utc
        self._ca_key_fingerprints = ca.ca_key_fingerprints
        access = [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        ]
        if ca_issuers_url is not None:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(ca_issuers_url),
                )
            )
        self._common = [
            _fixed(x509.BasicConstraints(ca=False, path_length=None), critical=True),
            _fixed(ca.authority_key_identifier, critical=False),
            _fixed(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            ),
            _fixed(x509.AuthorityInformationAccess(access), critical=False),
        ]
        self._ku_signature = _fixed(_key_usage(key_encipherment=False), critical=True)
        self._ku_rsa_server = _fixed(_key_usage(key_encipherment=True), critical=True)
        self._per_profile = {p.name: self._profile_extensions(p) for p in profiles.values()}

    @staticmethod
    def _profile_extensions(profile: Profile) -> list[x509.Extension[x509.ExtensionType]]:
        extensions = [_fixed(x509.ExtendedKeyUsage(list(profile.extended_key_usages)), False)]
        if profile.ocsp_no_check:
            extensions.append(_fixed(x509.OCSPNoCheck(), critical=False))
        return extensions

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise PolicyViolation(
                f"unknown certificate profile {name!r} (known: {', '.join(self.profiles)})"
            ) from None

    def issue(
        self,
        public_key: PublicKey,
        kind: str,
        name: str,
        profile: str,
        now: datetime,
        *,
        validity: timedelta | None = None,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Sign a leaf certifying ``public_key`` for identity ``kind/name``.

        ``dns_names`` (and ``ip_addresses``, for a server reached by address) are
        names the caller has already decided this identity may hold; they are
        refused if the profile allows none. ``validity`` is the requested
        lifetime (the profile's default if None), counted from ``now``; beyond
        the profile's maximum or the CA's notAfter it is refused.
        """
        plan = self._plan(kind, name, profile, now, validity)
        return self._sign(plan, public_key, public_key_fingerprint(public_key), dns_names,
                          ip_addresses)

    def issue_for_csr(
        self,
        csr: bytes | x509.CertificateSigningRequest | ParsedCsr,
        kind: str,
        name: str,
        profile: str,
        now: datetime,
        *,
        validity: timedelta | None = None,
        allowed_dns_names: Collection[str] = (),
        key_bindings: KeyBindings | None = None,
    ) -> IssuedCertificate:
        """Check ``csr`` (see ``pki.csr.check_csr``) and issue for its key.

        The DNS names issued are those the CSR asks for, each of which must be
        in ``allowed_dns_names`` (the identity's scope, decided by the caller).
        The cheap policy checks run before the CSR's signature is verified.
        """
        plan = self._plan(kind, name, profile, now, validity)
        checked = check_csr(
            csr,
            plan.identity,
            allowed_dns_names=allowed_dns_names,
            key_bindings=key_bindings,
            ca_key_fingerprints=self._ca_key_fingerprints,
        )
        return self._sign(plan, checked.public_key, checked.key_fingerprint, checked.dns_names)

    def _plan(
        self, kind: str, name: str, profile: str, now: datetime, validity: timedelta | None
    ) -> _Plan:
        """Everything about the leaf that policy decides, or the refusal with its reason."""
        chosen = self.profile(profile)
        identity = SpiffeId(self.trust_domain, kind, name)
        if kind not in chosen.allowed_kinds:
            raise PolicyViolation(
                f"the {chosen.name} profile is not for {kind} identities "
                f"(only {', '.join(sorted(chosen.allowed_kinds))})"
            )
        lifetime = chosen.validity_for(validity)
        not_before = now.astimezone(UTC).replace(microsecond=0)
        not_after = not_before + lifetime
        if not_before < self.ca_not_before:
            raise LocalError(f"the issuing CA is not valid before {self.ca_not_before:%Y-%m-%d}")
        if not_after > self.ca_not_after:
            raise PolicyViolation(
                f"requested validity to {not_after:%Y-%m-%dT%H:%M:%SZ} goes beyond the "
                f"issuing CA's notAfter {self.ca_not_after:%Y-%m-%dT%H:%M:%SZ}"
            )
        return _Plan(identity, chosen, not_before, not_after)

    def _sign(
        self,
        plan: _Plan,
        public_key: PublicKey,
        key_fingerprint: str,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
    ) -> IssuedCertificate:
        identity, chosen = plan.identity, plan.profile
        san = self._subject_alt_name(identity, chosen, dns_names, ip_addresses)
        if key_fingerprint in self._ca_key_fingerprints:
            raise PolicyViolation("a leaf cannot certify a certificate authority's key")
        name = identity.name
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, name)] if len(name) <= MAX_COMMON_NAME else []
        )
        server_rsa = isinstance(public_key, rsa.RSAPublicKey) and (
            ExtendedKeyUsageOID.SERVER_AUTH in chosen.extended_key_usages
        )
        extensions = [
            *self._common,
            self._ku_rsa_server if server_rsa else self._ku_signature,
            *self._per_profile[chosen.name],
            # RFC 5280 §4.2.1.6: with an empty subject the SAN MUST be critical.
            _ext(san, critical=not subject),
            _ext(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False),
        ]
        serial = new_serial()
        certificate = x509.CertificateBuilder(
            issuer_name=self._issuer_name,
            subject_name=subject,
            public_key=public_key,
            serial_number=serial,
            not_valid_before=plan.not_before,
            not_valid_after=plan.not_after,
            extensions=extensions,
        ).sign(self._key, self._hash)
        der = certificate.public_bytes(serialization.Encoding.DER)
        return IssuedCertificate(
            serial=serial,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            not_before=plan.not_before,
            not_after=plan.not_after,
            pem=certificate.public_bytes(serialization.Encoding.PEM),
            der=der,
            profile=chosen.name,
            spiffe_id=identity.uri,
            key_fingerprint=key_fingerprint,
        )

    @staticmethod
    def _subject_alt_name(
        identity: SpiffeId,
        profile: Profile,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
    ) -> x509.SubjectAlternativeName:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        if dns_names or ip_addresses:
            if not profile.allows_dns_names:
                raise PolicyViolation(f"the {profile.name} profile allows no DNS names")
            if len(dns_names) + len(ip_addresses) > MAX_DNS_NAMES:
                raise PolicyViolation(f"more than {MAX_DNS_NAMES} DNS names requested")
            if len(set(dns_names)) != len(dns_names):
                raise PolicyViolation("a DNS name is requested twice")
            names.extend(x509.DNSName(check_dns_name(n)) for n in dns_names)
            try:
                addresses = [ipaddress.ip_address(a) for a in ip_addresses]
            except ValueError as exc:
                raise PolicyViolation(f"not an IP address: {exc}") from None
            if len(set(addresses)) != len(addresses):
                raise PolicyViolation("an IP address is requested twice")
            names.extend(x509.IPAddress(a) for a in addresses)
        return x509.SubjectAlternativeName(names)


__all__ = ["CertificateIssuer", "IssuedCertificate", "new_serial"]
