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

Per-issuance speed matters (thousands per second per core). Everything that
does not depend on the request — issuer name, AKI, CRL DP, AIA, basic
constraints, key usages, EKUs per profile — is DER-encoded once in ``__init__``,
and a leaf's TBSCertificate (§4.1) is written by concatenating those bytes with
the few values that change per leaf (serial, validity, subject, key, SAN, SKI),
then signed with the CA key directly: ``x509.CertificateBuilder`` costs several
times the signature itself. The template is trusted only once proven: in
``__init__`` probe leaves are built both ways and their TBS bytes compared; an
issuer whose template differs in any byte (a cryptography upgrade that encodes
something otherwise, a CA key we cannot sign with directly) keeps building
every leaf with ``x509.CertificateBuilder``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
)

from pki import der
from pki.csr import KeyBindings, ParsedCsr, check_csr
from pki.errors import LocalError, PolicyViolation
from pki.hierarchy import IssuingCa
from pki.keys import (
    PublicKey,
    direct_signer,
    public_key_fingerprint,
    signature_hash,
    subject_public_key_bits,
)
from pki.names import SpiffeId, check_dns_name, check_trust_domain
from pki.profiles import PROFILES, Profile

#: 159 random bits: positive, < 2^159, and ≥ 64 bits of CSPRNG output (RFC 5280 §4.1.2.2).
SERIAL_BITS = 159
#: RFC 5280 §4.1.2.6 ub-common-name: longer names go in the SAN only.
MAX_COMMON_NAME = 64
#: A caller asking for more DNS names than this is doing something else.
MAX_DNS_NAMES = 32

_COMMON_NAME_OID = der.object_identifier(NameOID.COMMON_NAME.dotted_string)
_SAN_OID = der.object_identifier(ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string)
_SKI_OID = der.object_identifier(ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string)
#: RFC 5280 §4.2.1.6 GeneralName choices we write, context-specific IMPLICIT primitives:
#: [2] dNSName, [6] uniformResourceIdentifier, [7] iPAddress.
_DNS_NAME_TAG = 0x82
_URI_TAG = 0x86
_IP_ADDRESS_TAG = 0x87
#: RFC 5280 §4.1: ``extensions [3] EXPLICIT``, context-specific and constructed.
_EXTENSIONS_TAG = 0xA3


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


@dataclass(frozen=True, slots=True)
class _Leaf:
    """What one leaf says beyond its issuer's fixed parts: the input of either encoder.

    ``common_name`` is None when the subject is empty (the name is too long for
    a CN); ``rsa_server`` selects the key usage with keyEncipherment.
    """

    serial: int
    not_before: datetime
    not_after: datetime
    common_name: str | None
    public_key: PublicKey
    san: x509.SubjectAlternativeName
    profile: str
    rsa_server: bool


@dataclass(frozen=True, slots=True)
class _ProbeShape:
    serial: int
    not_before: datetime
    not_after: datetime
    common_name: str | None
    san: x509.SubjectAlternativeName


