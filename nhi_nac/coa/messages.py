"""RFC 5176 Dynamic Authorization messages, sans-I/O.

Building: :func:`build_request` turns a :class:`CoaTarget` (a NAS and one session on it)
into the bytes of a Disconnect-Request (code 40) or, for a NAS vendor with a
reauthenticate command, a CoA-Request (code 43). Both carry the session identification
of RFC 5176 §3 (NAS-IP-Address / NAS-Identifier, User-Name, Calling-Station-Id,
Acct-Session-Id, as known from accounting), an Event-Timestamp (§3.6) and a
Message-Authenticator (§3.5). Their Request Authenticator is computed like an
Accounting-Request's (RFC 5176 §2.3, RFC 2866 §3): MD5 over the packet with sixteen
zero octets in place of the authenticator, followed by the secret; the
Message-Authenticator is an HMAC-MD5 over the packet with both the authenticator and
its own value zeroed (§3.5), computed first.

Decoding: :func:`decode_response` checks an answer against the request it answers
(code pairing, Identifier, Response Authenticator over the Request Authenticator,
Message-Authenticator when present) and returns a :class:`CoaResponse`. Like every
decoder of the RADIUS package it raises only
:class:`~nhi_nac.radius.errors.RadiusProtocolError`.

The packet layout itself is the RADIUS codec's (:mod:`nhi_nac.radius.codec`); only the
RFC 5176 authenticator rule, which the codec applies to Accounting-Request alone, lives
here.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from nhi_nac.coa.limits import COA_PORT
from nhi_nac.radius.codec import (
    Attr,
    Attribute,
    decode_packet,
    encode_attributes,
    integer,
    vendor_specific,
    verify_response,
)
from nhi_nac.radius.errors import RadiusProtocolError
from nhi_nac.radius.limits import MAX_ATTRIBUTE_VALUE, MAX_PACKET_SIZE, MIN_PACKET_SIZE


class CoaCode(IntEnum):
    """RFC 5176 §2: packet codes of Dynamic Authorization."""

    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


#: RFC 5176 §3.5: the Error-Cause attribute.
ATTR_ERROR_CAUSE = 101
#: Cisco's vendor id and its Cisco-AVPair vendor type.
VENDOR_CISCO = 9
CISCO_AVPAIR = 1
#: The Cisco command that makes the switch re-run authentication on the session.
CISCO_REAUTHENTICATE = b"subscriber:command=reauthenticate"

_ZERO16 = bytes(16)
_MA_HEADER = bytes((Attr.MESSAGE_AUTHENTICATOR, 18))
_ANSWERS = {
    CoaCode.DISCONNECT_REQUEST: (CoaCode.DISCONNECT_ACK, CoaCode.DISCONNECT_NAK),
    CoaCode.COA_REQUEST: (CoaCode.COA_ACK, CoaCode.COA_NAK),
}


class ErrorCause(IntEnum):
    """RFC 5176 §3.5 Error-Cause values."""

    RESIDUAL_SESSION_CONTEXT_REMOVED = 201
    INVALID_EAP_PACKET = 202
    UNSUPPORTED_ATTRIBUTE = 401
    MISSING_ATTRIBUTE = 402
    NAS_IDENTIFICATION_MISMATCH = 403
    INVALID_REQUEST = 404
    UNSUPPORTED_SERVICE = 405
    UNSUPPORTED_EXTENSION = 406
    INVALID_ATTRIBUTE_VALUE = 407
    ADMINISTRATIVELY_PROHIBITED = 501
    REQUEST_NOT_ROUTABLE = 502
    SESSION_CONTEXT_NOT_FOUND = 503
    SESSION_CONTEXT_NOT_REMOVABLE = 504
    OTHER_PROXY_PROCESSING_ERROR = 505
    RESOURCES_UNAVAILABLE = 506
    REQUEST_INITIATED = 507
    MULTIPLE_SESSION_SELECTION_UNSUPPORTED = 508


#: The names RFC 5176 §3.5 (and the IANA registry) give the Error-Cause values.
ERROR_CAUSE_NAMES: dict[int, str] = {
    201: "Residual-Session-Context-Removed",
    202: "Invalid-EAP-Packet-Ignored",
    401: "Unsupported-Attribute",
    402: "Missing-Attribute",
    403: "NAS-Identification-Mismatch",
    404: "Invalid-Request",
    405: "Unsupported-Service",
    406: "Unsupported-Extension",
    407: "Invalid-Attribute-Value",
    501: "Administratively-Prohibited",
    502: "Request-Not-Routable-Proxy",
    503: "Session-Context-Not-Found",
    504: "Session-Context-Not-Removable",
    505: "Other-Proxy-Processing-Error",
    506: "Resources-Unavailable",
    507: "Request-Initiated",
    508: "Multiple-Session-Selection-Unsupported",
}


def error_cause_name(value: int) -> str:
    """The RFC 5176 name of an Error-Cause value, or ``Error-Cause-<n>`` if unassigned."""
    return ERROR_CAUSE_NAMES.get(value, f"Error-Cause-{value}")


class CoaAction(StrEnum):
    """What we ask of the NAS for one session."""

    #: Disconnect-Request: end the session; the device authenticates again (RFC 5176 §3.1).
    DISCONNECT = "disconnect"
    #: CoA-Request with the vendor's reauthenticate command: the port stays up and the
    #: session is authenticated again in place.
    REAUTHENTICATE = "reauthenticate"


#: NAS vendors (the ``vendor`` of a NAS in the inventory) with a reauthenticate command.
REAUTHENTICATE_VENDORS = frozenset({"cisco"})


@dataclass(frozen=True, slots=True)
class SessionIds:
    """RFC 5176 §3: what identifies the NAS and the session, as known from accounting.

    At least one session attribute (Acct-Session-Id, User-Name, Calling-Station-Id) is
    required. NAS-IP-Address / NAS-Identifier are the values the NAS put in its own
    requests; a NAS answers NAS-Identification-Mismatch (403) when they are not its own.
    """

    acct_session_id: str | None = None
    user_name: str | None = None
    calling_station_id: str | None = None
    nas_ip_address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    nas_identifier: str | None = None

    def __post_init__(self) -> None:
        if not (self.acct_session_id or self.user_name or self.calling_station_id):
            raise ValueError("a session needs Acct-Session-Id, User-Name or Calling-Station-Id")


@dataclass(frozen=True, slots=True)
class CoaTarget:
    """One session on one NAS, to be disconnected or reauthenticated.

    ``address`` is where the NAS's Dynamic Authorization Server listens (an IP address
    literal); ``secret`` the shared secret of that NAS; ``vendor`` its dialect
    (``"cisco"`` gets a CoA reauthenticate, any other vendor a Disconnect-Request).
    """

    nas_name: str
    address: str
    secret: bytes = field(repr=False)
    session: SessionIds
    vendor: str = "generic"
    port: int = COA_PORT

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.address)  # a literal: the sender never resolves names
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range")
        if not self.secret:
            raise ValueError("empty shared secret")

    @property
    def default_action(self) -> CoaAction:
        """REAUTHENTICATE for vendors that have the command, DISCONNECT otherwise."""
        if self.vendor.lower() in REAUTHENTICATE_VENDORS:
            return CoaAction.REAUTHENTICATE
        return CoaAction.DISCONNECT


@dataclass(frozen=True, slots=True)
class CoaRequest:
    """An encoded request; retransmissions send ``data`` unchanged (RFC 5080 §2.2.1)."""

    code: CoaCode
    identifier: int
    #: The Request Authenticator, needed to verify the answer.
    authenticator: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class CoaResponse:
    """A verified answer: ACK or NAK, with its Error-Cause if any."""

    code: CoaCode
    identifier: int
    error_cause: int | None
    attributes: tuple[Attribute, ...]

    @property
    def acked(self) -> bool:
        return self.code in (CoaCode.DISCONNECT_ACK, CoaCode.COA_ACK)

    @property
    def error_cause_name(self) -> str | None:
        return None if self.error_cause is None else error_cause_name(self.error_cause)


class CoaOutcome(StrEnum):
    ACK = "ack"
    NAK = "nak"
    #: No valid answer after every retransmission.
    TIMEOUT = "timeout"
    #: We could not send at all (no route, socket error); see ``CoaResult.detail``.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CoaResult:
    """The outcome of one request, as recorded per session."""

    target: CoaTarget
    action: CoaAction
    code: CoaCode
    outcome: CoaOutcome
    #: Transmissions made: 1 + retransmissions.
    attempts: int
    identifier: int
    #: RFC 5176 §3.5 Error-Cause of a NAK (an ACK may carry 201 too), else None.
    error_cause: int | None = None
    #: Seconds from the last transmission to the answer; None without an answer.
    rtt: float | None = None
    #: Seconds from the first transmission to the answer or to giving up.
    elapsed: float = 0.0
    detail: str = ""

    @property
    def error_cause_name(self) -> str | None:
        return None if self.error_cause is None else error_cause_name(self.error_cause)


def _text(attr_type: int, value: str) -> Attribute:
    raw = value.encode("utf-8")
    if not raw or len(raw) > MAX_ATTRIBUTE_VALUE:
        raise ValueError(f"attribute {attr_type}: {len(raw)} octets outside 1..253")
    return (attr_type, raw)


def session_attributes(session: SessionIds) -> list[Attribute]:
    """RFC 5176 §3: NAS identification, then session identification attributes."""
    attrs: list[Attribute] = []
    ip = session.nas_ip_address
    if isinstance(ip, ipaddress.IPv4Address):
        attrs.append((Attr.NAS_IP_ADDRESS, ip.packed))
    elif isinstance(ip, ipaddress.IPv6Address):
        attrs.append((Attr.NAS_IPV6_ADDRESS, ip.packed))
    if session.nas_identifier:
        attrs.append(_text(Attr.NAS_IDENTIFIER, session.nas_identifier))
    if session.user_name:
        attrs.append(_text(Attr.USER_NAME, session.user_name))
    if session.calling_station_id:
        attrs.append(_text(Attr.CALLING_STATION_ID, session.calling_station_id))
    if session.acct_session_id:
        attrs.append(_text(Attr.ACCT_SESSION_ID, session.acct_session_id))
    return attrs


def event_timestamp(now: float) -> Attribute:
    """RFC 5176 §3.6 / RFC 2869 §5.3: Event-Timestamp, UNIX seconds as a 32-bit integer."""
    seconds = int(now)
    if not 0 <= seconds < 2**32:
        raise ValueError(f"Event-Timestamp {seconds} does not fit 32 bits")
    return integer(Attr.EVENT_TIMESTAMP, seconds)


def encode_dynauth_request(
    code: int, identifier: int, attributes: Sequence[Attribute], secret: bytes
) -> CoaRequest:
    """Encode a Disconnect-/CoA-Request with a Message-Authenticator as first attribute.

    RFC 5176 §3.5: the Message-Authenticator is HMAC-MD5 over the packet with the Request
    Authenticator and its own value set to zeros. RFC 5176 §2.3 / RFC 2866 §3: the
    Request Authenticator is then MD5(Code+Identifier+Length+16 zeros+Attributes+Secret),
    over the attributes with the Message-Authenticator filled in.
    """
    if code not in _ANSWERS:
        raise ValueError(f"code {code} is not a Dynamic Authorization request")
    if not 0 <= identifier <= 255:
        raise ValueError(f"identifier {identifier} outside 0..255")
    body = _MA_HEADER + _ZERO16 + encode_attributes(attributes)
    length = MIN_PACKET_SIZE + len(body)
    if length > MAX_PACKET_SIZE:
        raise ValueError(f"request of {length} octets exceeds {MAX_PACKET_SIZE}")
    head = struct.pack("!BBH", code, identifier, length)
    mac = hmac.new(secret, head + _ZERO16 + body, hashlib.md5).digest()
    body = _MA_HEADER + mac + body[18:]
    authenticator = hashlib.md5(head + _ZERO16 + body + secret).digest()  # noqa: S324
    return CoaRequest(CoaCode(code), identifier, authenticator, head + authenticator + body)


def build_request(
    target: CoaTarget,
    identifier: int,
    now: float,
    action: CoaAction | None = None,
) -> CoaRequest:
    """The request for ``target``: a CoA reauthenticate for vendors that have one (or when
    ``action`` asks for it), else a Disconnect-Request. ``now`` is UNIX time."""
    action = action or target.default_action
    attrs = session_attributes(target.session)
    if action is CoaAction.REAUTHENTICATE:
        if target.vendor.lower() != "cisco":
            raise ValueError(f"no reauthenticate command known for vendor {target.vendor!r}")
        attrs.append(vendor_specific(VENDOR_CISCO, CISCO_AVPAIR, CISCO_REAUTHENTICATE))
        code = CoaCode.COA_REQUEST
    else:
        code = CoaCode.DISCONNECT_REQUEST
    attrs.append(event_timestamp(now))
    return encode_dynauth_request(code, identifier, attrs, target.secret)


def decode_error_cause(value: bytes) -> int:
    """RFC 5176 §3.5: Error-Cause is a 32-bit integer."""
    if len(value) != 4:
        raise RadiusProtocolError(f"Error-Cause of {len(value)} octets", "bad_attribute")
    return int.from_bytes(value, "big")


def decode_response(
    data: bytes,
    request: CoaRequest,
    secret: bytes,
    *,
    require_message_authenticator: bool = False,
) -> CoaResponse:
    """Verify ``data`` as the answer to ``request`` and decode it.

    Raises :class:`RadiusProtocolError` (or its subclass RadiusAuthenticationError) for
    anything that is not a well-formed, authentic ACK/NAK to this very request; the
    caller drops such a datagram and keeps waiting.
    """
    packet = decode_packet(data)
    if packet.code not in _ANSWERS[request.code]:
        raise RadiusProtocolError(
            f"code {packet.code} does not answer a {request.code.name}", "unexpected_code"
        )
    if packet.identifier != request.identifier:
        raise RadiusProtocolError(
            f"identifier {packet.identifier} != {request.identifier}", "unexpected_identifier"
        )
    if require_message_authenticator and not packet.has_message_authenticator:
        raise RadiusProtocolError(
            "answer without Message-Authenticator", "no_message_authenticator"
        )
    # Response Authenticator over the Request Authenticator (RFC 5176 §3.3); the
    # Message-Authenticator of an answer is over it too (RFC 5176 §3.5, RFC 3579 §3.2).
    verify_response(data, request.authenticator, secret, request.code)
    causes = packet.get_all(ATTR_ERROR_CAUSE)
    cause = decode_error_cause(causes[0]) if causes else None
    return CoaResponse(CoaCode(packet.code), packet.identifier, cause, packet.attributes)
