"""The issuer's DER template writes, byte for byte, the TBSCertificate the builder writes.

For every CA key type ``create_hierarchy`` makes, every profile, each leaf key
type, DNS names and addresses, an empty subject, both RFC 5280 §4.1.2.5 time
encodings and serials of every DER length shape, a leaf from the template
issuer and one from the same issuer with its template off (the builder
fallback) must agree in every TBS byte, and the template's leaf must load,
verify under the issuing CA, and have the PEM cryptography would write. An
issuer whose template fails its probe in ``__init__`` must fall back to the
builder and still issue good leaves. Last, the DER helpers against X.690
examples, and their reader fuzzed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

import pki.issuer as issuer_module
from pki import (
    PROFILES,
    CaHierarchy,
    CertificateIssuer,
    IssuedCertificate,
    KeyType,
    PrivateKey,
    build_csr,
    create_hierarchy,
    der,
)
from tests.pki.conftest import NOW, PROFILE_CASES, TRUST_DOMAIN, new_issuer

#: Long enough that leaves may start and end in 2050 and after (GeneralizedTime).
CA_LIFETIME = timedelta(days=40 * 366)
#: A serial whose top octet has its high bit set: DER needs a leading zero octet.
HIGH_BIT_SERIAL = (0xC3 << 144) | 0x1234
ADDRESSES = ("192.0.2.10", "2001:db8::10")


def _leaf_keys() -> dict[str, PrivateKey]:
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


LEAF_KEYS = _leaf_keys()


@dataclass(frozen=True)
class IssuerPair:
    """One CA, as a template issuer and as a builder-only issuer."""

    hierarchy: CaHierarchy
    template: CertificateIssuer
    builder: CertificateIssuer

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self.hierarchy.issuing.certificate


_issuer = new_issuer


def _builder_only(hierarchy: CaHierarchy) -> CertificateIssuer:
    issuer = _issuer(hierarchy)
    issuer._template = None  # the private fallback: every leaf through x509.CertificateBuilder
    return issuer


@pytest.fixture(scope="module", params=[k.value for k in KeyType])
def pair(request: pytest.FixtureRequest) -> IssuerPair:
    hierarchy = create_hierarchy(
        TRUST_DOMAIN,
        NOW,
        request.param,
        root_lifetime=CA_LIFETIME,
        intermediate_lifetime=CA_LIFETIME,
    )
    return IssuerPair(hierarchy, _issuer(hierarchy), _builder_only(hierarchy))


def issue_both(
    pair: IssuerPair,
    monkeypatch: pytest.MonkeyPatch,
    serial: int,
    call: Callable[[CertificateIssuer], IssuedCertificate],
) -> x509.Certificate:
    """Issue the same leaf both ways and check the template's against the builder's."""
    assert pair.template._template is not None, "the template was not proven for this CA"
    monkeypatch.setattr(issuer_module, "new_serial", lambda: serial)
    templated, built = call(pair.template), call(pair.builder)
    cert = x509.load_der_x509_certificate(templated.der)
    reference = x509.load_der_x509_certificate(built.der)
    assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes
    # The outer signatureAlgorithm too is the builder's, byte for byte.
    assert der.split(templated.der)[1] == der.split(built.der)[1]
    cert.verify_directly_issued_by(pair.ca_certificate)
    assert templated.pem == cert.public_bytes(serialization.Encoding.PEM)
    assert templated.der == cert.public_bytes(serialization.Encoding.DER)
    assert templated.fingerprint_sha256 == hashlib.sha256(templated.der).hexdigest()
    assert cert.serial_number == templated.serial == built.serial == serial
    for field in ("not_before", "not_after", "profile", "spiffe_id", "key_fingerprint"):
        assert getattr(templated, field) == getattr(built, field)
    return cert


def test_template_is_proven_for_every_ca_key_type(pair: IssuerPair) -> None:
    assert pair.template._template is not None
    assert pair.builder._template is None


@pytest.mark.parametrize("leaf_type", sorted(LEAF_KEYS))
@pytest.mark.parametrize(("profile", "kind", "name", "dns"), PROFILE_CASES)
def test_template_matches_builder_per_profile_and_leaf_key(
    pair: IssuerPair,
    monkeypatch: pytest.MonkeyPatch,
    leaf_type: str,
    profile: str,
    kind: str,
    name: str,
    dns: tuple[str, ...],
) -> None:
    public_key = LEAF_KEYS[leaf_type].public_key()
    addresses = ADDRESSES if PROFILES[profile].allows_dns_names else ()
    cert = issue_both(
        pair,
        monkeypatch,
        HIGH_BIT_SERIAL,
        lambda issuer: issuer.issue(
            public_key, kind, name, profile, NOW, dns_names=dns, ip_addresses=addresses
        ),
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert len(san.value.get_values_for_type(x509.IPAddress)) == len(addresses)
    # keyEncipherment only for an RSA key in a serverAuth profile (TLS 1.2 key transport).
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    server = ExtendedKeyUsageOID.SERVER_AUTH in PROFILES[profile].extended_key_usages
    assert usage.key_encipherment == (leaf_type == "rsa2048" and server)


def test_long_name_gives_empty_subject_and_critical_san(
    pair: IssuerPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = _device_leaf(pair, monkeypatch, "d" * 65, NOW)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    # At 64 characters the name is still the CN (RFC 5280 ub-common-name).
    cert = _device_leaf(pair, monkeypatch, "d" * 64, NOW)
    assert cert.subject.rfc4514_string() == "CN=" + "d" * 64


def _device_leaf(pair: IssuerPair, monkeypatch: pytest.MonkeyPatch, name: str,
                 now: datetime) -> x509.Certificate:
    """A device leaf for a P-256 key, through both paths (``issue_both``)."""
    public_key = LEAF_KEYS["p256"].public_key()
    return issue_both(
        pair,
        monkeypatch,
        HIGH_BIT_SERIAL,
        lambda issuer: issuer.issue(public_key, "device", name, "device", now),
    )


@pytest.mark.parametrize(
    ("start", "tags"),
    [
        (NOW, (der.UTC_TIME, der.UTC_TIME)),
        (datetime(2049, 12, 1, 12, 30, 5, tzinfo=UTC), (der.UTC_TIME, der.GENERALIZED_TIME)),
        (datetime(2051, 3, 1, tzinfo=UTC), (der.GENERALIZED_TIME, der.GENERALIZED_TIME)),
    ],
)
def test_validity_encodings_either_side_of_2050(
    pair: IssuerPair, monkeypatch: pytest.MonkeyPatch, start: datetime, tags: tuple[int, int]
) -> None:
    cert = _device_leaf(pair, monkeypatch, "clock", start)
    # TBSCertificate: version, serialNumber, signature, issuer, validity, ...
    validity = der.split(der.split(cert.tbs_certificate_bytes)[4])
    assert (validity[0][0], validity[1][0]) == tags
    assert cert.not_valid_before_utc == start.replace(microsecond=0)


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x100, (1 << 152) - 1, 1 << 151, (1 << 159) - 1],
    ids=lambda s: f"{s:#x}"[:12],
)
def test_serial_encodings(pair: IssuerPair, monkeypatch: pytest.MonkeyPatch, serial: int) -> None:
    public_key = LEAF_KEYS["p256"].public_key()
    issue_both(
        pair,
        monkeypatch,
        serial,
        lambda issuer: issuer.issue(public_key, "ai_agent", "a1", "ai_agent", NOW),
    )


@pytest.mark.parametrize("leaf_type", sorted(LEAF_KEYS))
def test_issue_for_csr_matches_builder(
    pair: IssuerPair, monkeypatch: pytest.MonkeyPatch, leaf_type: str
) -> None:
    key = LEAF_KEYS[leaf_type]
    names = ("payments.nhi.example", "pay.nhi.example")
    csr = build_csr(key, f"spiffe://{TRUST_DOMAIN}/workload/payments", names)
    cert = issue_both(
        pair,
        monkeypatch,
        0x42,
        lambda issuer: issuer.issue_for_csr(
            csr, "workload", "payments", "workload", NOW, allowed_dns_names=names
        ),
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(names)


def _check_issues_good_leaves(issuer: CertificateIssuer, hierarchy: CaHierarchy) -> None:
    key = LEAF_KEYS["p256"]
    issued = issuer.issue(
        key.public_key(),
        "workload",
        "fallback",
        "workload",
        NOW,
        dns_names=["fallback.nhi.example"],
    )
    cert = x509.load_der_x509_certificate(issued.der)
    cert.verify_directly_issued_by(hierarchy.issuing.certificate)
    assert issued.pem == cert.public_bytes(serialization.Encoding.PEM)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_issuer_whose_probe_differs_keeps_the_builder(
    hierarchy: CaHierarchy, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_ski = issuer_module._ski_extension

    def flipped_ski(spki: bytes) -> bytes:
        # One flipped bit: the template no longer writes what the builder writes.
        encoded = real_ski(spki)
        return encoded[:-1] + bytes([encoded[-1] ^ 1])

    monkeypatch.setattr(issuer_module, "_ski_extension", flipped_ski)
    issuer = _issuer(hierarchy)
    assert issuer._template is None
    _check_issues_good_leaves(issuer, hierarchy)
    monkeypatch.undo()
    assert _issuer(hierarchy)._template is not None


def _no_time(moment: datetime) -> bytes:
    raise ValueError("no time today")


_OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("module", "name", "replacement"),
    [
        # An encoder that fails while the template is proven.
        (der, "time", _no_time),
        # The TBS matches, but the signer is wrong: the probe's verification catches it.
        (issuer_module, "direct_signer",
         lambda key, algorithm: lambda data: _OTHER_KEY.sign(data, ec.ECDSA(algorithm))),
        # A CA key the template cannot sign with directly.
        (issuer_module, "direct_signer", lambda key, algorithm: None),
    ],
    ids=["encoder-fails", "wrong-signer", "no-direct-signer"],
)
def test_issuer_whose_template_cannot_be_proven_keeps_the_builder(
    hierarchy: CaHierarchy, monkeypatch: pytest.MonkeyPatch, module: object, name: str,
    replacement: object,
) -> None:
    monkeypatch.setattr(module, name, replacement)
    issuer = _issuer(hierarchy)
    assert issuer._template is None
    _check_issues_good_leaves(issuer, hierarchy)


# The DER helpers, against examples from X.690 and RFC 5280.


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "020100"),
        (0x7F, "02017f"),
        (0x80, "02020080"),
        (0x100, "02020100"),
        (0xFFFF, "020300ffff"),
    ],
)
def test_integer(value: int, encoded: str) -> None:
    assert der.integer(value).hex() == encoded


def test_negative_integer_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        der.integer(-1)


@pytest.mark.parametrize(
    ("dotted", "encoded"),
    [
        ("1.2.840.113549", "06062a864886f70d"),  # rsadsi, the classic X.690 example
        ("2.999.3", "0603883703"),  # X.690 §8.19.5: the first subidentifier above 127
        ("2.5.4.3", "0603550403"),  # id-at-commonName
    ],
)
def test_object_identifier(dotted: str, encoded: str) -> None:
    assert der.object_identifier(dotted).hex() == encoded


@pytest.mark.parametrize("dotted", ["1", "3.1", "1.40", "0.40.1", "1.2.-3"])
def test_bad_object_identifier_is_refused(dotted: str) -> None:
    with pytest.raises(ValueError, match="not an object identifier"):
        der.object_identifier(dotted)


@pytest.mark.parametrize(
    ("size", "encoded"), [(0, "00"), (0x7F, "7f"), (0x80, "8180"), (0x100, "820100")]
)
def test_length(size: int, encoded: str) -> None:
    assert der.length(size).hex() == encoded
    element = der.tlv(der.OCTET_STRING, bytes(size))
    assert der.contents(element) == bytes(size)


@pytest.mark.parametrize(
    ("moment", "encoded"),
    [
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
        (datetime(1950, 1, 1, tzinfo=UTC), b"\x17\x0d500101000000Z"),
        (datetime(2050, 1, 1, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
        (datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f19491231235959Z"),
        # Fractions dropped; another offset converted to UTC; naive taken as UTC.
        (datetime(2030, 6, 1, 12, 0, 0, 999_999, tzinfo=UTC), b"\x17\x0d300601120000Z"),
        (
            datetime(2030, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            b"\x17\x0d300601120000Z",
        ),
        (datetime(2030, 6, 1, 12, 0), b"\x17\x0d300601120000Z"),
    ],
)
def test_time(moment: datetime, encoded: bytes) -> None:
    assert der.time(moment) == encoded


def test_split_undoes_sequence() -> None:
    parts = [der.integer(5), der.tlv(der.OCTET_STRING, bytes(300)), der.sequence()]
    assert der.split(der.sequence(*parts)) == parts


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_split_of_any_bytes_is_elements_or_value_error(data: bytes) -> None:
    try:
        parts = der.split(data)
    except ValueError:
        return
    assert b"".join(parts) == der.contents(data)
