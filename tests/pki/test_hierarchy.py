"""The CA hierarchy (RFC 5280 §4.2.1.9, §4.2.1.10) and bring-your-own CA import."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pki import (
    INTERMEDIATE_LIFETIME,
    ROOT_LIFETIME,
    CaHierarchy,
    CaMaterialInvalid,
    CertificateIssuer,
    IssuingCa,
    KeyType,
    PolicyViolation,
    PrivateKey,
    certificates_pem,
    create_hierarchy,
    generate_private_key,
    import_issuing_ca,
    install_renewed_issuing_ca,
    private_key_pem,
    renew_issuing_ca,
)
from pki.keys import signature_hash
from tests.interop import require_tool
from tests.pki.conftest import NOW, TRUST_DOMAIN

PASSPHRASE = b"an issuing-key passphrase"


def test_root_and_intermediate_extensions(hierarchy: CaHierarchy) -> None:
    root, issuing = hierarchy.root, hierarchy.issuing.certificate
    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca
    bc = issuing.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = issuing.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    nc = issuing.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.UniformResourceIdentifier(TRUST_DOMAIN)]
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    issuing.verify_directly_issued_by(root)


def test_lifetimes(hierarchy: CaHierarchy) -> None:
    root, issuing = hierarchy.root, hierarchy.issuing.certificate
    assert root.not_valid_after_utc - root.not_valid_before_utc == ROOT_LIFETIME
    assert issuing.not_valid_after_utc - issuing.not_valid_before_utc == INTERMEDIATE_LIFETIME
    assert issuing.not_valid_after_utc <= root.not_valid_after_utc


@pytest.mark.parametrize("key_type", [KeyType.P384, KeyType.ED25519])
def test_other_key_types(key_type: KeyType) -> None:
    created = create_hierarchy("other.example", NOW, key_type)
    created.issuing.certificate.verify_directly_issued_by(created.root)


def test_bad_trust_domain_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="trust domain"):
        create_hierarchy("Bad Domain!", NOW)


def test_export_and_reimport_intermediate(hierarchy: CaHierarchy) -> None:
    issuing = hierarchy.issuing
    imported = import_issuing_ca(
        issuing.certificate_pem,
        issuing.key_pem(PASSPHRASE),
        issuing.root_pem,
        NOW,
        passphrase=PASSPHRASE,
        trust_domain=TRUST_DOMAIN,
    )
    assert imported.certificate == issuing.certificate
    assert imported.root == hierarchy.root
    assert imported.intermediates == (issuing.certificate,)


def test_offline_root_key_export(hierarchy: CaHierarchy) -> None:
    assert b"ENCRYPTED PRIVATE KEY" in hierarchy.root_key_pem(PASSPHRASE)
    offline = hierarchy.without_root_key()
    with pytest.raises(CaMaterialInvalid, match="offline"):
        offline.root_key_pem(PASSPHRASE)


def test_import_refuses_key_of_another_certificate(hierarchy: CaHierarchy) -> None:
    with pytest.raises(CaMaterialInvalid, match="does not match"):
        import_issuing_ca(
            hierarchy.issuing.certificate_pem,
            private_key_pem(generate_private_key()),
            hierarchy.issuing.root_pem,
            NOW,
        )


def test_import_refuses_chain_to_another_root(hierarchy: CaHierarchy) -> None:
    stranger = create_hierarchy(TRUST_DOMAIN, NOW)
    with pytest.raises(CaMaterialInvalid, match="no certificate in the chain issued"):
        import_issuing_ca(
            hierarchy.issuing.certificate_pem,
            private_key_pem(hierarchy.issuing.key),
            stranger.issuing.root_pem,
            NOW,
        )


def test_import_refuses_a_leaf(hierarchy: CaHierarchy) -> None:
    issuer = CertificateIssuer(
        hierarchy.issuing, TRUST_DOMAIN, crl_url="http://c", ocsp_url="http://o"
    )
    key = generate_private_key()
    leaf = issuer.issue(key.public_key(), "device", "d1", "device", NOW)
    with pytest.raises(CaMaterialInvalid, match="CA:FALSE"):
        import_issuing_ca(leaf.pem, private_key_pem(key), hierarchy.issuing.chain_pem, NOW)


def test_import_refuses_expired_ca(hierarchy: CaHierarchy) -> None:
    with pytest.raises(CaMaterialInvalid, match="not valid at"):
        import_issuing_ca(
            hierarchy.issuing.certificate_pem,
            private_key_pem(hierarchy.issuing.key),
            hierarchy.issuing.root_pem,
            NOW + ROOT_LIFETIME + timedelta(days=1),
        )


def test_import_refuses_name_constraints_for_another_domain(hierarchy: CaHierarchy) -> None:
    with pytest.raises(CaMaterialInvalid, match="do not permit"):
        import_issuing_ca(
            hierarchy.issuing.certificate_pem,
            private_key_pem(hierarchy.issuing.key),
            hierarchy.issuing.root_pem,
            NOW,
            trust_domain="other.example",
        )


def _ca_certificate(
    subject: str,
    key: PrivateKey,
    issuer_name: x509.Name | None,
    issuer_key: PrivateKey,
    path_length: int | None,
    *,
    ski: bool = True,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)  # None: self-signed
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def test_import_three_level_chain_and_issue(tmp_path: Path) -> None:
    """Bring your own CA: root -> policy CA -> issuing CA (no SKI, no name constraints)."""
    root_key, mid_key, issuing_key = (generate_private_key() for _ in range(3))
    root = _ca_certificate("BYO Root", root_key, None, root_key, None)
    mid = _ca_certificate("BYO Policy CA", mid_key, root.subject, root_key, 1)
    issuing = _ca_certificate("BYO Issuing CA", issuing_key, mid.subject, mid_key, 0, ski=False)
    imported = import_issuing_ca(
        certificates_pem([issuing]),
        private_key_pem(issuing_key, PASSPHRASE),
        certificates_pem([root, mid]),  # any order
        NOW,
        passphrase=PASSPHRASE,
        trust_domain=TRUST_DOMAIN,
    )
    assert imported.intermediates == (issuing, mid) and imported.root == root
    issuer = CertificateIssuer(imported, TRUST_DOMAIN, crl_url="http://c", ocsp_url="http://o")
    leaf_key = generate_private_key()
    leaf = issuer.issue(leaf_key.public_key(), "device", "byo-1", "device", NOW)
    cert = x509.load_der_x509_certificate(leaf.der)
    cert.verify_directly_issued_by(issuing)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki == imported.authority_key_identifier
    openssl = require_tool("openssl", "openssl")
    for name, data in (
        ("ca.pem", imported.root_pem),
        ("chain.pem", imported.chain_pem),
        ("cert.pem", leaf.pem),
    ):
        (tmp_path / name).write_bytes(data)
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            tmp_path / "ca.pem",
            "-untrusted",
            tmp_path / "chain.pem",
            tmp_path / "cert.pem",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_refuses_issuing_ca_without_crl_sign() -> None:
    root_key, issuing_key = generate_private_key(), generate_private_key()
    root = _ca_certificate("R", root_key, None, root_key, None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "I")])
    issuing = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(issuing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, False, False, False),
            critical=True,
        )
        .sign(root_key, signature_hash(root_key))
    )
    with pytest.raises(CaMaterialInvalid, match="cRLSign"):
        import_issuing_ca(
            certificates_pem([issuing]),
            private_key_pem(issuing_key),
            certificates_pem([root]),
            NOW,
        )


def test_renewing_the_issuing_ca_keeps_its_name_key_and_extensions(
        hierarchy: CaHierarchy) -> None:
    """``ca renew``: the issuing CA certified again by the root, so what it issued, its
    CRLs and OCSP answers verify under the new certificate, which ends later."""
    assert hierarchy.root_key is not None
    old = hierarchy.issuing
    issuer = CertificateIssuer(old, TRUST_DOMAIN, crl_url="http://c", ocsp_url="http://o")
    leaf = x509.load_der_x509_certificate(
        issuer.issue(generate_private_key().public_key(), "device", "d1", "device", NOW).der)
    later = NOW + timedelta(days=1000)
    renewed = renew_issuing_ca(old, hierarchy.root_key, later)
    cert = renewed.certificate
    assert (cert.subject, cert.public_key(), cert.issuer) == (
        old.certificate.subject, old.certificate.public_key(), hierarchy.root.subject)
    assert list(cert.extensions) == list(old.certificate.extensions)
    assert cert.serial_number != old.certificate.serial_number
    assert cert.not_valid_before_utc == later
    assert cert.not_valid_after_utc == later + INTERMEDIATE_LIFETIME
    assert renewed.intermediates == (cert,) and renewed.root == old.root
    assert renewed.key is old.key
    cert.verify_directly_issued_by(hierarchy.root)
    leaf.verify_directly_issued_by(cert)  # issued under the old certificate
    # Never past the root: near the root's end, the renewal ends with it.
    near_end = hierarchy.root.not_valid_after_utc - timedelta(days=100)
    assert renew_issuing_ca(old, hierarchy.root_key, near_end).certificate \
        .not_valid_after_utc == hierarchy.root.not_valid_after_utc


def test_renewal_refusals(hierarchy: CaHierarchy, tmp_path: Path) -> None:
    assert hierarchy.root_key is not None
    old = hierarchy.issuing
    with pytest.raises(CaMaterialInvalid, match="is not the key of .*Root CA"):
        renew_issuing_ca(old, old.key, NOW + timedelta(days=1))
    # A renewal that would not end later than now (a root ending sooner) is pointless.
    short_root = create_hierarchy(TRUST_DOMAIN, NOW, root_lifetime=timedelta(days=30),
                                  intermediate_lifetime=timedelta(days=30))
    assert short_root.root_key is not None
    with pytest.raises(CaMaterialInvalid, match="no later than now"):
        renew_issuing_ca(short_root.issuing, short_root.root_key, NOW + timedelta(days=1))

    good = renew_issuing_ca(old, hierarchy.root_key, NOW + timedelta(days=1))
    assert install_renewed_issuing_ca(old, good.certificate_pem, None, NOW + timedelta(
        days=1), trust_domain=TRUST_DOMAIN).certificate == good.certificate
    other = create_hierarchy(TRUST_DOMAIN, NOW)
    assert other.root_key is not None
    renamed = _certify(old, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]),
                       hierarchy.root, hierarchy.root_key)
    same_key_other_root = _certify(old, old.certificate.subject, other.root, other.root_key)
    for pem, chain, why in (
            (other.issuing.certificate_pem, None, "for another key"),
            (renamed, None, "names CN=x, not"),
            (same_key_other_root, other.issuing.root_pem, "not to this CA's root"),
            (good.certificate_pem + good.certificate_pem, None, "expected one"),
            (old.certificate_pem, None, "no later than now")):
        with pytest.raises(CaMaterialInvalid, match=why):
            install_renewed_issuing_ca(old, pem, chain, NOW + timedelta(days=1))
    # Not valid yet at the moment of installing.
    with pytest.raises(CaMaterialInvalid, match="is not valid at"):
        install_renewed_issuing_ca(old, good.certificate_pem, None, NOW)


def _certify(ca: IssuingCa, name: x509.Name, root: x509.Certificate,
             root_key: PrivateKey) -> bytes:
    """``ca``'s key and extensions under ``name``, certified by ``root``."""
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(root.subject).public_key(ca.key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=4000)))
    for ext in ca.certificate.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return certificates_pem([builder.sign(root_key, signature_hash(root_key))])
