"""EAP-TLS, server side (RFC 5216 with TLS 1.2, RFC 9190 with TLS 1.3).

TLS runs in pyOpenSSL on memory BIOs (the stdlib ``ssl`` module cannot export keying
material). This module only moves bytes between EAP-TLS fragments and the TLS engine.

Theory of operation
-------------------
Flags octet: L (0x80, a 4-octet total length follows), M (0x40, more fragments),
S (0x20, Start; only we send it). States of :class:`EapTlsMethod`::

    START_SENT/RECEIVING --peer fragment with M--> (we answer with an ACK)
    RECEIVING --last peer fragment--> feed TLS:
        handshake continues  -> SENDING (our flight), then RECEIVING
        handshake complete   -> SENDING (final flight), then FINISHING
        handshake failed     -> SENDING (the TLS alert), then ALERTING
    SENDING  --ACK--> next fragment; after the last one, the state named above
    FINISHING --ACK--> DONE, success (keys exported)
    ALERTING --anything--> DONE, failure (the peer has seen the alert and knows why)

Illegal, each ending the method with failure: S from the peer; a declared length
above 64 KiB or below the first fragment; fragments that overflow the declared length
or end short of it; an empty fragment with M; a first fragment with M but no L; a
different L on a later fragment; an ACK where data was due or data where an ACK was
due. ("ACK with a wrong identifier" is caught one layer down, by :class:`EapServer`.)

The peer's certificate is judged inside the TLS verify callback so that a rejected
certificate gets a TLS alert: OpenSSL checks the chain, then ``peer_check`` (the
admission decision) sees the leaf and chain with *our* ``now`` — OpenSSL's own
time errors are set aside and validity is checked against ``now`` instead. clientAuth
EKU is required here too (OpenSSL accepts a client certificate with no EKU at all).

TLS 1.3 (RFC 9190 §2.5): after the handshake the server sends the commitment message,
one octet 0x00 of application data, with its final flight (which also carries the two
NewSessionTickets OpenSSL sends even with ``OP_NO_TICKET``).
Keys (RFC 5216 §2.3, RFC 9190 §2.3): 128 octets of exporter output, MSK = first 64,
EMSK = last 64. TLS 1.2 label "client EAP encryption", no context (None differs from
b""); TLS 1.3 label "EXPORTER_EAP_TLS_Key_Material", context 0x0D.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL, crypto

from nhi_nac.radius.eap import EapMethod, EapType, KeyMaterial
from nhi_nac.radius.errors import EapProtocolError, RadiusInternalError
from nhi_nac.radius.limits import (
    DEFAULT_EAP_TLS_FRAGMENT_SIZE,
    MAX_EAP_TLS_FRAGMENT_SIZE,
    MAX_EAP_TLS_MESSAGE_SIZE,
    MIN_EAP_TLS_FRAGMENT_SIZE,
    PARSED_CERTIFICATE_CACHE_SIZE,
)

FLAG_L = 0x80
FLAG_M = 0x40
FLAG_S = 0x20
_LENGTH = struct.Struct("!I")

#: X509_V_ERR_CERT_NOT_YET_VALID / X509_V_ERR_CERT_HAS_EXPIRED: judged against our `now`.
_TIME_ERRORS = frozenset({9, 10})
#: X509_V_ERR_INVALID_PURPOSE: OpenSSL found an EKU without clientAuth.
_PURPOSE_ERROR = 26

TLS12_LABEL = b"client EAP encryption"
TLS13_LABEL = b"EXPORTER_EAP_TLS_Key_Material"
TLS13_CONTEXT = b"\x0d"
KEY_MATERIAL_LENGTH = 128
COMMITMENT_MESSAGE = b"\x00"

#: Key exchange groups, in order. Deliberately no post-quantum hybrid: with an OpenSSL
#: 3.5+ supplicant X25519MLKEM768 nearly doubles the first flight (~2.5 KB, more
#: EAP round trips); revisit when NAS/supplicant MTUs are known to cope.
DEFAULT_GROUPS = "X25519:P-256:P-384"
DEFAULT_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

#: ``peer_check(leaf, issuers, now)`` returns None to admit or a short failure code.
PeerCheck = Callable[[x509.Certificate, tuple[x509.Certificate, ...], float], "str | None"]


class TlsVersion(IntEnum):
    TLS1_2 = SSL.TLS1_2_VERSION
    TLS1_3 = SSL.TLS1_3_VERSION


@dataclass(frozen=True, slots=True)
class EapTlsServerConfig:
    """What the EAP-TLS server presents and trusts."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    #: CAs a client certificate must chain to (the project's CA).
    trust_anchors: tuple[x509.Certificate, ...]
    #: Intermediates sent after our certificate.
    chain: tuple[x509.Certificate, ...] = ()
    min_version: TlsVersion = TlsVersion.TLS1_2
    max_version: TlsVersion = TlsVersion.TLS1_3
    groups: str = DEFAULT_GROUPS
    fragment_size: int = DEFAULT_EAP_TLS_FRAGMENT_SIZE


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    method = conn.get_app_data()
    if not isinstance(method, EapTlsMethod):
        return False
    return method._on_verify(cert, errnum, depth, ok)


