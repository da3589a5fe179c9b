"""EAP-TLS server paired with an in-memory supplicant: TLS 1.2/1.3, keys, fragmentation."""

from __future__ import annotations

import struct
import time

import pytest
from OpenSSL import SSL

from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.decision import AdmissionPolicy, BackendPolicy
from nhi_nac.radius.directory import MemoryDirectory
from nhi_nac.radius.eap import (
    EapCode,
    EapOutcome,
    EapPacket,
    EapServer,
    EapStep,
    EapType,
    decode_eap,
)
from nhi_nac.radius.eaptls import (
    FLAG_L,
    FLAG_M,
    FLAG_S,
    EapTlsMethod,
    EapTlsServerConfig,
    TlsVersion,
    build_server_context,
)
from nhi_nac.radius.limits import MAX_EAP_TLS_MESSAGE_SIZE, RadiusLimits
from nhi_nac.radius.server import RadiusServer
from tests.radius.conftest import DEVICE_VLAN, SECRET, Pki
from tests.radius.eaptls_peer import EapTlsPeer, Silence, l_fragment, run_over_radius

NOW = time.time()


def make_server(
    directory: MemoryDirectory,
    config: EapTlsServerConfig,
    version: TlsVersion | None = None,
    fragment_size: int = 1024,
) -> RadiusServer:
    if version is not None:
        config = EapTlsServerConfig(
            config.certificate,
            config.private_key,
            config.trust_anchors,
            min_version=version,
            max_version=version,
        )
    return RadiusServer(
        directory,
        tls_context=build_server_context(config),
        limits=RadiusLimits(eap_tls_fragment_size=fragment_size),
    )


@pytest.mark.parametrize("version", [TlsVersion.TLS1_2, TlsVersion.TLS1_3])
@pytest.mark.parametrize("server_frag,peer_frag", [(1024, 1000), (64, 100), (3000, 300)])
def test_accept_keys_and_vlan(
    pki: Pki,
    directory: MemoryDirectory,
    tls_config: EapTlsServerConfig,
    version: TlsVersion,
    server_frag: int,
    peer_frag: int,
) -> None:
    server = make_server(directory, tls_config, version, server_frag)
    peer = EapTlsPeer(pki.ca, pki.good, version, peer_frag)
    result = run_over_radius(server, peer, SECRET, NOW)
    reply = result.reply
    assert reply.code == Code.ACCESS_ACCEPT, server.counters
    eap = reply.eap_message()
    assert eap is not None
    assert decode_eap(eap).code == EapCode.SUCCESS
    # identifiers: +1 per request; Success carries the last Response's identifier
    ids = result.eap_ids
    assert ids[:-1] == [(ids[0] + i) % 256 for i in range(len(ids) - 1)]
    assert ids[-1] == ids[-2]
    # keys equal on both ends, delivered as MS-MPPE keys
    exported = peer.keys()
    vsas = dict(codec.vendor_attributes(reply, codec.VENDOR_MICROSOFT))
    auth = result.request_authenticator
    assert codec.mppe_decrypt(vsas[codec.MS_MPPE_RECV_KEY], SECRET, auth) == exported[:32]
    assert codec.mppe_decrypt(vsas[codec.MS_MPPE_SEND_KEY], SECRET, auth) == exported[32:64]
    assert reply.get(Attr.TUNNEL_PRIVATE_GROUP_ID) == b"\x01" + str(DEVICE_VLAN).encode()
    timeout = reply.get_int(Attr.SESSION_TIMEOUT)
    cert_left = pki.good.cert.not_valid_after_utc.timestamp() - NOW
    assert timeout is not None and 0 < timeout <= cert_left
    if version is TlsVersion.TLS1_3:
        assert peer.app_data == b"\x00"  # RFC 9190 commitment message
    assert server.eap_sessions == 0
    decision = server.counters
    assert decision["accept"] == 1


