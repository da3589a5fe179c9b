"""The sans-I/O engine: NAS lookup, hardening, duplicates, MAB, accounting, Status-Server."""

from __future__ import annotations

import os
import time

import pytest

from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.decision import AdmissionPolicy, BackendPolicy, Verdict
from nhi_nac.radius.directory import AcctStatus, MemoryDirectory
from nhi_nac.radius.eap import EapCode, EapPacket, EapType
from nhi_nac.radius.limits import RadiusLimits
from nhi_nac.radius.server import RadiusServer, Service
from tests.radius.conftest import MAB_MAC, MAB_VLAN, QUARANTINE_VLAN, SECRET

NAS = ("127.0.0.1", 40000)
NOW = time.time()


def mab_request(
    user: str,
    password: str | None = None,
    *,
    secret: bytes = SECRET,
    ma: bool = True,
    extra: list[codec.Attribute] | None = None,
    ident: int = 1,
) -> bytes:
    auth = os.urandom(16)
    attrs: list[codec.Attribute] = [(Attr.USER_NAME, user.encode())]
    pw = user if password is None else password
    attrs.append((Attr.USER_PASSWORD, codec.hide_user_password(pw.encode(), secret, auth)))
    attrs.append((Attr.CALLING_STATION_ID, user.encode()))
    attrs.append(codec.integer(Attr.NAS_PORT, 7))
    attrs += extra or []
    return codec.encode_request(
        Code.ACCESS_REQUEST, ident, attrs, secret, authenticator=auth, message_authenticator=ma
    )


def reply_of(
    server: RadiusServer, data: bytes, service: Service = Service.AUTH, addr: tuple[str, int] = NAS
) -> codec.RadiusPacket | None:
    out = server.receive(data, addr, service, NOW)
    if not out.datagrams:
        return None
    (dgram,) = out.datagrams
    req = codec.decode_packet(data)
    codec.verify_response(dgram.data, req.authenticator, SECRET, req.code)
    assert dgram.data[20] == Attr.MESSAGE_AUTHENTICATOR
    return codec.decode_packet(dgram.data)


@pytest.fixture
def server(directory: MemoryDirectory) -> RadiusServer:
    return RadiusServer(directory)


@pytest.mark.parametrize(
    "notation",
    [
        "aa:bb:cc:dd:ee:ff",
        "AA-BB-CC-DD-EE-FF",
        "aabb.ccdd.eeff",
        "aabbccddeeff",
        "AABBCCDDEEFF",
    ],
)
def test_mab_accept_each_notation(server: RadiusServer, notation: str) -> None:
    reply = reply_of(server, mab_request(notation))
    assert reply is not None and reply.code == Code.ACCESS_ACCEPT
    group = reply.get(Attr.TUNNEL_PRIVATE_GROUP_ID)
    assert group is not None and codec.decode_tagged_string(group)[1] == str(MAB_VLAN).encode()
    assert reply.get(Attr.TUNNEL_TYPE) is not None
    assert reply.get(Attr.TUNNEL_MEDIUM_TYPE) is not None


def test_mab_password_in_other_notation_ok_wrong_rejected(server: RadiusServer) -> None:
    reply = reply_of(server, mab_request("aabbccddeeff", "AA:BB:CC:DD:EE:FF"))
    assert reply is not None and reply.code == Code.ACCESS_ACCEPT
    reply = reply_of(server, mab_request("aabbccddeeff", "secret"))
    assert reply is not None and reply.code == Code.ACCESS_REJECT
    assert reply.get(Attr.REPLY_MESSAGE) == b"Access denied"
    assert server.counters["reject.bad_password"] == 1


def test_mab_not_allowed(server: RadiusServer) -> None:
    reply = reply_of(server, mab_request("00:11:22:33:44:55"))
    assert reply is not None and reply.code == Code.ACCESS_REJECT
    assert server.counters["reject.mab_not_allowed"] == 1


def test_unknown_mac_reject_and_sighting(server: RadiusServer) -> None:
    out = server.receive(mab_request("de:ad:be:ef:00:01"), NAS, Service.AUTH, NOW)
    assert out.decision is not None and out.decision.verdict is Verdict.REJECT
    assert out.decision.unmanaged is not None
    assert out.decision.unmanaged.mac == "de:ad:be:ef:00:01"
    assert out.decision.unmanaged.nas_port == "7"


