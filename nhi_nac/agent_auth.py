"""Requests an AI agent signs with its own certificate's key.

An agent calls the agent endpoints (``/agent/v1/...``) with no API token: it proves
who it is by signing the request with the private key of its current certificate::

    Authorization: NHI-Agent <proof>

where ``proof`` is ``base64url(payload) "." base64url(signature)`` and the payload is
the JSON object ``{typ, serial, cert_sha256, iat, nonce, method, path, body_sha256}``.
The server finds the certificate by serial and checks that our CA issued it, that it
is inside its validity and not revoked, that the payload names this very request
(method, path, body digest), that it was signed within ``MAX_AGE`` and that its nonce
has not been seen before (a replayed proof is refused, on this node or any other node on
the same database).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nhi_nac.errors import Forbidden, Unauthorized
from pki.keys import PrivateKey, signature_hash

SCHEME = "NHI-Agent"
PROOF_TYPE = "nhi-nac-agent-request/v1"
#: A proof older than this is refused; one dated later than SKEW ahead too.
MAX_AGE = timedelta(minutes=2)
SKEW = timedelta(seconds=30)
MAX_PROOF_BYTES = 8 * 1024
#: Nonces remembered per node (at least MAX_AGE worth at machine speed).
NONCE_CACHE = 200_000


@dataclass(frozen=True)
class ProofClaims:
    serial: int
    cert_sha256: str
    signed_at: datetime
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def sign_request(key: PrivateKey, certificate: x509.Certificate, method: str, path: str,
                 body: bytes, now: datetime | None = None) -> str:
    """The ``Authorization`` header value for one request."""
    payload = json.dumps({
        "typ": PROOF_TYPE,
        "serial": format(certificate.serial_number, "x"),
        "cert_sha256": certificate.fingerprint(hashes.SHA256()).hex(),
        "iat": int((now or datetime.now(UTC)).timestamp()),
        "nonce": secrets.token_urlsafe(16),
        "method": method.upper(),
        "path": path,
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }, separators=(",", ":"), sort_keys=True).encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(payload)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(payload, ec.ECDSA(signature_hash(key) or hashes.SHA256()))
    else:
        signature = key.sign(payload, _pss(), hashes.SHA256())
    return f"{SCHEME} {_b64(payload)}.{_b64(signature)}"


def parse_header(header: str) -> tuple[bytes, dict[str, Any], bytes]:
    """Split an ``Authorization`` value into (payload bytes, payload, signature)."""
    scheme, _, proof = header.partition(" ")
    if scheme != SCHEME or not proof:
        raise Unauthorized(f"agent requests are authenticated by '{SCHEME} <proof>' "
                           "signed with the agent certificate's key")
    if len(proof) > MAX_PROOF_BYTES:
        raise Unauthorized("agent proof too large")
    try:
        head, _, sig = proof.strip().partition(".")
        payload_bytes, signature = _unb64(head), _unb64(sig)
        payload = json.loads(payload_bytes)
        if not isinstance(payload, dict) or payload.get("typ") != PROOF_TYPE:
            raise ValueError
        int(payload["serial"], 16)
        int(payload["iat"])
        for k in ("cert_sha256", "nonce", "method", "path", "body_sha256"):
            if not isinstance(payload[k], str):
                raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Unauthorized("agent proof is malformed") from None
    return payload_bytes, payload, signature


class ReplayGuard:
    """Nonces seen within ``MAX_AGE``; a second use is a replay."""

    def __init__(self, capacity: int = NONCE_CACHE) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, nonce: str) -> None:
        now = time.monotonic()
        horizon = now - (MAX_AGE + SKEW).total_seconds()
        while self._seen and (next(iter(self._seen.values())) < horizon
                              or len(self._seen) >= self.capacity):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise Unauthorized("agent proof was already used (replay)")
        self._seen[nonce] = now


def nonce_digest(claims: ProofClaims) -> str:
    """The key a used proof is remembered by: its certificate and its nonce."""
    return hashlib.sha256(f"{claims.cert_sha256}:{claims.nonce}".encode()).hexdigest()


def check_issuer(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise Unauthorized("agent certificate was not issued by this CA") from None


def verify_request(payload_bytes: bytes, payload: dict[str, Any], signature: bytes,
                   certificate: x509.Certificate, issuer: x509.Certificate | None, *,
                   method: str, path: str, body: bytes, now: datetime,
                   revoked: bool) -> ProofClaims:
    """Check a proof against the certificate it names; raise Unauthorized/Forbidden.
    ``issuer`` None: the caller has already checked the certificate's issuer."""
    if payload.get("cert_sha256") != certificate.fingerprint(hashes.SHA256()).hex():
        raise Unauthorized("agent proof names another certificate")
    if issuer is not None:
        check_issuer(certificate, issuer)
    public = certificate.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, payload_bytes)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, payload_bytes,
                          ec.ECDSA(signature_hash(public) or hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, payload_bytes, _pss(), hashes.SHA256())
        else:
            raise Unauthorized("agent certificate key type cannot sign requests")
    except InvalidSignature:
        raise Unauthorized("agent proof signature does not verify") from None
    if (payload["method"] != method.upper() or payload["path"] != path
            or payload["body_sha256"] != hashlib.sha256(body).hexdigest()):
        raise Unauthorized("agent proof was signed for another request")
    signed_at = datetime.fromtimestamp(int(payload["iat"]), UTC)
    if not now - MAX_AGE <= signed_at <= now + SKEW:
        raise Unauthorized("agent proof is stale or from the future")
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Forbidden(f"agent certificate is not valid now (expired "
                        f"{certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
                        if now > certificate.not_valid_after_utc
                        else "agent certificate is not yet valid")
    if revoked:
        raise Forbidden("agent certificate is revoked")
    return ProofClaims(int(payload["serial"], 16), payload["cert_sha256"], signed_at,
                       payload["nonce"])