@pytest.mark.parametrize("version", [TlsVersion.TLS1_2, TlsVersion.TLS1_3])
@pytest.mark.parametrize(
    "which,failure",
    [
        ("revoked", "revoked"),
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("no_client_auth", "no_client_auth_eku"),
        ("no_eku", "no_client_auth_eku"),
        ("unknown", "unknown_identity"),
        ("retired", "identity_retired"),
        ("departed", "owner_departed"),
        ("foreign", "untrusted_chain"),
        ("two_uris", "uri_san_count"),
    ],
)
def test_rejects_with_alert(
    pki: Pki,
    directory: MemoryDirectory,
    tls_config: EapTlsServerConfig,
    version: TlsVersion,
    which: str,
    failure: str,
) -> None:
    server = make_server(directory, tls_config, version)
    peer = EapTlsPeer(pki.ca, getattr(pki, which), version)
    result = run_over_radius(server, peer, SECRET, NOW)
    assert result.reply.code == Code.ACCESS_REJECT
    eap = result.reply.eap_message()
    assert eap is not None and decode_eap(eap).code == EapCode.FAILURE
    assert result.reply.get(Attr.REPLY_MESSAGE) == b"Access denied"
    assert server.counters[f"reject.{failure}"] == 1, server.counters
    assert peer.received_alert  # the supplicant saw a TLS alert before EAP-Failure
    assert codec.vendor_attributes(result.reply, codec.VENDOR_MICROSOFT) == []


# -- the method alone: fragmentation edge cases -----------------------------------------


class Conversation:
    """EapServer + EapTlsMethod without RADIUS, up to the EAP-TLS Start."""

    def __init__(self, config: EapTlsServerConfig, fragment_size: int = 1024) -> None:
        ctx = build_server_context(config)
        self.method: EapTlsMethod | None = None

        def factory(identity: str) -> EapTlsMethod:
            self.method = EapTlsMethod(ctx, lambda leaf, issuers, now: None, fragment_size)
            return self.method

        self.eap = EapServer(factory)
        start = self.send(EapPacket(EapCode.RESPONSE, 5, EapType.IDENTITY, b"device/x"))
        self.last = decode_eap(start.message)
        assert self.last.identifier == 6 and self.last.data == bytes((FLAG_S,))

    def send(self, packet: EapPacket) -> EapStep:
        step = self.eap.receive(packet.encode(), NOW)
        if step.outcome is EapOutcome.CONTINUE:
            self.last = decode_eap(step.message)
        return step

    def tls(self, type_data: bytes, identifier: int | None = None) -> EapStep:
        ident = self.last.identifier if identifier is None else identifier
        return self.send(EapPacket(EapCode.RESPONSE, ident, EapType.TLS, type_data))


@pytest.mark.parametrize(
    "type_data,reason",
    [
        (bytes((FLAG_S,)), "eaptls_peer_start"),
        (b"", "eaptls_malformed"),
        (bytes((FLAG_L,)) + b"\x00\x00", "eaptls_malformed"),
        (l_fragment(MAX_EAP_TLS_MESSAGE_SIZE + 1, b"x" * 10, True), "eaptls_too_long"),
        (l_fragment(5, b"x" * 10, False), "eaptls_overflow"),
        (bytes((FLAG_M,)) + b"x" * 10, "eaptls_missing_length"),
        (l_fragment(100, b"", True), "eaptls_empty_fragment"),
        (b"\x00", "eaptls_unexpected_ack"),
    ],
)
def test_bad_first_fragment(tls_config: EapTlsServerConfig, type_data: bytes, reason: str) -> None:
    conv = Conversation(tls_config)
    step = conv.tls(type_data)
    assert step.outcome is EapOutcome.FAILURE and step.reason == reason
    assert decode_eap(step.message).code == EapCode.FAILURE


