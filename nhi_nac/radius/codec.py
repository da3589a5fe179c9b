"""RADIUS packet codec (RFC 2865, RFC 2866, RFC 3579, RFC 2868, RFC 2548, RFC 5997).

Pure functions over bytes. :func:`decode_packet` checks structure only; the
authenticators are checked separately by :func:`verify_request`, because only the
caller knows the shared secret (it depends on the source address). Decoders raise
only :class:`~nhi_nac.radius.errors.RadiusProtocolError`.

Attributes are kept by number, in wire order, as ``(type, value)`` pairs: the server
needs few of them and must echo some (Proxy-State) unchanged, so there is no
dictionary and no value conversion on the hot path.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from nhi_nac.radius.errors import RadiusAuthenticationError, RadiusProtocolError
from nhi_nac.radius.limits import (
    MAX_ATTRIBUTE_VALUE,
    MAX_PACKET_SIZE,
    MAX_USER_PASSWORD,
    MIN_PACKET_SIZE,
    VLAN_REPLY_CACHE_SIZE,
)


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12


class Attr(IntEnum):
    USER_NAME = 1
    USER_PASSWORD = 2
    CHAP_PASSWORD = 3
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    FILTER_ID = 11
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    TERMINATION_ACTION = 29
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    PROXY_STATE = 33
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_INPUT_OCTETS = 42
    ACCT_OUTPUT_OCTETS = 43
    ACCT_SESSION_ID = 44
    ACCT_SESSION_TIME = 46
    ACCT_INPUT_PACKETS = 47
    ACCT_OUTPUT_PACKETS = 48
    ACCT_TERMINATE_CAUSE = 49
    ACCT_INPUT_GIGAWORDS = 52
    ACCT_OUTPUT_GIGAWORDS = 53
    EVENT_TIMESTAMP = 55
    NAS_PORT_TYPE = 61
    TUNNEL_TYPE = 64
    TUNNEL_MEDIUM_TYPE = 65
    EAP_MESSAGE = 79
    MESSAGE_AUTHENTICATOR = 80
    TUNNEL_PRIVATE_GROUP_ID = 81
    NAS_PORT_ID = 87
    NAS_IPV6_ADDRESS = 95


#: RFC 2548: Microsoft vendor id and the MPPE key vendor types.
VENDOR_MICROSOFT = 311
MS_MPPE_SEND_KEY = 16
MS_MPPE_RECV_KEY = 17
#: RFC 3580 §3.31: Tunnel-Type VLAN, Tunnel-Medium-Type IEEE-802.
TUNNEL_TYPE_VLAN = 13
TUNNEL_MEDIUM_IEEE_802 = 6
#: RFC 2868 §3.1: the tag we put on the three tunnel attributes, grouping them as one
#: tunnel. A non-zero tag makes Tunnel-Private-Group-Id unambiguous (RFC 2868 §3.6).
TUNNEL_TAG = 1

_HEADER = struct.Struct("!BBH16s")
_ZERO16 = bytes(16)
_REQUEST_CODES = frozenset({Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER})

Attribute = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class RadiusPacket:
    """One decoded RADIUS packet. ``raw`` is kept for authenticator checks."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[Attribute, ...]
    raw: bytes
    #: Offset in ``raw`` of the Message-Authenticator value, or None when absent.
    message_authenticator_offset: int | None = None

    def get(self, attr_type: int) -> bytes | None:
        """The first value of ``attr_type``, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == attr_type]

    def get_text(self, attr_type: int) -> str | None:
        """A text attribute decoded as UTF-8 (invalid bytes replaced), or None."""
        value = self.get(attr_type)
        return None if value is None else value.decode("utf-8", "replace")

    def get_int(self, attr_type: int) -> int | None:
        """A 32-bit integer attribute; a wrong length is a protocol error."""
        value = self.get(attr_type)
        if value is None:
            return None
        if len(value) != 4:
            raise RadiusProtocolError(f"attribute {attr_type} is not a 32-bit integer")
        return int.from_bytes(value, "big")

    def eap_message(self) -> bytes | None:
        """RFC 3579 §3.1: all EAP-Message attributes concatenated in order, or None."""
        parts = [v for t, v in self.attributes if t == _EAP_MESSAGE]
        return b"".join(parts) if parts else None

    @property
    def has_message_authenticator(self) -> bool:
        return self.message_authenticator_offset is not None


_MESSAGE_AUTHENTICATOR = int(Attr.MESSAGE_AUTHENTICATOR)
_EAP_MESSAGE = int(Attr.EAP_MESSAGE)


def decode_packet(data: bytes) -> RadiusPacket:
    """Decode the structure of a RADIUS packet (RFC 2865 §3); authenticators unchecked.

    Octets after the Length field are ignored as RFC 2865 §3 requires; a Length beyond
    the datagram, a malformed attribute or a second Message-Authenticator is an error.
    """
    n = len(data)
    if n < MIN_PACKET_SIZE:
        raise RadiusProtocolError(f"packet of {n} octets is shorter than the header", "short")
    code, identifier, length, authenticator = _HEADER.unpack_from(data)
    if length < MIN_PACKET_SIZE or length > MAX_PACKET_SIZE or length > n:
        raise RadiusProtocolError(f"bad packet length {length} (datagram {n})", "bad_length")
    raw = data if length == n and type(data) is bytes else bytes(data[:length])
    attributes: list[Attribute] = []
    ma_offset: int | None = None
    pos = MIN_PACKET_SIZE
    while pos < length:
        if pos + 2 > length:
            raise RadiusProtocolError("truncated attribute header", "bad_attribute")
        attr_type = raw[pos]
        attr_len = raw[pos + 1]
        if attr_len < 2 or pos + attr_len > length:
            raise RadiusProtocolError(
                f"bad length {attr_len} of attribute {attr_type}", "bad_attribute"
            )
        if attr_type == _MESSAGE_AUTHENTICATOR:
            if attr_len != 18:
                raise RadiusProtocolError("Message-Authenticator is not 16 octets", "bad_attribute")
            if ma_offset is not None:
                raise RadiusProtocolError("more than one Message-Authenticator", "bad_attribute")
            ma_offset = pos + 2
        attributes.append((attr_type, raw[pos + 2 : pos + attr_len]))
        pos += attr_len
    return RadiusPacket(code, identifier, authenticator, tuple(attributes), raw, ma_offset)


def _md5_constructor() -> Callable[[bytes], Any]:
    """CPython's own MD5 (module ``_md5``) where the interpreter has it, else hashlib's.

    RADIUS hashes short inputs (20-300 octets), where the builtin runs in about half the
    time of OpenSSL's through hashlib (which fetches an EVP method on every call):
    measured here 0.44 vs 1.0 µs per digest. Same algorithm, same bytes.
    """
    try:
        return importlib.import_module("_md5").md5  # type: ignore[no-any-return]
    except ImportError:  # an interpreter built without it
        return hashlib.md5


_MD5 = _md5_constructor()


def _md5(data: bytes) -> bytes:
    """MD5 as RFC 2865/2866/2548 mandate it; RADIUS has no other hash to offer."""
    return _MD5(data).digest()  # type: ignore[no-any-return]


def _xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


@functools.lru_cache(maxsize=1024)
def _hmac_pads(secret: bytes) -> tuple[Any, Any]:
    """HMAC-MD5 (RFC 2104) with the key's inner and outer pads hashed once per secret:
    a packet then costs two MD5 state copies instead of a whole HMAC set-up."""
    key = _md5(secret) if len(secret) > 64 else secret
    key = key.ljust(64, b"\0")
    return (_MD5(bytes(k ^ 0x36 for k in key)), _MD5(bytes(k ^ 0x5C for k in key)))


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    inner, outer = _hmac_pads(secret)
    h = inner.copy()
    h.update(data)
    o = outer.copy()
    o.update(h.digest())
    return o.digest()  # type: ignore[no-any-return]


def _message_authenticator(raw: bytes, offset: int, auth: bytes, secret: bytes) -> bytes:
    """RFC 3579 §3.2: HMAC-MD5 over the packet with the MA value zeroed and ``auth`` in
    the authenticator field."""
    msg = b"".join((raw[:4], auth, raw[20:offset], _ZERO16, raw[offset + 16 :]))
    return _hmac_md5(secret, msg)


def verify_request(packet: RadiusPacket, secret: bytes) -> None:
    """Check a request's authenticators; raise :class:`RadiusAuthenticationError` if wrong.

    * Accounting-Request: RFC 2866 §3 Request Authenticator = MD5 of the packet with a
      zero authenticator, followed by the secret.
    * Message-Authenticator, where present (RFC 3579 §3.2): over the Request
      Authenticator for Access-Request and Status-Server; over sixteen zero octets for
      Accounting-Request (as FreeRADIUS computes it). It may be anywhere in the packet.

    Whether a Message-Authenticator is *required* is policy, decided by the server.
    """
    raw = packet.raw
    if packet.code == Code.ACCOUNTING_REQUEST:
        expected = _md5(raw[:4] + _ZERO16 + raw[20:] + secret)
        if not hmac.compare_digest(expected, packet.authenticator):
            raise RadiusAuthenticationError("Accounting-Request authenticator does not verify")
        auth = _ZERO16
    else:
        auth = packet.authenticator
    offset = packet.message_authenticator_offset
    if offset is not None:
        expected = _message_authenticator(raw, offset, auth, secret)
        if not hmac.compare_digest(expected, raw[offset : offset + 16]):
            raise RadiusAuthenticationError(
                "Message-Authenticator does not verify", "bad_message_authenticator"
            )


@functools.lru_cache(maxsize=4096)
def encode_fixed_attributes(attributes: tuple[Attribute, ...]) -> bytes:
    """:func:`encode_attributes` of a reply's attributes that repeat from packet to packet
    (VLAN, Session-Timeout, Reply-Message), encoded once: the MAB hot path."""
    return encode_attributes(attributes)


def encode_attributes(attributes: Iterable[Attribute]) -> bytes:
    out = bytearray()
    for attr_type, value in attributes:
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise ValueError(f"attribute {attr_type} value of {len(value)} octets is too long")
        out += bytes((attr_type, len(value) + 2))
        out += value
    return bytes(out)


def encode_response(
    code: int,
    identifier: int,
    request_authenticator: bytes,
    attributes: Sequence[Attribute] | bytes,
    secret: bytes,
    *,
    message_authenticator: bool = True,
    ma_zero_authenticator: bool = False,
) -> bytes:
    """Encode a response with its Response Authenticator (RFC 2865 §3).

    The Message-Authenticator, when wanted, is the **first** attribute (Blast-RADIUS,
    CVE-2024-3596), computed over the Request Authenticator (RFC 3579 §3.2) or over
    zeros when ``ma_zero_authenticator`` (an Accounting-Response, as FreeRADIUS checks).
    ``attributes`` may come already encoded (:func:`encode_fixed_attributes`).
    """
    body = attributes if isinstance(attributes, bytes) else encode_attributes(attributes)
    if message_authenticator:
        body = b"\x50\x12" + _ZERO16 + body
    length = MIN_PACKET_SIZE + len(body)
    if length > MAX_PACKET_SIZE:
        raise ValueError(f"response of {length} octets exceeds {MAX_PACKET_SIZE}")
    head = struct.pack("!BBH", code, identifier, length)
    if message_authenticator:
        ma_auth = _ZERO16 if ma_zero_authenticator else request_authenticator
        mac = _hmac_md5(secret, head + ma_auth + body)
        body = b"\x50\x12" + mac + body[18:]
    response_auth = _md5(head + request_authenticator + body + secret)
    return head + response_auth + body


def encode_request(
    code: int,
    identifier: int,
    attributes: Sequence[Attribute],
    secret: bytes,
    *,
    authenticator: bytes | None = None,
    message_authenticator: bool = True,
) -> bytes:
    """Encode a request (for tests and tools): random or Accounting Request Authenticator,
    Message-Authenticator **last** (as eapol_test places it)."""
    body = encode_attributes(attributes)
    if message_authenticator:
        body += b"\x50\x12" + _ZERO16
    length = MIN_PACKET_SIZE + len(body)
    head = struct.pack("!BBH", code, identifier, length)
    if code == Code.ACCOUNTING_REQUEST:
        if message_authenticator:
            mac = _hmac_md5(secret, head + _ZERO16 + body)
            body = body[:-16] + mac
        auth = _md5(head + _ZERO16 + body + secret)
        return head + auth + body
    auth = authenticator if authenticator is not None else os.urandom(16)
    if message_authenticator:
        mac = _hmac_md5(secret, head + auth + body)
        body = body[:-16] + mac
    return head + auth + body


def verify_response(
    response: bytes,
    request_authenticator: bytes,
    secret: bytes,
    request_code: int = Code.ACCESS_REQUEST,
) -> None:
    """Check a response's Response Authenticator and Message-Authenticator (tests, tools).

    The Message-Authenticator of an answer to an Accounting-Request is over zeros; of
    any other answer (Status-Server included, RFC 5997 §3) over the Request Authenticator.
    """
    packet = decode_packet(response)
    raw = packet.raw
    expected = _md5(raw[:4] + request_authenticator + raw[20:] + secret)
    if not hmac.compare_digest(expected, packet.authenticator):
        raise RadiusAuthenticationError("Response Authenticator does not verify")
    offset = packet.message_authenticator_offset
    if offset is not None:
        auth = _ZERO16 if request_code == Code.ACCOUNTING_REQUEST else request_authenticator
        if not hmac.compare_digest(
            _message_authenticator(raw, offset, auth, secret), raw[offset : offset + 16]
        ):
            raise RadiusAuthenticationError(
                "Message-Authenticator does not verify", "bad_message_authenticator"
            )


# -- attribute helpers ---------------------------------------------------------------


def split_eap_message(eap: bytes) -> list[Attribute]:
    """RFC 3579 §3.1: an EAP packet as consecutive EAP-Message attributes of ≤253 octets."""
    return [
        (Attr.EAP_MESSAGE, eap[i : i + MAX_ATTRIBUTE_VALUE])
        for i in range(0, len(eap), MAX_ATTRIBUTE_VALUE)
    ] or [(Attr.EAP_MESSAGE, b"")]


def integer(attr_type: int, value: int) -> Attribute:
    return (attr_type, value.to_bytes(4, "big"))


@functools.lru_cache(maxsize=VLAN_REPLY_CACHE_SIZE)
def vlan_reply(vlan: int) -> tuple[Attribute, ...]:
    """:func:`vlan_attributes` with our tag, built once per VLAN (the Accept hot path)."""
    return tuple(vlan_attributes(vlan))


def vlan_attributes(vlan: int, tag: int = TUNNEL_TAG) -> list[Attribute]:
    """RFC 3580 §3.31 / RFC 4675: Tunnel-Type=VLAN, Tunnel-Medium-Type=IEEE-802 and
    Tunnel-Private-Group-Id=<vlan>, tagged per RFC 2868 §3.1/§3.6."""
    if not 1 <= vlan <= 4094:
        raise ValueError(f"VLAN {vlan} outside 1..4094")
    if not 0 <= tag <= 0x1F:
        raise ValueError(f"tunnel tag {tag} outside 0..31")
    return [
        (Attr.TUNNEL_TYPE, bytes((tag,)) + TUNNEL_TYPE_VLAN.to_bytes(3, "big")),
        (Attr.TUNNEL_MEDIUM_TYPE, bytes((tag,)) + TUNNEL_MEDIUM_IEEE_802.to_bytes(3, "big")),
        (Attr.TUNNEL_PRIVATE_GROUP_ID, bytes((tag,)) + str(vlan).encode("ascii")),
    ]


def decode_tagged_integer(value: bytes) -> tuple[int, int]:
    """RFC 2868: (tag, 24-bit value) of Tunnel-Type / Tunnel-Medium-Type."""
    if len(value) != 4:
        raise RadiusProtocolError("tagged integer is not 4 octets", "bad_attribute")
    return value[0], int.from_bytes(value[1:], "big")


def decode_tagged_string(value: bytes) -> tuple[int, bytes]:
    """RFC 2868 §3.6: a first octet 0x01..0x1F is a tag; otherwise there is none (0)."""
    if value and value[0] <= 0x1F:
        return value[0], value[1:]
    return 0, value


def hide_user_password(password: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """RFC 2865 §5.2 User-Password hiding (client side; used in tests and tools)."""
    if len(password) > MAX_USER_PASSWORD:
        raise ValueError("password longer than 128 octets")
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    prev = request_authenticator
    for i in range(0, len(padded), 16):
        b = _md5(secret + prev)
        block = _xor16(padded[i : i + 16], b)
        out += block
        prev = block
    return bytes(out)


def decode_user_password(hidden: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """RFC 2865 §5.2: recover a PAP password; trailing NUL padding is removed."""
    n = len(hidden)
    if n < 16 or n > MAX_USER_PASSWORD or n % 16:
        raise RadiusProtocolError(f"User-Password of {n} octets", "bad_attribute")
    if n == 16:  # a MAC as password (MAB) fits one block
        return _xor16(hidden, _md5(secret + request_authenticator)).rstrip(b"\x00")
    out = bytearray()
    prev = request_authenticator
    for i in range(0, n, 16):
        block = hidden[i : i + 16]
        b = _md5(secret + prev)
        out += _xor16(block, b)
        prev = block
    return bytes(out).rstrip(b"\x00")


def _mppe_encrypt(key: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    plain = bytes((len(key),)) + key
    plain += bytes(-len(plain) % 16)
    out = bytearray(salt)
    prev = request_authenticator + salt
    for i in range(0, len(plain), 16):
        b = _md5(secret + prev)
        block = _xor16(plain[i : i + 16], b)
        out += block
        prev = block
    return bytes(out)


def mppe_decrypt(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """Inverse of the RFC 2548 §2.4.2 encryption (the NAS side; used in tests)."""
    salt, cipher = value[:2], value[2:]
    if len(salt) != 2 or not salt[0] & 0x80 or not cipher or len(cipher) % 16:
        raise RadiusProtocolError("malformed MS-MPPE key", "bad_attribute")
    plain = bytearray()
    prev = request_authenticator + salt
    for i in range(0, len(cipher), 16):
        block = cipher[i : i + 16]
        b = _md5(secret + prev)
        plain += _xor16(block, b)
        prev = block
    if plain[0] > len(plain) - 1:
        raise RadiusProtocolError("MS-MPPE key length exceeds its value", "bad_attribute")
    return bytes(plain[1 : 1 + plain[0]])


def vendor_specific(vendor: int, vendor_type: int, value: bytes) -> Attribute:
    return (
        Attr.VENDOR_SPECIFIC,
        vendor.to_bytes(4, "big") + bytes((vendor_type, len(value) + 2)) + value,
    )


def mppe_key_attributes(msk: bytes, secret: bytes, request_authenticator: bytes) -> list[Attribute]:
    """MS-MPPE-Recv-Key = MSK[0:32], MS-MPPE-Send-Key = MSK[32:64] (RFC 5216 §2.3, as
    the NAS sees them), each salt-encrypted per RFC 2548 §2.4.2/§2.4.3 with distinct
    salts whose high bit is set."""
    if len(msk) < 64:
        raise ValueError("MSK shorter than 64 octets")
    salt = bytearray(os.urandom(2))
    salt[0] |= 0x80
    recv_salt = bytes(salt)
    send_salt = bytes((salt[0], salt[1] ^ 0x01))
    return [
        vendor_specific(
            VENDOR_MICROSOFT,
            MS_MPPE_RECV_KEY,
            _mppe_encrypt(msk[:32], secret, request_authenticator, recv_salt),
        ),
        vendor_specific(
            VENDOR_MICROSOFT,
            MS_MPPE_SEND_KEY,
            _mppe_encrypt(msk[32:64], secret, request_authenticator, send_salt),
        ),
    ]


def vendor_attributes(packet: RadiusPacket, vendor: int) -> list[tuple[int, bytes]]:
    """Sub-attributes (vendor type, value) of the Vendor-Specific attributes of ``vendor``
    (RFC 2865 §5.26 recommended format)."""
    out: list[tuple[int, bytes]] = []
    for value in packet.get_all(Attr.VENDOR_SPECIFIC):
        if len(value) < 4 or int.from_bytes(value[:4], "big") != vendor:
            continue
        pos = 4
        while pos < len(value):
            if pos + 2 > len(value) or value[pos + 1] < 2 or pos + value[pos + 1] > len(value):
                raise RadiusProtocolError("malformed Vendor-Specific", "bad_attribute")
            out.append((value[pos], value[pos + 2 : pos + value[pos + 1]]))
            pos += value[pos + 1]
    return out


def is_request_code(code: int) -> bool:
    return code in _REQUEST_CODES
