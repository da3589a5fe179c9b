"""RADIUS codec: RFC vectors, authenticators, and pyrad as an independent implementation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.errors import RadiusAuthenticationError, RadiusProtocolError

DICT = Dictionary(str(Path(__file__).with_name("dictionary")))
SECRET = b"testing123"

# RFC 2865 §7.1: user "nemo", password "arctangent", secret "xyzzy5461".
RFC_SECRET = b"xyzzy5461"
RFC_REQUEST = bytes.fromhex(
    "01000038 0f403f9473978057bd83d5cb98f4227a"
    "01066e656d6f 02120dbe708d93d413ce3196e43f782a0aee 0406c0a80110 050600000003".replace(" ", "")
)
RFC_ACCEPT = bytes.fromhex(
    "02000026 86fe220e7624ba2a1005f6bf9b55e0b20606 00000001 0f06 00000000 0e06 c0a80103".replace(
        " ", ""
    )
)


def test_rfc2865_7_1_decode_and_password() -> None:
    pkt = codec.decode_packet(RFC_REQUEST)
    assert pkt.code == Code.ACCESS_REQUEST and pkt.identifier == 0
    assert pkt.get(Attr.USER_NAME) == b"nemo"
    assert pkt.get_int(Attr.NAS_PORT) == 3
    hidden = pkt.get(Attr.USER_PASSWORD)
    assert hidden is not None
    assert codec.decode_user_password(hidden, RFC_SECRET, pkt.authenticator) == b"arctangent"
    assert codec.hide_user_password(b"arctangent", RFC_SECRET, pkt.authenticator) == hidden


def test_rfc2865_7_1_response_authenticator() -> None:
    req = codec.decode_packet(RFC_REQUEST)
    attrs = [
        (6, bytes.fromhex("00000001")),
        (15, bytes.fromhex("00000000")),
        (14, bytes.fromhex("c0a80103")),
    ]
    out = codec.encode_response(
        Code.ACCESS_ACCEPT, 0, req.authenticator, attrs, RFC_SECRET, message_authenticator=False
    )
    assert out == RFC_ACCEPT
    codec.verify_response(out, req.authenticator, RFC_SECRET)


def test_long_password_roundtrip() -> None:
    auth = os.urandom(16)
    for pw in (b"", b"x", b"a" * 16, b"b" * 17, b"c" * 128):
        hidden = codec.hide_user_password(pw, SECRET, auth)
        assert len(hidden) % 16 == 0 and len(hidden) >= 16
        assert codec.decode_user_password(hidden, SECRET, auth) == pw


def test_bad_password_length() -> None:
    with pytest.raises(RadiusProtocolError):
        codec.decode_user_password(b"x" * 15, SECRET, bytes(16))


def _pyrad_request(**attrs: object) -> pyrad_packet.AuthPacket:
    req = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=SECRET, dict=DICT)
    for k, v in attrs.items():
        req[k.replace("_", "-")] = v
    req.add_message_authenticator()
    return req


def test_pyrad_request_with_message_authenticator_verifies() -> None:
    req = _pyrad_request(User_Name="aabbccddeeff")
    req["User-Password"] = req.PwCrypt("aabbccddeeff")
    raw = req.RequestPacket()
    pkt = codec.decode_packet(raw)
    assert pkt.has_message_authenticator
    codec.verify_request(pkt, SECRET)
    hidden = pkt.get(Attr.USER_PASSWORD)
    assert hidden is not None
    assert codec.decode_user_password(hidden, SECRET, pkt.authenticator) == b"aabbccddeeff"
    with pytest.raises(RadiusAuthenticationError):
        codec.verify_request(pkt, b"wrong")


def test_message_authenticator_last_is_accepted() -> None:
    """eapol_test puts Message-Authenticator last; it is checked wherever it is."""
    raw = codec.encode_request(Code.ACCESS_REQUEST, 7, [(Attr.USER_NAME, b"u")], SECRET)
    assert raw[-18] == Attr.MESSAGE_AUTHENTICATOR
    codec.verify_request(codec.decode_packet(raw), SECRET)
    tampered = raw[:-1] + bytes((raw[-1] ^ 1,))
    with pytest.raises(RadiusAuthenticationError):
        codec.verify_request(codec.decode_packet(tampered), SECRET)


def test_response_verified_by_pyrad_ma_first() -> None:
    req = _pyrad_request(User_Name="host/x")
    raw_req = req.RequestPacket()
    pkt = codec.decode_packet(raw_req)
    eap = bytes(range(256)) * 2 + b"tail"
    attrs = codec.split_eap_message(eap)
    attrs += codec.vlan_attributes(123)
    attrs.append(codec.integer(Attr.SESSION_TIMEOUT, 600))
    attrs += codec.mppe_key_attributes(bytes(range(64)), SECRET, pkt.authenticator)
    out = codec.encode_response(
        Code.ACCESS_ACCEPT, pkt.identifier, pkt.authenticator, attrs, SECRET
    )
    assert out[20] == Attr.MESSAGE_AUTHENTICATOR  # first attribute
    reply = pyrad_packet.AuthPacket(packet=out, secret=SECRET, dict=DICT)
    assert req.VerifyReply(reply, out, enforce_ma=True)
    assert reply["Tunnel-Type"] == ["VLAN"] or reply["Tunnel-Type"] == [13]
    assert reply["Tunnel-Private-Group-Id"] == ["123"]
    assert reply["Session-Timeout"] == [600]
    # our own decoder: EAP joined, tags
    back = codec.decode_packet(out)
    assert back.eap_message() == eap
    assert [len(v) for t, v in back.attributes if t == Attr.EAP_MESSAGE] == [253, 253, 10]
    tunnel_type = back.get(Attr.TUNNEL_TYPE)
    assert tunnel_type is not None
    assert codec.decode_tagged_integer(tunnel_type) == (1, 13)
    group = back.get(Attr.TUNNEL_PRIVATE_GROUP_ID)
    assert group is not None
    assert codec.decode_tagged_string(group) == (1, b"123")
    # MPPE keys: pyrad's salt decryption (RFC 2548 §2.4.2) recovers MSK halves
    vsas = codec.vendor_attributes(back, codec.VENDOR_MICROSOFT)
    helper = pyrad_packet.Packet(secret=SECRET, dict=DICT)
    helper.request_authenticator = pkt.authenticator
    keys = {t: helper.SaltDecrypt(v) for t, v in vsas}
    assert keys[codec.MS_MPPE_RECV_KEY] == bytes(range(32))
    assert keys[codec.MS_MPPE_SEND_KEY] == bytes(range(32, 64))
    salts = {v[:2] for _, v in vsas}
    assert len(salts) == 2 and all(s[0] & 0x80 for s in salts)


def test_mppe_roundtrip_and_wrong_secret() -> None:
    auth = os.urandom(16)
    msk = os.urandom(64)
    attrs = codec.mppe_key_attributes(msk, SECRET, auth)
    pkt = codec.decode_packet(codec.encode_response(2, 1, auth, attrs, SECRET))
    vsas = dict(codec.vendor_attributes(pkt, codec.VENDOR_MICROSOFT))
    assert codec.mppe_decrypt(vsas[codec.MS_MPPE_RECV_KEY], SECRET, auth) == msk[:32]
    assert codec.mppe_decrypt(vsas[codec.MS_MPPE_SEND_KEY], SECRET, auth) == msk[32:]
    assert len(vsas[codec.MS_MPPE_SEND_KEY]) == 2 + 48  # salt + (1 + 32 padded to 48)


def test_accounting_request_authenticator_pyrad() -> None:
    req = pyrad_packet.AcctPacket(secret=SECRET, dict=DICT)
    req["Acct-Status-Type"] = "Start"
    req["Acct-Session-Id"] = "s1"
    raw = req.RequestPacket()
    pkt = codec.decode_packet(raw)
    codec.verify_request(pkt, SECRET)
    with pytest.raises(RadiusAuthenticationError):
        codec.verify_request(pkt, b"other")
    out = codec.encode_response(
        Code.ACCOUNTING_RESPONSE,
        pkt.identifier,
        pkt.authenticator,
        [],
        SECRET,
        ma_zero_authenticator=True,
    )
    reply = pyrad_packet.AcctPacket(packet=out, secret=SECRET, dict=DICT)
    assert req.VerifyReply(reply, out)


def test_accounting_request_with_message_authenticator() -> None:
    raw = codec.encode_request(Code.ACCOUNTING_REQUEST, 3, [codec.integer(40, 1)], SECRET)
    codec.verify_request(codec.decode_packet(raw), SECRET)


def test_status_server_pyrad() -> None:
    req = pyrad_packet.Packet(code=pyrad_packet.StatusServer, secret=SECRET, dict=DICT)
    req.add_message_authenticator()
    raw = _encode_pyrad(req)
    pkt = codec.decode_packet(raw)
    codec.verify_request(pkt, SECRET)


def _encode_pyrad(req: pyrad_packet.Packet) -> bytes:
    req.authenticator = req.authenticator or os.urandom(16)
    req._refresh_message_authenticator()
    attr = req._PktEncodeAttributes()
    import struct

    header = struct.pack("!BBH", req.code, req.id, 20 + len(attr))
    return bytes(header + req.authenticator + attr)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "short"),
        (b"\x01\x00\x00\x13" + bytes(16), "bad_length"),
        (b"\x01\x00\x00\x30" + bytes(16), "bad_length"),
        (b"\x01\x00\x00\x16" + bytes(16) + b"\x01\x01", "bad_attribute"),
        (b"\x01\x00\x00\x17" + bytes(16) + b"\x01\x05\x00", "bad_attribute"),
        (b"\x01\x00\x00\x18" + bytes(16) + b"\x50\x04\x00\x00", "bad_attribute"),
        (
            b"\x01\x00\x00\x38" + bytes(16) + b"\x50\x12" + bytes(16) + b"\x50\x12" + bytes(16),
            "bad_attribute",
        ),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(RadiusProtocolError) as err:
        codec.decode_packet(data)
    assert err.value.reason == reason


def test_padding_after_length_ignored() -> None:
    raw = codec.encode_request(Code.ACCESS_REQUEST, 1, [(1, b"u")], SECRET)
    pkt = codec.decode_packet(raw + b"junk")
    codec.verify_request(pkt, SECRET)
    assert pkt.raw == raw


def test_split_eap_boundaries() -> None:
    for n, parts in ((1, [1]), (253, [253]), (254, [253, 1]), (506, [253, 253])):
        assert [len(v) for _, v in codec.split_eap_message(bytes(n))] == parts


def test_vlan_bounds() -> None:
    with pytest.raises(ValueError):
        codec.vlan_attributes(0)
    with pytest.raises(ValueError):
        codec.vlan_attributes(4095)