def build_server_context(config: EapTlsServerConfig) -> SSL.Context:
    """One pyOpenSSL context for all EAP-TLS conversations (built once, at start)."""
    if config.min_version > config.max_version:
        raise RadiusInternalError("EAP-TLS min_version above max_version")
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(int(config.min_version))
    ctx.set_max_proto_version(int(config.max_version))
    ctx.set_options(
        SSL.OP_NO_TICKET
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
    )
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # Thousands of conversations wait between round trips: free idle record buffers.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(DEFAULT_TLS12_CIPHERS.encode())
    _set_groups(ctx, config.groups)
    ctx.use_certificate(config.certificate)
    for extra in config.chain:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(config.private_key)
    ctx.check_privatekey()
    store = ctx.get_cert_store()
    assert store is not None
    for anchor in config.trust_anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    return ctx


def _set_groups(ctx: SSL.Context, groups: str) -> None:
    # pyOpenSSL exposes only set_tmp_ecdh (one curve); the group *list* needs the
    # binding's SSL_CTX_set1_curves_list (the same call as SSL_CTX_set1_groups_list).
    from OpenSSL._util import lib as _lib

    setter = getattr(_lib, "SSL_CTX_set1_curves_list", None)
    if setter is None or setter(ctx._context, groups.encode()) != 1:
        raise RadiusInternalError(f"cannot set TLS groups {groups!r}")


