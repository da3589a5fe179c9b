"""RFC 5176 message encoding and answer verification, cross-checked with pyrad."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from nhi_nac.coa.messages import (
    ATTR_ERROR_CAUSE,
    CISCO_REAUTHENTICATE,
    ERROR_CAUSE_NAMES,
    CoaAction,
    CoaCode,
    CoaRequest,
    CoaTarget,
    ErrorCause,
    SessionIds,
    build_request,
    decode_response,
    encode_dynauth_request,
    error_cause_name,
)
from nhi_nac.radius.codec import Attr, decode_packet, encode_response, vendor_attributes
from nhi_nac.radius.errors import RadiusAuthenticationError, RadiusProtocolError

SECRET = b"coa-secret"
NOW = 1_700_000_000.7
DICT = Dictionary(str(Path(__file__).with_name("dictionary")))

SESSION = SessionIds(
    acct_session_id="5F1E2D3C4B5A6978",
    user_name="device/printer-7",
    calling_station_id="02-00-00-00-00-01",
    nas_ip_address=ipaddress.ip_address("192.0.2.10"),
    nas_identifier="sw-lab-1",
)


def target(vendor: str = "generic", session: SessionIds = SESSION) -> CoaTarget:
    return CoaTarget("sw-lab-1", "192.0.2.10", SECRET, session, vendor=vendor)


def pyrad_request(code: int, identifier: int, cisco: bool) -> bytes:
    """The same request built by pyrad, attribute by attribute."""
    pk = pyrad_packet.CoAPacket(code=code, id=identifier, secret=SECRET, dict=DICT)
    pk.add_message_authenticator()
    pk["NAS-IP-Address"] = "192.0.2.10"
    pk["NAS-Identifier"] = "sw-lab-1"
    pk["User-Name"] = "device/printer-7"
    pk["Calling-Station-Id"] = "02-00-00-00-00-01"
    pk["Acct-Session-Id"] = "5F1E2D3C4B5A6978"
    if cisco:
        pk["Cisco-AVPair"] = "subscriber:command=reauthenticate"
    pk["Event-Timestamp"] = int(NOW)
    return bytes(pk.RequestPacket())


def test_disconnect_request_matches_pyrad_byte_for_byte() -> None:
    req = build_request(target(), 33, NOW)
    assert req.code is CoaCode.DISCONNECT_REQUEST
    assert req.data == pyrad_request(40, 33, cisco=False)
    assert req.authenticator == req.data[4:20]


def test_cisco_gets_coa_reauthenticate_matching_pyrad() -> None:
    t = target("Cisco")
    assert t.default_action is CoaAction.REAUTHENTICATE
    req = build_request(t, 200, NOW)
    assert req.code is CoaCode.COA_REQUEST
    assert req.data == pyrad_request(43, 200, cisco=True)
    pkt = decode_packet(req.data)
    assert vendor_attributes(pkt, 9) == [(1, CISCO_REAUTHENTICATE)]
    # a Cisco NAS can still be told to disconnect
    assert build_request(t, 1, NOW, CoaAction.DISCONNECT).code is CoaCode.DISCONNECT_REQUEST


def test_reauthenticate_refused_for_unknown_vendor() -> None:
    with pytest.raises(ValueError, match="no reauthenticate"):
        build_request(target("aruba"), 1, NOW, CoaAction.REAUTHENTICATE)


def test_request_authenticators_by_hand_rfc5176() -> None:
    """RFC 5176 §2.3/§3.5 computed independently of both implementations."""
    req = build_request(target(), 9, NOW)
    raw = req.data
    pkt = decode_packet(raw)
    # Message-Authenticator first (Blast-RADIUS habit), Event-Timestamp last (§3.6).
    assert pkt.attributes[0][0] == Attr.MESSAGE_AUTHENTICATOR
    assert pkt.attributes[-1] == (Attr.EVENT_TIMESTAMP, struct.pack("!I", int(NOW)))
    assert pkt.get(Attr.NAS_IP_ADDRESS) == bytes([192, 0, 2, 10])
    off = pkt.message_authenticator_offset
    assert off == 22
    zeroed = raw[:4] + bytes(16) + raw[20:off] + bytes(16) + raw[off + 16 :]
    assert hmac.new(SECRET, zeroed, "md5").digest() == raw[off : off + 16]
    assert hashlib.md5(raw[:4] + bytes(16) + raw[20:] + SECRET).digest() == raw[4:20]
    # and pyrad, as a NAS, accepts it
    got = pyrad_packet.CoAPacket(packet=raw, secret=SECRET, dict=DICT)
    assert got.VerifyCoARequest()
    assert got.verify_message_authenticator()


def test_wrong_secret_does_not_verify_in_pyrad() -> None:
    raw = build_request(target(), 9, NOW).data
    got = pyrad_packet.CoAPacket(packet=raw, secret=b"other", dict=DICT)
    assert not got.VerifyCoARequest()


def test_session_identification_subsets_and_ipv6() -> None:
    only_mac = SessionIds(calling_station_id="aa-bb-cc-dd-ee-ff")
    pkt = decode_packet(build_request(target(session=only_mac), 1, NOW).data)
    types = [t for t, _ in pkt.attributes]
    assert types == [Attr.MESSAGE_AUTHENTICATOR, Attr.CALLING_STATION_ID, Attr.EVENT_TIMESTAMP]
    v6 = SessionIds(acct_session_id="1", nas_ip_address=ipaddress.ip_address("2001:db8::1"))
    pkt = decode_packet(build_request(target(session=v6), 1, NOW).data)
    assert pkt.get(Attr.NAS_IPV6_ADDRESS) == ipaddress.ip_address("2001:db8::1").packed
    with pytest.raises(ValueError, match="session needs"):
        SessionIds(nas_identifier="sw")
    with pytest.raises(ValueError):
        CoaTarget("x", "sw1.example", SECRET, SESSION)  # names are not resolved
    with pytest.raises(ValueError):
        encode_dynauth_request(4, 1, [], SECRET)


def _answer(
    req: CoaRequest, code: int, cause: int | None = None, *, ma: bool = True, ident: int = -1
) -> bytes:
    attrs = [] if cause is None else [(ATTR_ERROR_CAUSE, struct.pack("!I", cause))]
    identifier = req.identifier if ident < 0 else ident
    return encode_response(
        code, identifier, req.authenticator, attrs, SECRET, message_authenticator=ma
    )


def test_decode_ack_and_nak_with_error_cause() -> None:
    req = build_request(target(), 5, NOW)
    ack = decode_response(_answer(req, 41), req, SECRET, require_message_authenticator=True)
    assert ack.acked and ack.error_cause is None and ack.code is CoaCode.DISCONNECT_ACK
    nak = decode_response(_answer(req, 42, 503), req, SECRET)
    assert not nak.acked
    assert nak.error_cause == ErrorCause.SESSION_CONTEXT_NOT_FOUND
    assert nak.error_cause_name == "Session-Context-Not-Found"


def test_decode_pyrad_built_nak() -> None:
    """A NAK built by pyrad (a second implementation) for our request."""
    req = build_request(target("cisco"), 77, NOW)
    received = pyrad_packet.CoAPacket(packet=req.data, secret=SECRET, dict=DICT)
    reply = received.CreateReply()
    reply.code = pyrad_packet.CoANAK
    reply["Error-Cause"] = 404
    reply.add_message_authenticator()
    nak = decode_response(reply.ReplyPacket(), req, SECRET, require_message_authenticator=True)
    assert nak.code is CoaCode.COA_NAK and nak.error_cause_name == "Invalid-Request"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: _answer(r, 44), "unexpected_code"),  # a CoA-ACK to a Disconnect
        (lambda r: _answer(r, 2), "unexpected_code"),
        (lambda r: _answer(r, 41, ident=(r.identifier + 1) % 256), "unexpected_identifier"),
        (lambda r: _answer(r, 41, ma=False), "no_message_authenticator"),
        (lambda r: _answer(r, 42, 503)[:-1] + b"\x00", "bad_authenticator"),
        (lambda r: _answer(r, 41)[:-8], "bad_length"),
    ],
)
def test_decode_rejects(mutate: object, reason: str) -> None:
    req = build_request(target(), 5, NOW)
    data = mutate(req)  # type: ignore[operator]
    with pytest.raises(RadiusProtocolError) as info:
        decode_response(data, req, SECRET, require_message_authenticator=True)
    assert info.value.reason == reason


def test_wrong_secret_answer_is_authentication_error() -> None:
    req = build_request(target(), 5, NOW)
    data = encode_response(41, 5, req.authenticator, [], b"wrong")
    with pytest.raises(RadiusAuthenticationError):
        decode_response(data, req, SECRET)


def test_error_cause_wrong_length() -> None:
    req = build_request(target(), 5, NOW)
    data = encode_response(42, 5, req.authenticator, [(ATTR_ERROR_CAUSE, b"\x01\xf7")], SECRET)
    with pytest.raises(RadiusProtocolError, match="Error-Cause"):
        decode_response(data, req, SECRET)


def test_error_cause_names_cover_rfc5176() -> None:
    assert set(ERROR_CAUSE_NAMES) == {c.value for c in ErrorCause}
    assert error_cause_name(201) == "Residual-Session-Context-Removed"
    assert error_cause_name(403) == "NAS-Identification-Mismatch"
    assert error_cause_name(508) == "Multiple-Session-Selection-Unsupported"
    assert error_cause_name(999) == "Error-Cause-999"


REQ = build_request(target(), 5, NOW)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda code, attrs, cut: _answer_with(code, attrs)[: max(20, cut)],
            st.sampled_from([41, 42, 43, 44, 45]),
            st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=12)), max_size=5),
            st.integers(0, 200),
        ),
    ),
    st.booleans(),
)
def test_decode_response_raises_only_protocol_error(data: bytes, require_ma: bool) -> None:
    try:
        resp = decode_response(data, REQ, SECRET, require_message_authenticator=require_ma)
    except RadiusProtocolError:
        return
    assert resp.identifier == REQ.identifier
    _ = resp.error_cause_name


def _answer_with(code: int, attrs: list[tuple[int, bytes]]) -> bytes:
    safe = [(t, v) for t, v in attrs if t != Attr.MESSAGE_AUTHENTICATOR]
    return encode_response(code, REQ.identifier, REQ.authenticator, safe, SECRET)