#: The probe leaves (see ``CertificateIssuer._proven_template``) take between them every
#: path of the template: a serial whose top octet has its high bit set (so DER adds a zero
#: octet) and a one-octet serial; UTCTime and GeneralizedTime; a CN and an empty subject
#: with a critical SAN; a SAN with DNS names and IPv4 and IPv6 addresses, and a URI alone.
#: Their values need not be issuable: probes are compared, never handed out.
_PROBE_SHAPES = (
    _ProbeShape(
        serial=(0x80 << 144) | 0x5A5A,
        not_before=datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        not_after=datetime(2050, 1, 1, tzinfo=UTC),
        common_name="probe",
        san=x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier("spiffe://probe.example/probe/probe"),
                x509.DNSName("probe.example"),
                x509.DNSName("b.probe.example"),
                x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
                x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
            ]
        ),
    ),
    _ProbeShape(
        serial=1,
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2025, 1, 2, tzinfo=UTC),
        common_name=None,
        san=x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://probe.example/probe/" + "p" * 65)]
        ),
    ),
)


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
        # None: this issuer builds every leaf with x509.CertificateBuilder.
        self._template = self._proven_template()

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
        # Whole seconds, as the certificate encodes them (RFC 5280 §4.1.2.5): what is
        # recorded is what the certificate says. A lifetime with a fraction (a child's,
        # bounded by its parent's remaining life) ends at the second before.
        not_after = (not_before + lifetime).replace(microsecond=0)
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
        leaf = _Leaf(
            serial=new_serial(),
            not_before=plan.not_before,
            not_after=plan.not_after,
            common_name=name if len(name) <= MAX_COMMON_NAME else None,
            public_key=public_key,
            san=san,
            profile=chosen.name,
            rsa_server=isinstance(public_key, rsa.RSAPublicKey)
            and ExtendedKeyUsageOID.SERVER_AUTH in chosen.extended_key_usages,
        )
        if self._template is None:
            certificate, pem = self._build(leaf)
        else:
            certificate = self._template.certificate(leaf)
            pem = der.pem("CERTIFICATE", certificate)
        return IssuedCertificate(
            serial=leaf.serial,
            fingerprint_sha256=hashlib.sha256(certificate).hexdigest(),
            not_before=plan.not_before,
            not_after=plan.not_after,
            pem=pem,
            der=certificate,
            profile=chosen.name,
            spiffe_id=identity.uri,
            key_fingerprint=key_fingerprint,
        )

    def _fixed_extensions(
        self, profile: str, rsa_server: bool
    ) -> list[x509.Extension[x509.ExtensionType]]:
        """What every leaf of ``profile`` carries before its SAN and SKI, in order."""
        return [
            *self._common,
            self._ku_rsa_server if rsa_server else self._ku_signature,
            *self._per_profile[profile],
        ]

    def _build(self, leaf: _Leaf) -> tuple[bytes, bytes]:
        """``leaf`` built and signed by ``x509.CertificateBuilder``, as DER and PEM.

        The fallback when the template is not proven, and the reference it is
        proven against.
        """
        subject = x509.Name(
            []
            if leaf.common_name is None
            else [x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name)]
        )
        extensions = [
            *self._fixed_extensions(leaf.profile, leaf.rsa_server),
            # RFC 5280 §4.2.1.6: with an empty subject the SAN MUST be critical.
            _ext(leaf.san, critical=leaf.common_name is None),
            _ext(x509.SubjectKeyIdentifier.from_public_key(leaf.public_key), critical=False),
        ]
        certificate = x509.CertificateBuilder(
            issuer_name=self._issuer_name,
            subject_name=subject,
            public_key=leaf.public_key,
            serial_number=leaf.serial,
            not_valid_before=leaf.not_before,
            not_valid_after=leaf.not_after,
            extensions=extensions,
        ).sign(self._key, self._hash)
        return (
            certificate.public_bytes(serialization.Encoding.DER),
            certificate.public_bytes(serialization.Encoding.PEM),
        )

    def _proven_template(self) -> _LeafTemplate | None:
        """This issuer's DER template, or None unless it writes exactly what the builder writes.

        Probe leaves, between them covering every fixed-extension variant and
        every probe shape, are built by the builder and by the template from the
        same inputs, and their TBS bytes compared; the first probe signed by the
        template must also verify under the CA certificate. Any difference, any
        error on the way, or a CA key the template cannot sign with leaves this
        issuer on the builder.
        """
        sign = direct_signer(self._key, self._hash)
        variants = self._extension_variants()
        if sign is None or not variants:
            return None
        probes = self._probe_leaves(variants)
        try:
            references = [self._build(leaf)[0] for leaf in probes]
            fixed = {
                variant: b"".join(_extension_der(e) for e in self._fixed_extensions(*variant))
                for variant in variants
            }
            template = _LeafTemplate(references[0], fixed, sign)
            for leaf, reference in zip(probes, references, strict=True):
                expected = x509.load_der_x509_certificate(reference).tbs_certificate_bytes
                if template.tbs(leaf) != expected:
                    return None
            signed = x509.load_der_x509_certificate(template.certificate(probes[0]))
            signed.verify_directly_issued_by(self.ca.certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return None
        return template

    def _extension_variants(self) -> list[tuple[str, bool]]:
        """Every (profile, RSA server key usage) a leaf can have; the latter needs serverAuth."""
        return [
            (p.name, rsa_server)
            for p in self.profiles.values()
            for rsa_server in (False, True)
            if not rsa_server or ExtendedKeyUsageOID.SERVER_AUTH in p.extended_key_usages
        ]

    @staticmethod
    def _probe_leaves(variants: Sequence[tuple[str, bool]]) -> list[_Leaf]:
        """Leaves that between them use every variant and every probe shape, on a fresh key."""
        # A P-256 key, as most leaves have; any other key's SPKI is copied the same way.
        public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        probes = []
        for index in range(max(len(variants), len(_PROBE_SHAPES))):
            shape = _PROBE_SHAPES[index % len(_PROBE_SHAPES)]
            profile, rsa_server = variants[index % len(variants)]
            probes.append(
                _Leaf(
                    serial=shape.serial,
                    not_before=shape.not_before,
                    not_after=shape.not_after,
                    common_name=shape.common_name,
                    public_key=public_key,
                    san=shape.san,
                    profile=profile,
                    rsa_server=rsa_server,
                )
            )
        return probes

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


class _LeafTemplate:
    """One issuer's leaves as DER: fixed bytes around the few values each leaf changes.

    The version, signature AlgorithmIdentifier and issuer Name are cut from
    ``reference``, a certificate the builder signed for this issuer, so they
    are the builder's own bytes for this CA key and hash. ``fixed_extensions``
    maps (profile, RSA server key usage) to the DER of the extensions before
    SAN and SKI. ``sign`` signs TBS bytes with the CA key.
    """

    def __init__(
        self,
        reference: bytes,
        fixed_extensions: Mapping[tuple[str, bool], bytes],
        sign: Callable[[bytes], bytes],
    ) -> None:
        certificate = der.split(reference)
        if len(certificate) != 3:
            raise ValueError("the reference is not a Certificate (RFC 5280 §4.1)")
        tbs = der.split(certificate[0])
        if len(tbs) < 4:
            raise ValueError("the reference's TBSCertificate is too short (RFC 5280 §4.1)")
        # TBSCertificate: version, serialNumber, signature, issuer, validity, subject, ...
        # The signature field repeats the outer signatureAlgorithm (§4.1.2.3).
        self._version = tbs[0]
        self._signature_algorithm = certificate[1]
        self._signature_and_issuer = certificate[1] + tbs[3]
        self._fixed_extensions = dict(fixed_extensions)
        self._ca_sign = sign

    def tbs(self, leaf: _Leaf) -> bytes:
        """The DER TBSCertificate of ``leaf`` (RFC 5280 §4.1.2)."""
        spki = leaf.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        extensions = der.sequence(
            self._fixed_extensions[leaf.profile, leaf.rsa_server],
            # RFC 5280 §4.2.1.6: with an empty subject the SAN MUST be critical.
            _san_extension(leaf.san, critical=leaf.common_name is None),
            _ski_extension(spki),
        )
        return der.sequence(
            self._version,
            der.integer(leaf.serial),
            self._signature_and_issuer,
            der.sequence(der.time(leaf.not_before), der.time(leaf.not_after)),
            _subject(leaf.common_name),
            spki,
            der.tlv(_EXTENSIONS_TAG, extensions),
        )

    def certificate(self, leaf: _Leaf) -> bytes:
        """``leaf`` signed, as DER: SEQUENCE { tbs, signatureAlgorithm, signatureValue }."""
        tbs = self.tbs(leaf)
        # §4.1.1.3: the signature is a BIT STRING; whole octets, so no unused bits.
        signature = der.tlv(der.BIT_STRING, b"\x00" + self._ca_sign(tbs))
        return der.sequence(tbs, self._signature_algorithm, signature)


def _extension_der(extension: x509.Extension[x509.ExtensionType]) -> bytes:
    """One of the issuer's fixed extensions, encoded once."""
    return der.extension(
        der.object_identifier(extension.oid.dotted_string),
        extension.critical,
        extension.value.public_bytes(),
    )


def _subject(common_name: str | None) -> bytes:
    """RFC 5280 §4.1.2.6: one RDN holding the CN as UTF8String, or the empty Name."""
    if common_name is None:
        return der.sequence()
    attribute = der.sequence(_COMMON_NAME_OID, der.tlv(der.UTF8_STRING, common_name.encode()))
    return der.sequence(der.tlv(der.SET, attribute))


def _san_extension(san: x509.SubjectAlternativeName, critical: bool) -> bytes:
    """RFC 5280 §4.2.1.6: the names in the order given; only the kinds we issue."""
    names = []
    for name in san:
        if isinstance(name, x509.UniformResourceIdentifier):
            names.append(der.tlv(_URI_TAG, name.value.encode("ascii")))
        elif isinstance(name, x509.DNSName):
            names.append(der.tlv(_DNS_NAME_TAG, name.value.encode("ascii")))
        elif isinstance(name, x509.IPAddress) and isinstance(
            name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            names.append(der.tlv(_IP_ADDRESS_TAG, name.value.packed))
        else:
            raise ValueError(f"no template for a {type(name).__name__} subject alternative name")
    return der.extension(_SAN_OID, critical, der.sequence(*names))


def _ski_extension(spki: bytes) -> bytes:
    """RFC 5280 §4.2.1.2 method (1), as ``SubjectKeyIdentifier.from_public_key`` computes it.

    The SHA-1 of the subjectPublicKey BIT STRING's value, its unused-bits
    octet left out; SHA-1 here names a key, it protects nothing.
    """
    digest = hashlib.sha1(subject_public_key_bits(spki), usedforsecurity=False).digest()
    return der.extension(_SKI_OID, False, der.tlv(der.OCTET_STRING, digest))


__all__ = ["CertificateIssuer", "IssuedCertificate", "new_serial"]