class ParsedCertificates:
    """Certificates as ``cryptography`` objects, parsed once per DER encoding.

    Every EAP-TLS handshake of a device presents the same leaf and intermediates; the
    ``cryptography`` object parses its extensions once and keeps them, so handing out
    the same object for the same bytes saves the parsing on every authentication. The
    checks themselves (validity against ``now``, revocation, identity) still run per
    handshake. Bounded by ``max_entries``; emptied when full.
    """

    def __init__(self, max_entries: int = PARSED_CERTIFICATE_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._by_der: dict[bytes, x509.Certificate] = {}

    def __len__(self) -> int:
        return len(self._by_der)

    def get(self, cert: crypto.X509) -> x509.Certificate:
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        parsed = self._by_der.get(der)
        if parsed is None:
            parsed = x509.load_der_x509_certificate(der)
            if len(self._by_der) >= self.max_entries:
                self._by_der.clear()
            self._by_der[der] = parsed
        return parsed


#: One per process: the certificates seen by every conversation.
PARSED_CERTIFICATES = ParsedCertificates()


def has_client_auth_eku(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def _x509_error_string(errnum: int) -> str:
    try:
        from OpenSSL._util import ffi, lib

        return str(ffi.string(lib.X509_verify_cert_error_string(errnum)).decode())
    except Exception:  # noqa: BLE001 - diagnostics only
        return f"X509 error {errnum}"


class _State(Enum):
    RECEIVING = "receiving"
    SENDING = "sending"
    FINISHING = "finishing"
    ALERTING = "alerting"
    DONE = "done"


class EapTlsMethod(EapMethod):
    """One EAP-TLS conversation, server side."""

    method_type = EapType.TLS

    def __init__(
        self,
        context: SSL.Context,
        peer_check: PeerCheck,
        fragment_size: int = DEFAULT_EAP_TLS_FRAGMENT_SIZE,
    ) -> None:
        if not MIN_EAP_TLS_FRAGMENT_SIZE <= fragment_size <= MAX_EAP_TLS_FRAGMENT_SIZE:
            raise RadiusInternalError(f"EAP-TLS fragment size {fragment_size} out of range")
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._conn.set_app_data(self)
        self._peer_check = peer_check
        self._fragment_size = fragment_size
        self._state = _State.RECEIVING
        self._after_send = _State.RECEIVING
        self._out = b""
        self._in = bytearray()
        self._in_declared: int | None = None
        self._now = 0.0
        self._success = False
        self._keys: KeyMaterial | None = None
        self._failure: str | None = None
        self._failure_detail: str | None = None
        self._issuers: dict[int, x509.Certificate] = {}
        self.peer_certificate: x509.Certificate | None = None
        self.tls_version: str | None = None

    # -- EapMethod ----------------------------------------------------------------------

    def initial_request(self, now: float) -> bytes:
        self._now = now
        return bytes((FLAG_S,))

    def process_response(self, type_data: bytes, now: float) -> bytes | None:
        self._now = now
        if self._state is _State.DONE:
            raise EapProtocolError("EAP-TLS already done", "eaptls_done")
        try:
            return self._process(type_data)
        except EapProtocolError as exc:
            self._finish(False, exc.reason)
            raise

    def is_success(self) -> bool:
        return self._success

    def key_material(self) -> KeyMaterial | None:
        return self._keys

    @property
    def failure_reason(self) -> str | None:
        return self._failure

    @property
    def failure_detail(self) -> str | None:
        return self._failure_detail

    @property
    def verified_chain(self) -> tuple[x509.Certificate, ...]:
        """The chain OpenSSL verified (leaf first), once the handshake is done."""
        chain = self._conn.get_verified_chain() if self._success else None
        return tuple(PARSED_CERTIFICATES.get(c) for c in chain or ())

    # -- fragments ------------------------------------------------------------------

    def _process(self, data: bytes) -> bytes | None:
        if not data:
            raise EapProtocolError("EAP-TLS response without flags", "eaptls_malformed")
        flags = data[0]
        if flags & FLAG_S:
            raise EapProtocolError("peer sent an EAP-TLS Start", "eaptls_peer_start")
        is_ack = len(data) == 1 and not flags & (FLAG_L | FLAG_M)
        state = self._state
        if state is _State.SENDING:
            if not is_ack:
                raise EapProtocolError("expected an ACK of our fragment", "eaptls_expected_ack")
            return self._next_fragment()
        if state is _State.FINISHING:
            if not is_ack:
                # Data after our final flight is the peer's alert: it refused us.
                self._finish(False, "eaptls_peer_alert")
                return None
            self._finish(True, None)
            return None
        if state is _State.ALERTING:
            self._state = _State.DONE
            return None
        if is_ack:
            raise EapProtocolError("ACK where TLS data was due", "eaptls_unexpected_ack")
        return self._receive_fragment(flags, data)

    def _receive_fragment(self, flags: int, data: bytes) -> bytes | None:
        pos = 1
        declared: int | None = None
        if flags & FLAG_L:
            if len(data) < 5:
                raise EapProtocolError("L flag without a length", "eaptls_malformed")
            (declared,) = _LENGTH.unpack_from(data, 1)
            pos = 5
        payload = data[pos:]
        more = bool(flags & FLAG_M)
        if more and not payload:
            raise EapProtocolError("empty fragment with M set", "eaptls_empty_fragment")
        if self._in_declared is None:
            if declared is None:
                if more:
                    raise EapProtocolError(
                        "first fragment with M but no L", "eaptls_missing_length"
                    )
                declared = len(payload)
            if declared > MAX_EAP_TLS_MESSAGE_SIZE:
                raise EapProtocolError(f"declared TLS message length {declared}", "eaptls_too_long")
            if declared < len(payload):
                raise EapProtocolError(
                    "fragment longer than the declared length", "eaptls_overflow"
                )
            self._in_declared = declared
        elif declared is not None and declared != self._in_declared:
            raise EapProtocolError("L changed between fragments", "eaptls_length_changed")
        self._in += payload
        if len(self._in) > self._in_declared:
            raise EapProtocolError("fragments overflow the declared length", "eaptls_overflow")
        if more:
            return bytes((0,))  # ACK: an EAP-TLS request with no data (RFC 5216 §2.1.5)
        if len(self._in) != self._in_declared:
            raise EapProtocolError("fragments do not add up to the declared length", "eaptls_short")
        message = bytes(self._in)
        self._in = bytearray()
        self._in_declared = None
        return self._feed_tls(message)

    def _send(self, out: bytes, after: _State) -> bytes:
        self._out = out
        self._after_send = after
        total = len(out)
        if total <= self._fragment_size:
            self._state = after
            self._out = b""
            return bytes((0,)) + out
        self._state = _State.SENDING
        chunk = out[: self._fragment_size]
        self._out = out[self._fragment_size :]
        return bytes((FLAG_L | FLAG_M,)) + _LENGTH.pack(total) + chunk

    def _next_fragment(self) -> bytes:
        chunk = self._out[: self._fragment_size]
        self._out = self._out[self._fragment_size :]
        if self._out:
            return bytes((FLAG_M,)) + chunk
        self._state = self._after_send
        return bytes((0,)) + chunk

    # -- TLS -----------------------------------------------------------------------

    def _drain(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _feed_tls(self, message: bytes) -> bytes | None:
        conn = self._conn
        conn.bio_write(message)
        try:
            conn.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            if self._failure is None:
                reason = (
                    "no_client_certificate"
                    if self.peer_certificate is None and not self._issuers
                    else "tls_handshake_failed"
                )
                self._failure = reason
                self._failure_detail = str(exc)
            out = self._drain()
            if out:
                return self._send(out, _State.ALERTING)
            self._state = _State.DONE
            return None
        if not done:
            out = self._drain()
            if not out:
                raise EapProtocolError(
                    "TLS needs more data but the peer's flight ended", "eaptls_stalled"
                )
            return self._send(out, _State.RECEIVING)
        return self._handshake_done()

    def _handshake_done(self) -> bytes | None:
        conn = self._conn
        if self.peer_certificate is None or self._failure is not None:
            # Cannot happen with VERIFY_FAIL_IF_NO_PEER_CERT; refuse rather than assume.
            self._finish(False, self._failure or "no_client_certificate")
            return None
        version = conn.get_protocol_version_name()
        self.tls_version = version
        if version == "TLSv1.3":
            conn.send(COMMITMENT_MESSAGE)
            exported = conn.export_keying_material(TLS13_LABEL, KEY_MATERIAL_LENGTH, TLS13_CONTEXT)
        else:
            exported = conn.export_keying_material(TLS12_LABEL, KEY_MATERIAL_LENGTH, None)
        self._keys = KeyMaterial(msk=exported[:64], emsk=exported[64:])
        out = self._drain()
        if not out:
            # TLS 1.2 always sends CCS+Finished; an empty final flight is a bug.
            raise RadiusInternalError("TLS handshake finished without a final flight")
        return self._send(out, _State.FINISHING)

    def _finish(self, success: bool, reason: str | None) -> None:
        self._state = _State.DONE
        self._success = success
        if not success:
            self._keys = None
            if self._failure is None:
                self._failure = reason or "eaptls_failed"

    def _on_verify(self, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        """OpenSSL verify callback for this conversation (see the module docstring)."""
        if self._failure is not None:
            return False
        if not ok and errnum == _PURPOSE_ERROR and depth == 0:
            self._failure = "no_client_auth_eku"
            self.peer_certificate = PARSED_CERTIFICATES.get(cert)
            return False
        if not ok and errnum not in _TIME_ERRORS:
            self._failure = "untrusted_chain"
            self._failure_detail = _x509_error_string(errnum)
            return False
        if depth > 0:
            self._issuers[depth] = PARSED_CERTIFICATES.get(cert)
            return True
        if not ok or self.peer_certificate is not None:
            return True  # a time error on the leaf; judged below with our `now`
        leaf = PARSED_CERTIFICATES.get(cert)
        self.peer_certificate = leaf
        if not has_client_auth_eku(leaf):
            self._failure = "no_client_auth_eku"
            return False
        issuers = tuple(self._issuers[d] for d in sorted(self._issuers))
        reason = self._peer_check(leaf, issuers, self._now)
        if reason is not None:
            self._failure = reason
            return False
        return True


def fragments_of(data: bytes, size: int) -> Sequence[bytes]:
    """Split a TLS flight into EAP-TLS type-data fragments (L on the first of several,
    M on all but the last), as a peer does; used by tests and the bench client."""
    if len(data) <= size:
        return [bytes((0,)) + data]
    out = []
    for i in range(0, len(data), size):
        chunk = data[i : i + size]
        flags = FLAG_M if i + size < len(data) else 0
        if i == 0:
            out.append(bytes((flags | FLAG_L,)) + _LENGTH.pack(len(data)) + chunk)
        else:
            out.append(bytes((flags,)) + chunk)
    return out
