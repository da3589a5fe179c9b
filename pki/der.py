"""Just enough DER (ITU-T X.690 §8, §10) to write a certificate, a CRL or an OCSP response
from parts, and to split one.

The issuer writes each leaf's TBSCertificate by concatenating bytes (see
``pki.issuer``), and the OCSP responder each response's ResponseData (see
``pki.ocsp``): this module encodes the few values that change per leaf or per
response and splits a certificate or response the builder wrote into its
elements, so that the parts that never change can be taken from it as bytes.
It knows only single-octet tags (tag numbers below 31) and definite lengths,
which is all either uses; the reader raises ``ValueError`` on anything else or
on truncated input.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
ENUMERATED = 0x0A
UTF8_STRING = 0x0C
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

#: X.690 §8.1.2.4: tag numbers from 31 need the high-tag-number form, which we never read.
_HIGH_TAG_NUMBER = 0x1F
#: X.690 §8.1.2.5: bit 6 of the identifier octet marks a constructed encoding.
_CONSTRUCTED = 0x20
#: Four length octets reach 4 GiB, far beyond any certificate; longer is not ours.
MAX_LENGTH_OCTETS = 4
#: RFC 5280 §4.1.2.5: UTCTime covers 1950 through 2049, GeneralizedTime the rest.
_UTC_TIME_YEARS = range(1950, 2050)

TRUE = bytes((BOOLEAN, 1, 0xFF))
#: RFC 7468 §2: base64 lines of exactly 64 characters, the last one shorter.
_PEM_LINE = 64


def length(size: int) -> bytes:
    """X.690 §10.1: the definite length in the fewest octets (short form below 128)."""
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, content: bytes) -> bytes:
    """One element: identifier octet, length, contents."""
    size = len(content)
    # The common cases, inlined: this runs some twenty times per certificate or OCSP response.
    if size < 0x80:
        return bytes((tag, size)) + content
    if size < 0x100:
        return bytes((tag, 0x81, size)) + content
    if size < 0x10000:
        return bytes((tag, 0x82, size >> 8, size & 0xFF)) + content
    return bytes((tag,)) + length(size) + content


def sequence(*elements: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(elements))


def extension(oid: bytes, critical: bool, value: bytes) -> bytes:
    """RFC 5280 §4.1: Extension ::= SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }.

    DER leaves out a value equal to its DEFAULT (X.690 §11.5): no BOOLEAN when
    the extension is not critical.
    """
    return sequence(oid, TRUE if critical else b"", tlv(OCTET_STRING, value))


def integer(value: int) -> bytes:
    """X.690 §8.3: a non-negative INTEGER in the fewest two's-complement octets.

    A value whose top bit would be set gets a leading zero octet, so that it
    stays positive (a certificate serial, RFC 5280 §4.1.2.2).
    """
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def enumerated(value: int) -> bytes:
    """X.690 §8.4: a non-negative ENUMERATED, encoded as an INTEGER of that value is."""
    if value < 0:
        raise ValueError("only non-negative enumerated values are encoded here")
    return tlv(ENUMERATED, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def object_identifier(dotted: str) -> bytes:
    """X.690 §8.19: the first two arcs in one subidentifier, each in base 128."""
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"{dotted!r} is not an object identifier")
    content = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        content.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(content))


def time(moment: datetime) -> bytes:
    """RFC 5280 §4.1.2.5: a Time in whole seconds, UTC, ``Z``-terminated.

    UTCTime (two-digit year) from 1950 through 2049, GeneralizedTime outside
    those years; fractions of a second are dropped, as the builder drops them.
    A naive ``moment`` is taken to be UTC.
    """
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    if moment.year not in _UTC_TIME_YEARS:
        return generalized_time(moment)
    # %-formatting, not strftime: a third of the cost, and per certificate this runs twice.
    return tlv(UTC_TIME, b"%02d%02d%02d%02d%02d%02dZ" % (
        moment.year % 100, moment.month, moment.day, moment.hour, moment.minute, moment.second))


def generalized_time(moment: datetime) -> bytes:
    """X.690 §11.7: a GeneralizedTime in whole seconds, UTC, ``Z``-terminated, in any year.

    RFC 6960 writes every OCSP time so, where a certificate would use UTCTime
    (RFC 5280 §4.1.2.5.2 has the same form). Fractions of a second are
    dropped, as the builder drops them; a naive ``moment`` is taken to be UTC.
    """
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return tlv(
        GENERALIZED_TIME,
        b"%04d%02d%02d%02d%02d%02dZ"
        % (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second),
    )


def read_time(element: bytes) -> datetime:
    """The moment of a UTCTime or GeneralizedTime in whole seconds, ``Z``-terminated, as
    :func:`time` and :func:`generalized_time` write it (RFC 5280 §4.1.2.5)."""
    utc_time = element[:1] == bytes((UTC_TIME,))
    if not utc_time and element[:1] != bytes((GENERALIZED_TIME,)):
        raise ValueError("not a UTCTime or GeneralizedTime")
    layout, size = ("%y%m%d%H%M%SZ", 13) if utc_time else ("%Y%m%d%H%M%SZ", 15)
    text = contents(element)
    if len(text) != size:
        raise ValueError("a Time must be whole seconds in UTC, Z-terminated")
    moment = datetime.strptime(text.decode("ascii"), layout).replace(tzinfo=UTC)
    if utc_time and moment.year >= 2050:
        # RFC 5280 §4.1.2.5.1: YY from 50 is 19YY; strptime's pivot is 69.
        moment = moment.replace(year=moment.year - 100)
    return moment


def pem(label: str, data: bytes) -> bytes:
    """RFC 7468 §2 text: base64 lines of exactly 64 characters, the last one shorter, as
    cryptography's ``public_bytes(PEM)`` writes them."""
    body = base64.b64encode(data)
    lines = b"\n".join(body[i : i + _PEM_LINE] for i in range(0, len(body), _PEM_LINE))
    tag = label.encode("ascii")
    return b"-----BEGIN " + tag + b"-----\n" + lines + b"\n-----END " + tag + b"-----\n"


def _header(data: bytes, offset: int) -> tuple[int, int]:
    """Where the contents of the element at ``offset`` start and end."""
    if offset + 2 > len(data):
        raise ValueError("DER element truncated in its header")
    if data[offset] & _HIGH_TAG_NUMBER == _HIGH_TAG_NUMBER:
        raise ValueError("DER high-tag-number form is not supported")
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > MAX_LENGTH_OCTETS:
            raise ValueError("DER length is indefinite or longer than supported")
        if start + count > len(data):
            raise ValueError("DER element truncated in its length")
        size = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + size
    if end > len(data):
        raise ValueError("DER element runs past the end of its input")
    return start, end


def contents(element: bytes) -> bytes:
    """The contents octets of ``element``, which must be exactly one element."""
    start, end = _header(element, 0)
    if end != len(element):
        raise ValueError("trailing bytes after a DER element")
    return element[start:end]


def split(element: bytes) -> list[bytes]:
    """The elements inside one constructed ``element`` (a SEQUENCE, SET or [n]), each encoded."""
    if not element or not element[0] & _CONSTRUCTED:
        raise ValueError("not a constructed DER element")
    inner = contents(element)
    parts: list[bytes] = []
    offset = 0
    while offset < len(inner):
        _, end = _header(inner, offset)
        parts.append(inner[offset:end])
        offset = end
    return parts