def test_fragments_that_do_not_add_up(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    step = conv.tls(l_fragment(100, b"a" * 50, True))
    assert step.outcome is EapOutcome.CONTINUE and conv.last.data == b"\x00"  # our ACK
    step = conv.tls(bytes((0,)) + b"b" * 30)
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eaptls_short"


def test_fragments_overflow(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    conv.tls(l_fragment(60, b"a" * 50, True))
    step = conv.tls(bytes((FLAG_M,)) + b"b" * 30)
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eaptls_overflow"


def test_empty_middle_fragment_with_m(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    conv.tls(l_fragment(60, b"a" * 50, True))
    step = conv.tls(bytes((FLAG_M,)))
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eaptls_empty_fragment"


def test_changed_length(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    conv.tls(l_fragment(60, b"a" * 50, True))
    step = conv.tls(l_fragment(61, b"b" * 10, False))
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eaptls_length_changed"


def test_wrong_identifier_and_nak(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    step = conv.tls(b"\x00", identifier=conv.last.identifier + 1)
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eap_wrong_identifier"
    assert decode_eap(step.message).identifier == conv.last.identifier + 1
    conv = Conversation(tls_config)
    step = conv.send(EapPacket(EapCode.RESPONSE, conv.last.identifier, EapType.NAK, b"\x19"))
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eap_nak"
    conv = Conversation(tls_config)
    step = conv.send(
        EapPacket(
            EapCode.RESPONSE, conv.last.identifier, EapType.MD5_CHALLENGE, b"\x10" + bytes(16)
        )
    )
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eap_wrong_method"


def _client_hello(pki: Pki) -> bytes:
    peer = EapTlsPeer(pki.ca, pki.good, TlsVersion.TLS1_3)
    try:
        peer.conn.do_handshake()
    except SSL.WantReadError:
        pass
    return peer._drain()


def test_server_fragments_wait_for_ack(pki: Pki, tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config, fragment_size=64)
    step = conv.tls(bytes((0,)) + _client_hello(pki))
    assert step.outcome is EapOutcome.CONTINUE
    first = conv.last.data
    assert first[0] == FLAG_L | FLAG_M and len(first) == 5 + 64
    (total,) = struct.unpack("!I", first[1:5])
    received = len(first) - 5
    # data instead of an ACK while we are still sending: failure
    bad = Conversation(tls_config, fragment_size=64)
    bad.tls(bytes((0,)) + _client_hello(pki))
    step = bad.tls(bytes((0,)) + b"\x16\x03\x03")
    assert step.outcome is EapOutcome.FAILURE and step.reason == "eaptls_expected_ack"
    # ACKs walk through the rest; only the last fragment lacks M, none repeats L
    while True:
        conv.tls(b"\x00")
        data = conv.last.data
        assert not data[0] & FLAG_L
        received += len(data) - 1
        if not data[0] & FLAG_M:
            break
    assert received == total


def test_finished_conversation_refuses_input(tls_config: EapTlsServerConfig) -> None:
    conv = Conversation(tls_config)
    conv.tls(bytes((FLAG_S,)))
    with pytest.raises(Exception) as err:
        conv.tls(b"\x00")
    assert "finished" in str(err.value)


@pytest.mark.parametrize("policy", [BackendPolicy.REJECT, BackendPolicy.DROP])
def test_backend_error_mid_eap_fails_closed(
    pki: Pki, directory: MemoryDirectory, tls_config: EapTlsServerConfig, policy: BackendPolicy
) -> None:
    def boom(uri: str) -> None:
        raise RuntimeError("db down")

    directory.identity_by_uri = boom  # type: ignore[method-assign]
    server = RadiusServer(
        directory,
        AdmissionPolicy(on_backend_error=policy),
        tls_context=build_server_context(tls_config),
    )
    peer = EapTlsPeer(pki.ca, pki.good)
    if policy is BackendPolicy.REJECT:
        result = run_over_radius(server, peer, SECRET, NOW)
        assert result.reply.code == Code.ACCESS_REJECT
        assert server.counters["reject.backend_error"] == 1
    else:
        with pytest.raises(Silence):
            run_over_radius(server, peer, SECRET, NOW)
        assert server.counters["drop.backend_error"] == 1
    assert server.counters["accept"] == 0
