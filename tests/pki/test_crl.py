"""CRLs (RFC 5280 §5): content, reason names, entries encoded once, the template proven
against cryptography's builder, and a build at scale."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki import (
    REASONS,
    CaHierarchy,
    CrlSigner,
    LocalError,
    PolicyViolation,
    RevokedEntry,
    build_crl,
    create_hierarchy,
    decode_entry,
    der,
    encode_entry,
    entry_has_reason,
    parse_reason,
    reason_may_change,
)
from pki import crl as crl_module
from tests.pki.conftest import NOW, TRUST_DOMAIN


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("key-compromise", x509.ReasonFlags.key_compromise),
        ("KEY_COMPROMISE", x509.ReasonFlags.key_compromise),
        ("superseded", x509.ReasonFlags.superseded),
        ("cessationOfOperation", x509.ReasonFlags.cessation_of_operation),
        ("affiliationChanged", x509.ReasonFlags.affiliation_changed),
        ("privilegeWithdrawn", x509.ReasonFlags.privilege_withdrawn),
        ("unspecified", x509.ReasonFlags.unspecified),
    ],
)
def test_parse_rfc5280_reason_names(text: str, flag: x509.ReasonFlags) -> None:
    assert parse_reason(text) is flag


def test_unknown_and_delta_only_reasons_are_refused() -> None:
    with pytest.raises(PolicyViolation, match="unknown revocation reason"):
        parse_reason("bored")
    with pytest.raises(PolicyViolation, match="unknown revocation reason"):
        parse_reason("removeFromCRL")
    assert "removeFromCRL" not in REASONS


def test_crl_content(hierarchy: CaHierarchy) -> None:
    revoked_at = NOW - timedelta(hours=1)
    crl_signed = build_crl(
        hierarchy.issuing,
        [
            RevokedEntry(1234, revoked_at, x509.ReasonFlags.key_compromise),
            (5678, revoked_at, "superseded"),
            (9012, revoked_at, None),
        ],
        number=7,
        now=NOW,
        validity=timedelta(hours=12),
    )
    crl = x509.load_der_x509_crl(crl_signed.der)
    assert x509.load_pem_x509_crl(crl_signed.pem) == crl
    assert crl.is_signature_valid(hierarchy.issuing.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == hierarchy.issuing.certificate.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + timedelta(hours=12)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = hierarchy.issuing.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    )
    assert aki.key_identifier == ski.value.digest
    entry = crl.get_revoked_certificate_by_serial_number(1234)
    assert entry is not None and entry.revocation_date_utc == revoked_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    # RFC 5280 §5.3.1: no reasonCode extension for "unspecified".
    plain = crl.get_revoked_certificate_by_serial_number(9012)
    assert plain is not None and len(plain.extensions) == 0
    assert crl_signed.entries == 3 and len(crl) == 3


def test_crl_refusals(hierarchy: CaHierarchy) -> None:
    with pytest.raises(LocalError, match="CRL number"):
        build_crl(hierarchy.issuing, [], number=2**159, now=NOW)
    with pytest.raises(LocalError, match="not positive"):
        build_crl(hierarchy.issuing, [(0, NOW, None)], number=1, now=NOW)


def test_hundred_thousand_entries_in_one_pass(hierarchy: CaHierarchy) -> None:
    # Quadratic add_revoked_certificate would take ~8 s here; one pass takes well under 2.
    entries = (
        RevokedEntry(serial, NOW, x509.ReasonFlags.key_compromise) for serial in range(1, 100_001)
    )
    crl_signed = build_crl(hierarchy.issuing, entries, number=1, now=NOW)
    assert crl_signed.entries == 100_000
    crl = x509.load_der_x509_crl(crl_signed.der)
    assert crl.get_revoked_certificate_by_serial_number(99_999) is not None


def _builder_crl(hierarchy: CaHierarchy, entries: list[RevokedEntry], number: int) -> bytes:
    """The same CRL from cryptography's own builder, for comparison."""
    ca = hierarchy.issuing
    revoked = [
        x509.RevokedCertificateBuilder(
            serial_number=e.serial, revocation_date=e.revoked_at,
            extensions=[] if e.reason is x509.ReasonFlags.unspecified else [
                x509.Extension(x509.CRLReason.oid, False, x509.CRLReason(e.reason))],
        ).build()
        for e in entries
    ]
    algorithm = ca.certificate.signature_hash_algorithm
    return x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject, last_update=NOW,
        next_update=NOW + timedelta(days=1),
        extensions=[
            x509.Extension(x509.AuthorityKeyIdentifier.oid, False, ca.authority_key_identifier),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        ],
        revoked_certificates=revoked,
    ).sign(ca.key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", ["p256", "p384", "ed25519", "rsa3072"])
def test_the_signer_writes_what_cryptographys_builder_writes(key_type: str) -> None:
    """Random serials, every reason, dates across the UTCTime/GeneralizedTime switch: the
    TBSCertList is byte for byte the builder's, and the signature verifies."""
    hierarchy = create_hierarchy(TRUST_DOMAIN, NOW, key_type=key_type)  # type: ignore[arg-type]
    signer = CrlSigner(hierarchy.issuing)
    assert signer.uses_template
    reasons = list(REASONS.values())
    entries = [
        RevokedEntry(secrets.randbits(159) or 1,
                     NOW - timedelta(minutes=i) if i % 7 else datetime(2051, 2, 3, tzinfo=UTC),
                     reasons[i % len(reasons)])
        for i in range(60)
    ]
    signed = signer.sign([encode_entry(e.serial, e.revoked_at, e.reason) for e in entries],
                         number=31337, now=NOW)
    ours = x509.load_der_x509_crl(signed.der)
    theirs = x509.load_der_x509_crl(_builder_crl(hierarchy, entries, 31337))
    assert ours.tbs_certlist_bytes == theirs.tbs_certlist_bytes
    assert ours.is_signature_valid(hierarchy.issuing.certificate.public_key())  # type: ignore[arg-type]
    assert signed.pem == ours.public_bytes(serialization.Encoding.PEM)
    assert signed.entries == 60


def test_an_empty_crl_has_no_revoked_certificates_list(hierarchy: CaHierarchy) -> None:
    """RFC 5280 §5.1.2.6: with nothing revoked the list is absent, not empty."""
    signed = CrlSigner(hierarchy.issuing).sign([], number=1, now=NOW)
    crl = x509.load_der_x509_crl(signed.der)
    assert len(crl) == 0
    assert crl.tbs_certlist_bytes == x509.load_der_x509_crl(
        _builder_crl(hierarchy, [], 1)).tbs_certlist_bytes


@pytest.mark.parametrize(
    ("target", "name", "replacement"),
    [
        (der, "time", der.generalized_time),
        (crl_module, "_CRL_NUMBER_OID", der.object_identifier("2.5.29.21")),
        (crl_module, "direct_signer", lambda key, algorithm: None),
    ],
    ids=["generalized-time-everywhere", "wrong-crl-number-oid", "no-signer"],
)
def test_a_template_that_differs_from_the_builder_is_not_used(
    monkeypatch: pytest.MonkeyPatch, hierarchy: CaHierarchy, target: object, name: str,
    replacement: object,
) -> None:
    """Any byte of difference in the probes (or a key it cannot sign with) leaves the
    signer on the builder, whose CRLs are still complete and valid."""
    monkeypatch.setattr(target, name, replacement)
    signer = CrlSigner(hierarchy.issuing)
    assert not signer.uses_template
    monkeypatch.undo()
    entries = [RevokedEntry(7, NOW, x509.ReasonFlags.superseded), RevokedEntry(8, NOW)]
    signed = signer.sign([encode_entry(e.serial, e.revoked_at, e.reason) for e in entries],
                         number=3, now=NOW)
    crl = x509.load_der_x509_crl(signed.der)
    assert crl.is_signature_valid(hierarchy.issuing.certificate.public_key())  # type: ignore[arg-type]
    assert crl.tbs_certlist_bytes == x509.load_der_x509_crl(
        _builder_crl(hierarchy, entries, 3)).tbs_certlist_bytes


@pytest.mark.parametrize("reason", list(REASONS.values()))
@pytest.mark.parametrize("when", [NOW, datetime(1950, 1, 1, tzinfo=UTC),
                                  datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
                                  datetime(2050, 1, 1, tzinfo=UTC)])
def test_an_entry_reads_back_as_written(reason: x509.ReasonFlags, when: datetime) -> None:
    serial = 2**159 - 1
    assert decode_entry(encode_entry(serial, when, reason)) == RevokedEntry(serial, when, reason)


def test_entries_beyond_policy_are_refused() -> None:
    with pytest.raises(LocalError, match="not positive"):
        encode_entry(0, NOW)
    with pytest.raises(LocalError, match="longer than 20 octets"):
        encode_entry(2**159, NOW)
    with pytest.raises(PolicyViolation, match="not allowed in a CRL entry"):
        encode_entry(5, NOW, x509.ReasonFlags.remove_from_crl)


@pytest.mark.parametrize("when", [NOW, datetime(1950, 1, 1, tzinfo=UTC),
                                  datetime(2050, 1, 1, tzinfo=UTC)])
@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 2**64 + 0x5A, 2**159 - 1])
def test_an_entry_is_known_to_carry_exactly_its_own_reason(serial: int, when: datetime) -> None:
    # What the service checks its kept entries by, without decoding them: each entry
    # matches its own reason and no other (serials and dates ending in "Z" octets too).
    for reason in REASONS.values():
        entry = encode_entry(serial, when, reason)
        matches = {r.value for r in REASONS.values() if entry_has_reason(entry, r.value)}
        assert matches == {reason.value}
        assert entry_has_reason(entry, None) is (reason is x509.ReasonFlags.unspecified)
    assert not entry_has_reason(encode_entry(serial, when), "removeFromCRL")


def test_which_reasons_may_replace_a_revocation() -> None:
    flags = list(REASONS.values())
    allowed = {(old.value, new.value) for old in flags for new in flags
               if reason_may_change(old.value, new)}
    hold, kc = x509.ReasonFlags.certificate_hold.value, x509.ReasonFlags.key_compromise.value
    # A hold may be made permanent with any reason; any reason but keyCompromise may be
    # raised to keyCompromise; nothing else, and keyCompromise never changes.
    expected = {(hold, f.value) for f in flags if f.value != hold} | {
        (f.value, kc) for f in flags if f.value != kc}
    assert allowed == expected
    assert reason_may_change(None, x509.ReasonFlags.key_compromise)
    assert not reason_may_change(None, x509.ReasonFlags.superseded)