def test_unknown_mac_quarantine(directory: MemoryDirectory) -> None:
    server = RadiusServer(directory, AdmissionPolicy(unknown_mac_vlan=QUARANTINE_VLAN))
    reply = reply_of(server, mab_request("de:ad:be:ef:00:01"))
    assert reply is not None and reply.code == Code.ACCESS_ACCEPT
    assert reply.get(Attr.TUNNEL_PRIVATE_GROUP_ID) == b"\x01" + str(QUARANTINE_VLAN).encode()


def test_drops(server: RadiusServer) -> None:
    assert reply_of(server, mab_request(MAB_MAC, ma=False)) is None
    assert reply_of(server, mab_request(MAB_MAC, secret=b"wrong")) is None
    assert reply_of(server, mab_request(MAB_MAC), addr=("198.51.100.1", 1)) is None
    assert reply_of(server, b"\x01\x02") is None
    assert reply_of(server, mab_request(MAB_MAC), service=Service.ACCT) is None
    assert server.counters["drop.missing_message_authenticator"] == 1
    assert server.counters["drop.bad_message_authenticator"] == 1
    assert server.counters["drop.unknown_nas"] == 1
    assert server.counters["drop.short"] == 1
    assert server.counters["drop.unexpected_code"] == 1


def test_relaxed_nas_and_proxy_state(server: RadiusServer) -> None:
    relaxed = ("192.0.2.7", 1812)
    reply = reply_of(server, mab_request(MAB_MAC, ma=False), addr=relaxed)
    assert reply is not None and reply.code == Code.ACCESS_ACCEPT
    with_ps = mab_request(MAB_MAC, ma=False, extra=[(Attr.PROXY_STATE, b"p1")])
    assert reply_of(server, with_ps, addr=relaxed) is None
    assert server.counters["drop.proxy_state_without_message_authenticator"] == 1
    reply = reply_of(
        server, mab_request(MAB_MAC, extra=[(Attr.PROXY_STATE, b"p1"), (Attr.PROXY_STATE, b"p2")])
    )
    assert reply is not None and reply.get_all(Attr.PROXY_STATE) == [b"p1", b"p2"]


def test_duplicate_gets_same_bytes_without_work(
    server: RadiusServer, directory: MemoryDirectory
) -> None:
    data = mab_request(MAB_MAC)
    first = server.receive(data, NAS, Service.AUTH, NOW)
    second = server.receive(data, NAS, Service.AUTH, NOW + 1)
    assert first.datagrams[0].data == second.datagrams[0].data
    assert first.decision is not None and second.decision is None
    assert server.counters["duplicate.replayed"] == 1
    # after the cache age it is new work again
    third = server.receive(data, NAS, Service.AUTH, NOW + 60)
    assert third.decision is not None


def test_invalid_packet_never_touches_cache(server: RadiusServer) -> None:
    good = mab_request(MAB_MAC, ident=9)
    forged = bytearray(good)
    forged[-1] ^= 1  # breaks the Message-Authenticator, same id/authenticator
    assert not server.receive(bytes(forged), NAS, Service.AUTH, NOW).datagrams
    assert server.receive(good, NAS, Service.AUTH, NOW).decision is not None


def test_backend_error_fails_closed(directory: MemoryDirectory) -> None:
    def boom(mac: str) -> None:
        raise RuntimeError("db down")

    directory.identity_by_mac = boom  # type: ignore[method-assign]
    rejecting = RadiusServer(directory)
    reply = reply_of(rejecting, mab_request(MAB_MAC))
    assert reply is not None and reply.code == Code.ACCESS_REJECT
    dropping = RadiusServer(directory, AdmissionPolicy(on_backend_error=BackendPolicy.DROP))
    assert reply_of(dropping, mab_request(MAB_MAC)) is None
    assert dropping.counters["drop.backend_error"] == 1


def test_status_server(server: RadiusServer) -> None:
    data = codec.encode_request(Code.STATUS_SERVER, 5, [], SECRET)
    reply = reply_of(server, data)
    assert reply is not None and reply.code == Code.ACCESS_ACCEPT
    reply = reply_of(server, data, service=Service.ACCT)
    assert reply is not None and reply.code == Code.ACCOUNTING_RESPONSE
    no_ma = codec.encode_request(Code.STATUS_SERVER, 6, [], SECRET, message_authenticator=False)
    assert reply_of(server, no_ma) is None


