"""Leaf issuance: content decided by the profile, refusals carry their reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from pki import (
    PROFILES,
    CaHierarchy,
    CertificateIssuer,
    KeyType,
    LocalError,
    PolicyViolation,
    PrivateKey,
    generate_private_key,
    get_profile,
)
from pki.issuer import SERIAL_BITS
from tests.pki.conftest import CRL_URL, NOW, OCSP_URL, PROFILE_CASES, TRUST_DOMAIN


@pytest.mark.parametrize(("profile", "kind", "name", "dns"), PROFILE_CASES)
def test_leaf_content_per_profile(
    issuer: CertificateIssuer,
    leaf_key: PrivateKey,
    profile: str,
    kind: str,
    name: str,
    dns: tuple[str, ...],
) -> None:
    issued = issuer.issue(leaf_key.public_key(), kind, name, profile, NOW, dns_names=dns)
    cert = x509.load_der_x509_certificate(issued.der)
    assert x509.load_pem_x509_certificate(issued.pem) == cert
    ext = cert.extensions
    # SPIFFE X.509-SVID §2: exactly one URI SAN, the identity's ID.
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    spiffe_id = f"spiffe://{TRUST_DOMAIN}/{kind}/{name}"
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id]
    assert san.get_values_for_type(x509.DNSName) == list(dns)
    assert issued.spiffe_id == spiffe_id and issued.profile == profile
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert tuple(eku) == PROFILES[profile].extended_key_usages
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = issuer.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.value.digest
    dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name == [x509.UniformResourceIdentifier(CRL_URL)]
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert x509.UniformResourceIdentifier(OCSP_URL) in [a.access_location for a in aia]
    has_nocheck = ExtensionOID.OCSP_NO_CHECK in [e.oid for e in ext]
    assert has_nocheck == (profile == "ocsp-responder")
    assert cert.serial_number == issued.serial
    assert issued.not_after - issued.not_before == PROFILES[profile].default_validity
    assert cert.not_valid_before_utc == issued.not_before == NOW
    cert.verify_directly_issued_by(issuer.ca.certificate)


def test_ocsp_responder_profile_has_ocsp_signing() -> None:
    assert get_profile("ocsp-responder").extended_key_usages == (ExtendedKeyUsageOID.OCSP_SIGNING,)


@pytest.mark.parametrize(
    ("profile", "default", "maximum"),
    [
        ("device", timedelta(days=90), timedelta(days=397)),
        ("workload", timedelta(hours=24), timedelta(days=7)),
        ("ai_agent", timedelta(hours=1), timedelta(hours=24)),
    ],
)
def test_profile_lifetimes(profile: str, default: timedelta, maximum: timedelta) -> None:
    assert PROFILES[profile].default_validity == default
    assert PROFILES[profile].max_validity == maximum


def test_rsa_server_key_gets_key_encipherment(issuer: CertificateIssuer) -> None:
    key = generate_private_key(KeyType.RSA3072)
    issued = issuer.issue(key.public_key(), "workload", "legacy", "workload", NOW)
    ku = x509.load_der_x509_certificate(issued.der).extensions.get_extension_for_class(
        x509.KeyUsage
    )
    assert ku.value.digital_signature and ku.value.key_encipherment
    device = issuer.issue(key.public_key(), "device", "legacy", "device", NOW)
    ku = x509.load_der_x509_certificate(device.der).extensions.get_extension_for_class(
        x509.KeyUsage
    )
    assert not ku.value.key_encipherment


def test_api_server_certificate_names_addresses(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    import ipaddress

    issued = issuer.issue(leaf_key.public_key(), "service", "api", "api-server", NOW,
                          dns_names=["nac.nhi.example"], ip_addresses=["127.0.0.1", "::1"])
    san = x509.load_der_x509_certificate(issued.der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nac.nhi.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    for bad, reason in ((["10.0.0.1", "10.0.0.1"], "twice"), (["10.0.0.999"], "IP address")):
        with pytest.raises(PolicyViolation, match=reason):
            issuer.issue(leaf_key.public_key(), "service", "api", "api-server", NOW,
                         ip_addresses=bad)
    with pytest.raises(PolicyViolation, match="allows no DNS names"):
        issuer.issue(leaf_key.public_key(), "device", "d", "device", NOW,
                     ip_addresses=["10.0.0.1"])


def test_long_name_gives_empty_subject_and_critical_san(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    issued = issuer.issue(leaf_key.public_key(), "device", "d" * 80, "device", NOW)
    cert = x509.load_der_x509_certificate(issued.der)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_requested_validity_within_max_is_honoured(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    issued = issuer.issue(
        leaf_key.public_key(), "workload", "w", "workload", NOW, validity=timedelta(days=7)
    )
    assert issued.not_after - issued.not_before == timedelta(days=7)


def test_recorded_validity_is_what_the_certificate_says(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    """A lifetime with a fraction of a second (a child's, bounded by its parent's remaining
    life, asked at a time with microseconds) is recorded as the certificate encodes it:
    whole seconds, ending at the second before, never after what was asked."""
    asked_at = NOW + timedelta(microseconds=250_000)
    issued = issuer.issue(leaf_key.public_key(), "workload", "w", "workload", asked_at,
                          validity=timedelta(hours=1, microseconds=900_000))
    cert = x509.load_der_x509_certificate(issued.der)
    assert issued.not_before == cert.not_valid_before_utc
    assert issued.not_after == cert.not_valid_after_utc
    assert issued.not_after == NOW.replace(microsecond=0) + timedelta(hours=1)


@pytest.mark.parametrize(
    ("profile", "kind", "validity"),
    [
        ("device", "device", timedelta(days=398)),
        ("workload", "workload", timedelta(days=7, seconds=1)),
        ("ai_agent", "ai_agent", timedelta(hours=25)),
    ],
)
def test_validity_beyond_profile_is_refused_not_trimmed(
    issuer: CertificateIssuer, leaf_key: PrivateKey, profile: str, kind: str, validity: timedelta
) -> None:
    with pytest.raises(PolicyViolation, match="exceeds the .* maximum") as caught:
        issuer.issue(leaf_key.public_key(), kind, "x", profile, NOW, validity=validity)
    assert profile in caught.value.reason


def test_validity_beyond_intermediate_life_is_refused(
    hierarchy: CaHierarchy, leaf_key: PrivateKey
) -> None:
    issuer = CertificateIssuer(hierarchy.issuing, TRUST_DOMAIN, crl_url=CRL_URL, ocsp_url=OCSP_URL)
    late = issuer.ca_not_after - timedelta(days=30)
    with pytest.raises(PolicyViolation, match="beyond the issuing CA's notAfter"):
        issuer.issue(leaf_key.public_key(), "device", "d1", "device", late)
    # The same request is fine while the CA has life left.
    issuer.issue(leaf_key.public_key(), "device", "d1", "device", late - timedelta(days=61))


def test_issuing_before_the_ca_is_valid_is_our_error(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    with pytest.raises(LocalError, match="not valid before"):
        issuer.issue(leaf_key.public_key(), "device", "d1", "device", NOW - timedelta(days=1))


@pytest.mark.parametrize(
    ("kind", "name", "profile", "dns", "reason"),
    [
        ("device", "d1", "no-such-profile", (), "unknown certificate profile"),
        ("workload", "w1", "device", (), "not for workload identities"),
        ("device", "d1", "device", ("d1.nhi.example",), "allows no DNS names"),
        ("workload", "w1", "workload", ("*.nhi.example",), "not a lowercase host name"),
        ("workload", "w1", "workload", ("a.example", "a.example"), "twice"),
        ("device", "bad/name", "device", (), "SPIFFE path segment"),
        ("device", "..", "device", (), "SPIFFE path segment"),
    ],
)
def test_out_of_policy_requests_are_refused(
    issuer: CertificateIssuer,
    leaf_key: PrivateKey,
    kind: str,
    name: str,
    profile: str,
    dns: tuple[str, ...],
    reason: str,
) -> None:
    with pytest.raises(PolicyViolation, match=reason):
        issuer.issue(leaf_key.public_key(), kind, name, profile, NOW, dns_names=dns)


def test_ca_key_cannot_be_certified(issuer: CertificateIssuer) -> None:
    with pytest.raises(PolicyViolation, match="certificate authority"):
        issuer.issue(issuer.ca.key.public_key(), "device", "d1", "device", NOW)


def test_ten_thousand_serials_unique_positive_below_2_159(
    issuer: CertificateIssuer, leaf_key: PrivateKey
) -> None:
    public_key = leaf_key.public_key()
    serials = [
        issuer.issue(public_key, "ai_agent", f"agent-{i}", "ai_agent", NOW).serial
        for i in range(10_000)
    ]
    assert len(set(serials)) == len(serials)
    assert all(0 < s < 2**159 for s in serials)
    # ≥ 64 bits of CSPRNG output: with 159 random bits, one below 2^64 is a 2^-95 event.
    assert all(s.bit_length() > 64 for s in serials)
    assert SERIAL_BITS == 159
    # The top bits are used: about half of them reach the 159th bit.
    assert 4000 < sum(s >> (SERIAL_BITS - 1) for s in serials) < 6000
