"""Certificate revocation lists (RFC 5280 §5), built from entries encoded once.

A CA's revoked certificates change one at a time, and a CRL lists all of them:
100,000 entries are 3.6 MB. So each entry (§5.1.2.6: serial, revocation date,
reason) is DER-encoded once, by :func:`encode_entry`, and kept as bytes by the
caller; a :class:`CrlSigner` joins the entries between the fixed parts of its
CA's TBSCertList and signs it. ``x509.CertificateRevocationListBuilder`` would
build every entry again on every CRL, and hold the GIL while it encodes the
whole list (about 0.12 s at 100,000 entries). Like the leaf template of
``pki.issuer``, the CRL template is trusted only once proven: probe CRLs are
built both ways and their TBS bytes compared; a CA for which they differ in any
byte, or whose key we cannot sign with directly, keeps the builder.

Entries kept as bytes also cost the garbage collector nothing (bytes hold no
references): a map of serial to entry is a revocation index a collection never
walks. :func:`decode_entry` reads one back.

Reason codes follow §5.3.1: the extension is left out for ``unspecified``, and
``removeFromCRL`` (delta CRLs only) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from pki import der
from pki.errors import LocalError, PolicyViolation
from pki.hierarchy import IssuingCa
from pki.keys import direct_signer, signature_hash

#: How long a CRL is good for when the caller does not say: re-signed well before.
DEFAULT_CRL_VALIDITY = timedelta(days=1)
#: How long a revoked certificate stays listed after its notAfter. RFC 5280 §3.3: an entry
#: may go once it has appeared on one regularly scheduled CRL issued beyond the
#: certificate's validity; a publisher that re-signs at least every half validity has
#: issued one within a validity. Without this a CRL keeps every certificate ever revoked,
#: and short-lived certificates do not keep it small.
KEEP_AFTER_EXPIRY = DEFAULT_CRL_VALIDITY
#: RFC 5280 §5.2.3: a CRL number is at most 20 octets, so below 2^159 as a positive integer.
MAX_CRL_NUMBER = 2**159 - 1
#: RFC 5280 §4.1.2.2: a serial is at most 20 octets.
MAX_SERIAL_BITS = 159

#: RFC 5280 §5.3.1 reason names, as written in the RFC, to the flag.
REASONS: Mapping[str, x509.ReasonFlags] = MappingProxyType(
    {flag.value: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl}
)
_FOLDED = {re.sub(r"[-_ ]", "", name).lower(): flag for name, flag in REASONS.items()}

#: RFC 5280 §5.3.1 CRLReason ENUMERATED values (7 is unused). OCSP (RFC 6960 §4.2.1)
#: writes the same codes.
REASON_CODES: Mapping[x509.ReasonFlags, int] = MappingProxyType({
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
})
_REASON_BY_CODE = {code: flag for flag, code in REASON_CODES.items() if flag in REASONS.values()}
_REASON_CODE_OID = der.object_identifier(CRLEntryExtensionOID.CRL_REASON.dotted_string)
_CRL_NUMBER_OID = der.object_identifier(ExtensionOID.CRL_NUMBER.dotted_string)
#: RFC 5280 §5.1: ``crlExtensions [0] EXPLICIT``, context-specific and constructed.
_CRL_EXTENSIONS_TAG = 0xA0
#: Each entry's crlEntryExtensions: none for ``unspecified`` (§5.3.1), else the reasonCode.
_ENTRY_EXTENSIONS: Mapping[x509.ReasonFlags, bytes] = MappingProxyType({
    flag: b"" if flag is x509.ReasonFlags.unspecified else der.sequence(
        der.extension(_REASON_CODE_OID, False, der.enumerated(REASON_CODES[flag])))
    for flag in REASONS.values()
})

#: The last octet of an entry with each reason (:func:`entry_has_reason`).
_LAST_OCTET: Mapping[str, int] = MappingProxyType({
    flag.value: _ENTRY_EXTENSIONS[flag][-1] if _ENTRY_EXTENSIONS[flag] else ord("Z")
    for flag in REASONS.values()
})


def parse_reason(text: str) -> x509.ReasonFlags:
    """An RFC 5280 reason by name: ``keyCompromise``, ``key-compromise`` or ``key_compromise``."""
    flag = _FOLDED.get(re.sub(r"[-_ ]", "", text).lower())
    if flag is None:
        raise PolicyViolation(
            f"unknown revocation reason {text!r} (RFC 5280 §5.3.1: {', '.join(REASONS)})"
        )
    return flag


def reason_may_change(old: str | None, new: x509.ReasonFlags) -> bool:
    """Whether a certificate already revoked for ``old`` (a reason's RFC 5280 name; None
    is ``unspecified``) may be revoked again for ``new``, keeping its revocation date.

    Two changes are allowed, no others: a hold made permanent (``certificateHold`` is the
    one reversible reason, RFC 5280 §5.3.1; any other reason may follow it), and any
    reason raised to ``keyCompromise`` once the key is known to be compromised (the CA/B
    Forum Baseline Requirements §7.2.2 ask a CA to update the entry to keyCompromise
    then, so relying parties that treat it specially, e.g. by distrusting signatures made
    before the revocation, learn it). Neither ever lowers a keyCompromise.
    """
    old = old or x509.ReasonFlags.unspecified.value
    if old == new.value or old == x509.ReasonFlags.key_compromise.value:
        return False
    return old == x509.ReasonFlags.certificate_hold.value or new is x509.ReasonFlags.key_compromise


def entry_has_reason(entry: bytes, reason: str | None) -> bool:
    """Whether an entry :func:`encode_entry` wrote carries ``reason`` (its RFC 5280 name;
    None or ``unspecified`` for no reasonCode), without decoding it: such an entry ends
    with its reasonCode's ENUMERATED octet when it has one, and with its revocation
    date's closing ``Z`` when not. About 0.1 µs, for checking a kept index of 100,000
    entries against the rows they were made from."""
    return entry[-1] == _LAST_OCTET.get(reason or "unspecified", -1)


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate: its serial, when it was revoked, and why."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


@dataclass(frozen=True, slots=True)
class SignedCrl:
    """A signed CRL in both encodings, with the fields a publisher schedules by."""

    der: bytes
    pem: bytes
    number: int
    this_update: datetime
    next_update: datetime
    entries: int


def encode_entry(
    serial: int, revoked_at: datetime, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified
) -> bytes:
    """One revokedCertificates entry (RFC 5280 §5.1.2.6) as DER: the serial, the
    revocation date in whole seconds, and the reasonCode unless ``unspecified``."""
    if serial <= 0:
        raise LocalError(f"revoked serial {serial} is not positive")
    if serial.bit_length() > MAX_SERIAL_BITS:
        raise LocalError(f"revoked serial {serial:x} is longer than 20 octets")
    extensions = _ENTRY_EXTENSIONS.get(reason)
    if extensions is None:
        raise PolicyViolation(f"revocation reason {reason.value} is not allowed in a CRL entry")
    return der.sequence(der.integer(serial), der.time(revoked_at), extensions)


def decode_entry(entry: bytes) -> RevokedEntry:
    """An entry :func:`encode_entry` wrote, read back."""
    fields = der.split(entry)
    if len(fields) not in (2, 3) or fields[0][0] != der.INTEGER:
        raise ValueError("not a revokedCertificates entry (RFC 5280 §5.1)")
    reason = x509.ReasonFlags.unspecified
    for extension in der.split(fields[2]) if len(fields) == 3 else ():
        parts = der.split(extension)
        if parts[0] == _REASON_CODE_OID:
            code = int.from_bytes(der.contents(der.contents(parts[-1])), "big")
            reason = _REASON_BY_CODE[code]
    return RevokedEntry(int.from_bytes(der.contents(fields[0]), "big"),
                        der.read_time(fields[1]), reason)


class CrlSigner:
    """Signs the CRLs of one issuing CA from entries encoded by :func:`encode_entry`."""

    def __init__(self, ca: IssuingCa) -> None:
        self.ca = ca
        self._hash = signature_hash(ca.key)
        self._template = self._proven_template()

    @property
    def uses_template(self) -> bool:
        """Whether CRLs are written from the proven template (else by the builder)."""
        return self._template is not None

    def sign(
        self,
        entries: Sequence[bytes],
        *,
        number: int,
        now: datetime,
        validity: timedelta = DEFAULT_CRL_VALIDITY,
    ) -> SignedCrl:
        """Sign the CRL listing ``entries`` (RFC 5280 §5.1, §5.2).

        ``number`` is the CRL number (§5.2.3), which the caller must increase on
        every CRL it publishes; thisUpdate is ``now`` and nextUpdate ``now + validity``.
        """
        if not 0 <= number <= MAX_CRL_NUMBER:
            raise LocalError(f"CRL number {number} is outside 0..2^159-1")
        if validity <= timedelta(0):
            raise LocalError("CRL validity must be positive")
        this_update = now.astimezone(UTC).replace(microsecond=0)
        next_update = this_update + validity
        if self._template is None:
            crl = self._build([decode_entry(e) for e in entries], number, this_update,
                              next_update)
        else:
            crl = self._template.crl(entries, number, this_update, next_update)
        return SignedCrl(
            der=crl,
            pem=der.pem("X509 CRL", crl),
            number=number,
            this_update=this_update,
            next_update=next_update,
            entries=len(entries),
        )

    def _build(self, entries: Iterable[RevokedEntry], number: int, this_update: datetime,
               next_update: datetime) -> bytes:
        """The CRL built and signed by ``x509.CertificateRevocationListBuilder``, as DER.

        The fallback when the template is not proven, and the reference it is
        proven against.
        """
        revoked = [
            x509.RevokedCertificateBuilder(
                serial_number=entry.serial,
                revocation_date=entry.revoked_at.replace(microsecond=0),
                extensions=[] if entry.reason is x509.ReasonFlags.unspecified else [
                    x509.Extension(CRLEntryExtensionOID.CRL_REASON, False,
                                   x509.CRLReason(entry.reason))],
            ).build()
            for entry in entries
        ]
        return x509.CertificateRevocationListBuilder(
            issuer_name=self.ca.certificate.subject,
            last_update=this_update,
            next_update=next_update,
            extensions=[
                x509.Extension(x509.AuthorityKeyIdentifier.oid, False,
                               self.ca.authority_key_identifier),
                x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
            ],
            revoked_certificates=revoked,
        ).sign(self.ca.key, self._hash).public_bytes(serialization.Encoding.DER)

    def _proven_template(self) -> _CrlTemplate | None:
        """This CA's CRL template, or None unless it writes exactly what the builder writes.

        The probes between them cover no entries and every allowed reason,
        UTCTime and GeneralizedTime dates, the shortest and longest serials and
        CRL numbers; the first CRL the template signs must verify under the CA.
        """
        sign = direct_signer(self.ca.key, self._hash)
        if sign is None:
            return None
        try:
            template: _CrlTemplate | None = None
            for entries, number, this_update, next_update in _PROBES:
                reference = self._build(entries, number, this_update, next_update)
                template = template or _CrlTemplate(reference, sign)
                encoded = [encode_entry(e.serial, e.revoked_at, e.reason) for e in entries]
                if template.tbs(encoded, number, this_update, next_update) != \
                        x509.load_der_x509_crl(reference).tbs_certlist_bytes:
                    return None
                if [decode_entry(e) for e in encoded] != list(entries):
                    return None
            entries, number, this_update, next_update = _PROBES[-1]
            assert template is not None
            signed = x509.load_der_x509_crl(template.crl(
                [encode_entry(e.serial, e.revoked_at, e.reason) for e in entries],
                number, this_update, next_update))
            if not signed.is_signature_valid(self.ca.certificate.public_key()):  # type: ignore[arg-type]
                return None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None
        return template


class _CrlTemplate:
    """One CA's CRLs as DER: fixed bytes around thisUpdate, nextUpdate, the entries and
    the CRL number.

    The version, signature AlgorithmIdentifier, issuer Name and AKI extension are
    cut from ``reference``, a CRL the builder signed for this CA, so they are the
    builder's own bytes for this CA key and hash. ``sign`` signs TBS bytes with the
    CA key.
    """

    def __init__(self, reference: bytes, sign: Callable[[bytes], bytes]) -> None:
        certificate_list = der.split(reference)
        if len(certificate_list) != 3:
            raise ValueError("the reference is not a CertificateList (RFC 5280 §5.1)")
        tbs = der.split(certificate_list[0])
        # TBSCertList: version, signature, issuer, thisUpdate, nextUpdate,
        # [revokedCertificates], crlExtensions; AKI is the first extension given.
        if len(tbs) < 6 or tbs[-1][0] != _CRL_EXTENSIONS_TAG:
            raise ValueError("the reference's TBSCertList has no crlExtensions")
        self._prefix = b"".join(tbs[:3])
        self._signature_algorithm = certificate_list[1]
        self._aki = der.split(der.split(tbs[-1])[0])[0]
        self._ca_sign = sign

    def tbs(self, entries: Sequence[bytes], number: int, this_update: datetime,
            next_update: datetime) -> bytes:
        """The DER TBSCertList (RFC 5280 §5.1.2); with no entries the list is absent."""
        extensions = der.sequence(
            self._aki, der.extension(_CRL_NUMBER_OID, False, der.integer(number)))
        return der.sequence(
            self._prefix,
            der.time(this_update),
            der.time(next_update),
            der.sequence(*entries) if entries else b"",
            der.tlv(_CRL_EXTENSIONS_TAG, extensions),
        )

    def crl(self, entries: Sequence[bytes], number: int, this_update: datetime,
            next_update: datetime) -> bytes:
        """The signed CertificateList: SEQUENCE { tbs, signatureAlgorithm, signatureValue }."""
        tbs = self.tbs(entries, number, this_update, next_update)
        # §5.1.1.3: the signature is a BIT STRING; whole octets, so no unused bits.
        signature = der.tlv(der.BIT_STRING, b"\x00" + self._ca_sign(tbs))
        return der.sequence(tbs, self._signature_algorithm, signature)


#: (entries, CRL number, thisUpdate, nextUpdate) of the probe CRLs.
_PROBE_TIME = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
_PROBES: tuple[tuple[tuple[RevokedEntry, ...], int, datetime, datetime], ...] = (
    ((), 0, _PROBE_TIME, _PROBE_TIME + DEFAULT_CRL_VALIDITY),
    (
        tuple(
            RevokedEntry(serial, moment, reason)
            for serial, moment, reason in zip(
                (1, 0x7F, 0x80, 0xFFFF, 2**63, 2**159 - 1, 12345678901234567890, 2**127 + 5,
                 2**100, 99),
                (_PROBE_TIME - timedelta(days=400), _PROBE_TIME, datetime(2049, 12, 31, 23, 59, 59,
                                                                          tzinfo=UTC),
                 datetime(2050, 1, 1, tzinfo=UTC), datetime(1999, 3, 4, 5, 6, 7, tzinfo=UTC),
                 *(_PROBE_TIME - timedelta(seconds=i) for i in range(5))),
                REASONS.values(),
                strict=False,
            )
        ),
        MAX_CRL_NUMBER,
        _PROBE_TIME,
        datetime(2051, 1, 1, tzinfo=UTC),
    ),
)


def build_crl(
    ca: IssuingCa,
    revoked: Iterable[RevokedEntry | tuple[int, datetime, x509.ReasonFlags | str | None]],
    *,
    number: int,
    now: datetime,
    validity: timedelta = DEFAULT_CRL_VALIDITY,
) -> SignedCrl:
    """Sign the CRL of ``ca`` listing ``revoked`` (RFC 5280 §5.1, §5.2), all encoded
    afresh: for one CRL. A publisher keeps a :class:`CrlSigner` and encoded entries."""
    return CrlSigner(ca).sign([_encoded(entry) for entry in revoked], number=number, now=now,
                              validity=validity)


def _encoded(entry: RevokedEntry | tuple[int, datetime, x509.ReasonFlags | str | None]) -> bytes:
    if isinstance(entry, RevokedEntry):
        return encode_entry(entry.serial, entry.revoked_at, entry.reason)
    serial, revoked_at, given = entry
    if given is None:
        reason = x509.ReasonFlags.unspecified
    elif isinstance(given, str):
        reason = parse_reason(given)
    else:
        reason = given
    return encode_entry(serial, revoked_at, reason)
