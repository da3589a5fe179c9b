"""EAP codec and server state machine (RFC 3748)."""

from __future__ import annotations

import pytest

from nhi_nac.radius.eap import (
    EapCode,
    EapMethod,
    EapOutcome,
    EapPacket,
    EapServer,
    EapState,
    EapType,
    KeyMaterial,
    decode_eap,
)
from nhi_nac.radius.errors import EapProtocolError


class Echo(EapMethod):
    """A toy method: succeeds after two rounds if the peer answers 'ok'."""

    method_type = 99

    def __init__(self) -> None:
        self.rounds = 0
        self.ok = True

    def initial_request(self, now: float) -> bytes:
        return b"hello"

    def process_response(self, type_data: bytes, now: float) -> bytes | None:
        self.rounds += 1
        self.ok = self.ok and type_data == b"ok"
        return b"again" if self.rounds < 2 else None

    def is_success(self) -> bool:
        return self.ok

    def key_material(self) -> KeyMaterial | None:
        return KeyMaterial(bytes(64), bytes(64)) if self.ok else None

    @property
    def failure_reason(self) -> str | None:
        return None if self.ok else "echo_failed"


def resp(ident: int, typ: int, data: bytes) -> bytes:
    return EapPacket(EapCode.RESPONSE, ident, typ, data).encode()


def test_codec_roundtrip_and_padding() -> None:
    pkt = EapPacket(EapCode.REQUEST, 9, EapType.TLS, b"\x20")
    assert decode_eap(pkt.encode()) == pkt
    assert decode_eap(pkt.encode() + b"pad") == pkt
    assert decode_eap(b"\x03\x05\x00\x04") == EapPacket(EapCode.SUCCESS, 5)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x01\x00",
        b"\x01\x01\x00\x03",
        b"\x01\x01\x00\x09x",
        b"\x05\x01\x00\x05\x01",
        b"\x03\x01\x00\x05\x00",
        b"\x02\x01\x00\x04",
    ],
)
def test_codec_rejects(data: bytes) -> None:
    with pytest.raises(EapProtocolError):
        decode_eap(data)


def test_identifiers_increase_and_success_echoes_last_response() -> None:
    server = EapServer(lambda identity: Echo())
    step = server.receive(resp(255, EapType.IDENTITY, b"me"), 0)
    assert server.identity == "me"
    req = decode_eap(step.message)
    assert req.identifier == 0 and req.data == b"hello"  # 255 + 1 wraps
    step = server.receive(resp(0, 99, b"ok"), 0)
    assert decode_eap(step.message).identifier == 1
    step = server.receive(resp(1, 99, b"ok"), 0)
    assert step.outcome is EapOutcome.SUCCESS
    assert decode_eap(step.message) == EapPacket(EapCode.SUCCESS, 1)
    with pytest.raises(EapProtocolError):
        server.receive(resp(1, 99, b"ok"), 0)


def test_method_failure_gives_failure() -> None:
    server = EapServer(lambda identity: Echo())
    server.receive(resp(1, EapType.IDENTITY, b"me"), 0)
    server.receive(resp(2, 99, b"no"), 0)
    step = server.receive(resp(3, 99, b"ok"), 0)
    assert step.outcome is EapOutcome.FAILURE and step.reason == "echo_failed"
    assert decode_eap(step.message) == EapPacket(EapCode.FAILURE, 3)
    assert server.state is EapState.FAILURE


@pytest.mark.parametrize(
    "message,reason",
    [
        (resp(2, EapType.NAK, b"\x04"), "eap_nak"),
        (resp(2, 4, b"x"), "eap_wrong_method"),
        (resp(3, 99, b"ok"), "eap_wrong_identifier"),
        (EapPacket(EapCode.REQUEST, 2, 99, b"").encode(), "eap_not_response"),
    ],
)
def test_illegal_inputs_fail(message: bytes, reason: str) -> None:
    server = EapServer(lambda identity: Echo())
    server.receive(resp(1, EapType.IDENTITY, b"me"), 0)
    step = server.receive(message, 0)
    assert step.outcome is EapOutcome.FAILURE and step.reason == reason


def test_first_message_must_be_identity() -> None:
    server = EapServer(lambda identity: Echo())
    step = server.receive(resp(1, 99, b"ok"), 0)
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eap_no_identity"
