"""EAP (RFC 3748): packet codec, the method interface, and the server state machine.

Theory of operation
-------------------
One :class:`EapServer` per conversation (per RADIUS State). It knows nothing of
RADIUS: it takes EAP packets and returns EAP packets. In the RADIUS pass-through
model (RFC 3579 §2.1) the NAS asks the peer for its identity, so the first packet the
server sees is an EAP-Response/Identity.

States::

    AWAIT_IDENTITY --Response/Identity--> METHOD --method done, success--> SUCCESS
                                            |  \\--method done, failure--> FAILURE
                                            \\--Nak / other type / bad id--> FAILURE

* Every EAP-Request we send has identifier = previous + 1 (mod 256); a supplicant
  that sees a repeated identifier takes the request for a retransmission and loops.
* A Response must carry the identifier of the outstanding Request; anything else in
  METHOD state (wrong identifier, a Nak, a different method type, an unparsable
  method payload) ends the conversation with EAP-Failure. RADIUS-level retransmissions
  never reach here: the duplicate cache answers them.
* EAP-Success / EAP-Failure carry the identifier of the last Response (RFC 3748 §4.2).
* SUCCESS and FAILURE are terminal; any further input is an error.

Methods implement :class:`EapMethod` (hostapd's ``struct eap_method`` shape): the first
request, processing a response into the next request or completion, success, and key
material. EAP-TLS (:mod:`nhi_nac.radius.eaptls`) is one; a new method is a new class.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from nhi_nac.radius.errors import EapProtocolError
from nhi_nac.radius.limits import MAX_EAP_PACKET_SIZE, MAX_EAP_ROUNDS


class EapCode(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(IntEnum):
    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4
    TLS = 13
    EXPANDED = 254


_HEAD = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class EapPacket:
    """One EAP packet. ``type`` is None for Success/Failure; ``data`` is the type-data."""

    code: int
    identifier: int
    type: int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        if self.type is None:
            return _HEAD.pack(self.code, self.identifier, 4)
        return (
            _HEAD.pack(self.code, self.identifier, 5 + len(self.data))
            + bytes((self.type,))
            + self.data
        )


def decode_eap(data: bytes) -> EapPacket:
    """Decode an EAP packet (RFC 3748 §4). Octets beyond Length are padding and ignored."""
    n = len(data)
    if n < 4:
        raise EapProtocolError(f"EAP packet of {n} octets")
    code, identifier, length = _HEAD.unpack_from(data)
    if length < 4 or length > n or length > MAX_EAP_PACKET_SIZE:
        raise EapProtocolError(f"bad EAP length {length} (have {n})")
    if code in (EapCode.SUCCESS, EapCode.FAILURE):
        if length != 4:
            raise EapProtocolError("EAP Success/Failure with data")
        return EapPacket(code, identifier)
    if code not in (EapCode.REQUEST, EapCode.RESPONSE):
        raise EapProtocolError(f"unknown EAP code {code}")
    if length < 5:
        raise EapProtocolError("EAP Request/Response without a type")
    return EapPacket(code, identifier, data[4], bytes(data[5:length]))


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """RFC 5247 keys exported by a key-generating method."""

    msk: bytes
    emsk: bytes


class EapMethod(abc.ABC):
    """One EAP authentication method, server side (hostapd ``struct eap_method``)."""

    method_type: int

    @abc.abstractmethod
    def initial_request(self, now: float) -> bytes:
        """Type-data of the first EAP-Request of the method (e.g. EAP-TLS Start)."""

    @abc.abstractmethod
    def process_response(self, type_data: bytes, now: float) -> bytes | None:
        """Consume one Response's type-data; return the next Request's type-data, or
        None when the method is done. Malformed input raises EapProtocolError."""

    @abc.abstractmethod
    def is_success(self) -> bool:
        """After the method is done: did the peer authenticate?"""

    @abc.abstractmethod
    def key_material(self) -> KeyMaterial | None:
        """MSK/EMSK after a successful, key-generating method."""

    @property
    @abc.abstractmethod
    def failure_reason(self) -> str | None:
        """Short code of why the method failed, once it has."""


class EapState(Enum):
    AWAIT_IDENTITY = "await-identity"
    METHOD = "method"
    SUCCESS = "success"
    FAILURE = "failure"


class EapOutcome(Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class EapStep:
    """What :meth:`EapServer.receive` produced: the EAP packet to send and where we are."""

    message: bytes
    outcome: EapOutcome
    reason: str | None = None


MethodFactory = Callable[[str], EapMethod]


class EapServer:
    """The EAP authenticator state machine for one conversation."""

    def __init__(self, method_factory: MethodFactory) -> None:
        self._method_factory = method_factory
        self.state = EapState.AWAIT_IDENTITY
        self.identity: str | None = None
        self.method: EapMethod | None = None
        self._request_id = 0
        self._rounds = 0
        self.failure_reason: str | None = None

    def receive(self, message: bytes, now: float) -> EapStep:
        """Process one EAP packet from the peer. A packet that cannot even be parsed
        raises EapProtocolError (the caller ends the conversation)."""
        if self.state in (EapState.SUCCESS, EapState.FAILURE):
            raise EapProtocolError("EAP conversation already finished", "eap_finished")
        packet = decode_eap(message)
        if packet.code != EapCode.RESPONSE:
            return self._fail(packet.identifier, "eap_not_response")
        self._rounds += 1
        if self._rounds > MAX_EAP_ROUNDS:
            return self._fail(packet.identifier, "eap_too_many_rounds")
        if self.state is EapState.AWAIT_IDENTITY:
            return self._on_identity(packet, now)
        return self._on_method_response(packet, now)

    def _on_identity(self, packet: EapPacket, now: float) -> EapStep:
        if packet.type != EapType.IDENTITY:
            return self._fail(packet.identifier, "eap_no_identity")
        self.identity = packet.data.decode("utf-8", "replace")
        self.method = self._method_factory(self.identity)
        self.state = EapState.METHOD
        self._request_id = packet.identifier
        return self._request(self.method.initial_request(now))

    def _on_method_response(self, packet: EapPacket, now: float) -> EapStep:
        method = self.method
        assert method is not None
        if packet.identifier != self._request_id:
            return self._fail(packet.identifier, "eap_wrong_identifier")
        if packet.type == EapType.NAK:
            return self._fail(packet.identifier, "eap_nak")
        if packet.type != method.method_type:
            return self._fail(packet.identifier, "eap_wrong_method")
        try:
            next_data = method.process_response(packet.data, now)
        except EapProtocolError as exc:
            return self._fail(packet.identifier, exc.reason)
        if next_data is not None:
            return self._request(next_data)
        if method.is_success():
            self.state = EapState.SUCCESS
            return EapStep(
                EapPacket(EapCode.SUCCESS, packet.identifier).encode(), EapOutcome.SUCCESS
            )
        return self._fail(packet.identifier, method.failure_reason or "eap_method_failed")

    def _request(self, type_data: bytes) -> EapStep:
        assert self.method is not None
        self._request_id = (self._request_id + 1) % 256
        packet = EapPacket(EapCode.REQUEST, self._request_id, self.method.method_type, type_data)
        return EapStep(packet.encode(), EapOutcome.CONTINUE)

    def _fail(self, identifier: int, reason: str) -> EapStep:
        self.state = EapState.FAILURE
        self.failure_reason = reason
        return EapStep(EapPacket(EapCode.FAILURE, identifier).encode(), EapOutcome.FAILURE, reason)

    def fail(self, identifier: int, reason: str) -> EapStep:
        """End the conversation from outside (e.g. the admission decision rejected)."""
        return self._fail(identifier, reason)