def acct(status: int, session: str = "s1", ident: int = 3) -> bytes:
    attrs = [
        codec.integer(Attr.ACCT_STATUS_TYPE, status),
        (Attr.ACCT_SESSION_ID, session.encode()),
        (Attr.CALLING_STATION_ID, b"AA-BB-CC-DD-EE-FF"),
        codec.integer(Attr.ACCT_INPUT_OCTETS, 5),
        codec.integer(Attr.ACCT_INPUT_GIGAWORDS, 1),
    ]
    return codec.encode_request(
        Code.ACCOUNTING_REQUEST, ident, attrs, SECRET, message_authenticator=False
    )


def test_accounting_reply_only_after_stored(server: RadiusServer) -> None:
    reply_of(server, mab_request(MAB_MAC))  # admitted: accounting learns identity and VLAN
    data = acct(1)
    out = server.receive(data, NAS, Service.ACCT, NOW)
    assert not out.datagrams and out.accounting is not None
    rec = out.accounting.record
    assert rec.status is AcctStatus.START and rec.mac == MAB_MAC and rec.vlan == MAB_VLAN
    assert rec.identity is not None and str(rec.identity) == "device/printer"
    assert rec.input_octets == 5 + (1 << 32)
    again = server.receive(data, NAS, Service.ACCT, NOW)
    assert again.dropped == "duplicate_in_progress"
    done = server.accounting_stored(out.accounting, NOW)
    codec.verify_response(
        done.datagrams[0].data,
        codec.decode_packet(data).authenticator,
        SECRET,
        Code.ACCOUNTING_REQUEST,
    )
    replay = server.receive(data, NAS, Service.ACCT, NOW)
    assert replay.datagrams[0].data == done.datagrams[0].data


def test_accounting_store_failure_allows_retry(server: RadiusServer) -> None:
    data = acct(2)
    out = server.receive(data, NAS, Service.ACCT, NOW)
    assert out.accounting is not None
    server.accounting_failed(out.accounting)
    assert server.receive(data, NAS, Service.ACCT, NOW).accounting is not None


def test_accounting_bad_authenticator_dropped(server: RadiusServer) -> None:
    data = bytearray(acct(1))
    data[-1] ^= 1
    assert server.receive(bytes(data), NAS, Service.ACCT, NOW).dropped == "bad_authenticator"


def eap_identity(ident: int = 1, state: bytes | None = None, eap_id: int = 0) -> bytes:
    eap = EapPacket(EapCode.RESPONSE, eap_id, EapType.IDENTITY, b"device/x").encode()
    attrs = codec.split_eap_message(eap)
    if state is not None:
        attrs.append((Attr.STATE, state))
    return codec.encode_request(Code.ACCESS_REQUEST, ident, attrs, SECRET)


def test_eap_without_tls_config_fails_cleanly(server: RadiusServer) -> None:
    reply = reply_of(server, eap_identity())
    assert reply is not None and reply.code == Code.ACCESS_REJECT
    assert reply.eap_message() == EapPacket(EapCode.FAILURE, 0).encode()


def test_eap_session_caps(directory: MemoryDirectory, tls_config: object) -> None:
    from nhi_nac.radius.eaptls import EapTlsServerConfig, build_server_context

    assert isinstance(tls_config, EapTlsServerConfig)
    limits = RadiusLimits(max_eap_sessions=3, max_eap_sessions_per_nas=2, eap_session_timeout=5)
    server = RadiusServer(directory, tls_context=build_server_context(tls_config), limits=limits)
    for i in range(2):
        reply = reply_of(server, eap_identity(ident=i))
        assert reply is not None and reply.code == Code.ACCESS_CHALLENGE
    assert reply_of(server, eap_identity(ident=3)) is None
    assert server.counters["drop.eap_sessions_full"] == 1
    assert server.eap_sessions == 2
    server.expire(NOW + 10)
    assert server.eap_sessions == 0
    # a State we never issued (or that expired) is rejected with EAP-Failure
    reply = reply_of(server, eap_identity(ident=4, state=os.urandom(16), eap_id=7))
    assert reply is not None and reply.code == Code.ACCESS_REJECT
    assert reply.eap_message() == EapPacket(EapCode.FAILURE, 7).encode()


def test_eap_needs_message_authenticator(directory: MemoryDirectory) -> None:
    server = RadiusServer(directory)
    eap = EapPacket(EapCode.RESPONSE, 0, EapType.IDENTITY, b"x").encode()
    data = codec.encode_request(
        Code.ACCESS_REQUEST, 1, codec.split_eap_message(eap), SECRET, message_authenticator=False
    )
    assert reply_of(server, data, addr=("192.0.2.7", 1)) is None  # even on a relaxed NAS
