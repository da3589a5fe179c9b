"""An in-memory EAP-TLS supplicant on pyOpenSSL memory BIOs, and a RADIUS NAS driving it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from OpenSSL import SSL

from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Code
from nhi_nac.radius.eap import EapCode, EapPacket, EapType, decode_eap
from nhi_nac.radius.eaptls import (
    FLAG_L,
    FLAG_M,
    FLAG_S,
    KEY_MATERIAL_LENGTH,
    TLS12_LABEL,
    TLS13_CONTEXT,
    TLS13_LABEL,
    TlsVersion,
    fragments_of,
)
from nhi_nac.radius.server import RadiusServer, Service
from tests.radius.pkiutil import Issued


class Silence(Exception):
    """The server did not answer (the reason it counted is the message)."""


class EapTlsPeer:
    """Answers EAP-TLS Requests the way wpa_supplicant does."""

    def __init__(
        self,
        ca: Issued,
        client: Issued,
        version: TlsVersion | None = None,
        fragment_size: int = 1000,
        identity: bytes = b"device/x",
    ) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if version is not None:
            ctx.set_min_proto_version(int(version))
            ctx.set_max_proto_version(int(version))
        ctx.use_certificate(client.cert)
        ctx.use_privatekey(client.key)
        store = ctx.get_cert_store()
        assert store is not None
        from OpenSSL import crypto

        store.add_cert(crypto.X509.from_cryptography(ca.cert))
        ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, err, depth, ok: bool(ok))
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.fragment_size = fragment_size
        self.identity = identity
        self.pending: list[bytes] = []
        self.inbuf = b""
        self.handshake_done = False
        self.received_alert = False
        self.app_data = b""

    def _drain(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return out
            if not chunk:
                return out
            out += chunk

    def _step_tls(self) -> bytes:
        try:
            self.conn.do_handshake()
            self.handshake_done = True
        except SSL.WantReadError:
            pass
        except SSL.Error:
            self.received_alert = True
        if self.handshake_done:
            try:
                self.app_data += self.conn.recv(65536)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                pass
            except SSL.Error:
                self.received_alert = True  # TLS 1.3: the server's alert after our Finished
        return self._drain()

    def respond(self, request: EapPacket) -> EapPacket:
        """The EAP-Response to one EAP-Request/TLS."""
        assert request.type == EapType.TLS
        data = request.data
        flags = data[0]
        if flags & FLAG_S:
            return self._send(self._step_tls(), request.identifier)
        if self.pending and len(data) == 1 and flags == 0:
            return self._next(request.identifier)
        payload = data[5:] if flags & FLAG_L else data[1:]
        self.inbuf += payload
        if flags & FLAG_M:
            return self.tls_response(request.identifier, b"\x00")
        self.conn.bio_write(self.inbuf)
        self.inbuf = b""
        return self._send(self._step_tls(), request.identifier)

    def _send(self, out: bytes, identifier: int) -> EapPacket:
        if not out:
            return self.tls_response(identifier, b"\x00")  # ACK
        self.pending = list(fragments_of(out, self.fragment_size))
        return self._next(identifier)

    def _next(self, identifier: int) -> EapPacket:
        return self.tls_response(identifier, self.pending.pop(0))

    @staticmethod
    def tls_response(identifier: int, type_data: bytes) -> EapPacket:
        return EapPacket(EapCode.RESPONSE, identifier, EapType.TLS, type_data)

    def keys(self) -> bytes:
        if self.conn.get_protocol_version_name() == "TLSv1.3":
            return self.conn.export_keying_material(TLS13_LABEL, KEY_MATERIAL_LENGTH, TLS13_CONTEXT)
        return self.conn.export_keying_material(TLS12_LABEL, KEY_MATERIAL_LENGTH, None)


@dataclass
class NasResult:
    reply: codec.RadiusPacket
    request_authenticator: bytes
    rounds: int
    eap_ids: list[int] = field(default_factory=list)


def run_over_radius(
    server: RadiusServer,
    peer: EapTlsPeer,
    secret: bytes,
    now: float,
    addr: tuple[str, int] = ("127.0.0.1", 50000),
    max_rounds: int = 200,
) -> NasResult:
    """Act as the NAS: EAP-Response/Identity, then relay until Accept or Reject."""
    eap = EapPacket(EapCode.RESPONSE, 0, EapType.IDENTITY, peer.identity).encode()
    state: bytes | None = None
    ids = []
    for rounds in range(1, max_rounds):
        auth = os.urandom(16)
        attrs = codec.split_eap_message(eap)
        attrs += [(Attr.CALLING_STATION_ID, b"02-00-00-00-00-aa"), codec.integer(Attr.NAS_PORT, 1)]
        if state is not None:
            attrs.append((Attr.STATE, state))
        data = codec.encode_request(
            Code.ACCESS_REQUEST, rounds % 256, attrs, secret, authenticator=auth
        )
        out = server.receive(data, addr, Service.AUTH, now)
        if not out.datagrams:
            raise Silence(out.dropped or "")
        assert len(out.datagrams) == 1, out
        codec.verify_response(out.datagrams[0].data, auth, secret)
        reply = codec.decode_packet(out.datagrams[0].data)
        message = reply.eap_message()
        assert message is not None
        request = decode_eap(message)
        ids.append(request.identifier)
        if reply.code != Code.ACCESS_CHALLENGE:
            return NasResult(reply, auth, rounds, ids)
        state = reply.get(Attr.STATE)
        eap = peer.respond(request).encode()
    raise AssertionError("EAP did not finish")


def l_fragment(total: int, payload: bytes, more: bool) -> bytes:
    return bytes((FLAG_L | (FLAG_M if more else 0),)) + struct.pack("!I", total) + payload
