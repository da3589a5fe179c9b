"""Property tests: every decoder returns a value or raises the package's protocol error."""

from __future__ import annotations

import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.directory import MemoryDirectory
from nhi_nac.radius.eap import EapServer, decode_eap
from nhi_nac.radius.eaptls import EapTlsMethod, EapTlsServerConfig, build_server_context
from nhi_nac.radius.errors import RadiusProtocolError
from nhi_nac.radius.server import RadiusServer, Service
from tests.radius.conftest import SECRET

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _attrs() -> st.SearchStrategy[list[tuple[int, bytes]]]:
    return st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_packet_random(data: bytes) -> None:
    try:
        pkt = codec.decode_packet(data)
    except RadiusProtocolError:
        return
    for t in (Attr.NAS_PORT, Attr.ACCT_STATUS_TYPE):
        try:
            pkt.get_int(t)
        except RadiusProtocolError:
            pass
    try:
        codec.verify_request(pkt, SECRET)
    except RadiusProtocolError:
        pass


@FUZZ
@given(st.integers(0, 255), _attrs(), st.integers(0, 60), st.binary(max_size=8))
def test_decode_mutated_valid_packet(
    code: int, attrs: list[tuple[int, bytes]], cut: int, junk: bytes
) -> None:
    raw = codec.encode_request(code, 1, attrs, SECRET, message_authenticator=False)
    mutated = raw[: max(0, len(raw) - cut)] + junk
    try:
        codec.decode_packet(mutated)
    except RadiusProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_decode_eap_random(data: bytes) -> None:
    try:
        decode_eap(data)
    except RadiusProtocolError:
        pass


@FUZZ
@given(st.binary(min_size=0, max_size=160), st.binary(min_size=16, max_size=16))
def test_password_and_mppe_decoders(data: bytes, auth: bytes) -> None:
    for fn in (codec.decode_user_password, codec.mppe_decrypt):
        try:
            fn(data, SECRET, auth)
        except RadiusProtocolError:
            pass


@FUZZ
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=6))
def test_eaptls_method_random_responses(
    tls_config: EapTlsServerConfig, responses: list[bytes]
) -> None:
    ctx = build_server_context(tls_config)
    eap = EapServer(lambda _i: EapTlsMethod(ctx, lambda *a: None))
    step = eap.receive(bytes.fromhex("0201000d01") + b"device/x", 0.0)
    ident = step.message[1]
    for body in responses:
        message = bytes((2, ident)) + (len(body) + 5).to_bytes(2, "big") + b"\x0d" + body
        try:
            step = eap.receive(message, 0.0)
        except RadiusProtocolError:
            return
        if step.outcome.value != "continue":
            return
        ident = step.message[1]


@FUZZ
@given(st.binary(max_size=200), _attrs())
def test_server_never_raises(
    directory: MemoryDirectory,
    tls_config: EapTlsServerConfig,
    noise: bytes,
    attrs: list[tuple[int, bytes]],
) -> None:
    server = RadiusServer(directory, tls_context=build_server_context(tls_config))
    now = time.time()
    server.receive(noise, ("127.0.0.1", 1), Service.AUTH, now)
    for code in (Code.ACCESS_REQUEST, Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER):
        raw = codec.encode_request(code, 1, attrs, SECRET, authenticator=os.urandom(16))
        for service in Service:
            server.receive(raw, ("127.0.0.1", 1), service, now)
