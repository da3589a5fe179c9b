"""CRLs (RFC 5280 §5): content, reason names, and a one-pass build at scale."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from pki import (
    REASONS,
    CaHierarchy,
    LocalError,
    PolicyViolation,
    RevokedEntry,
    build_crl,
    parse_reason,
)
from tests.pki.conftest import NOW


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
