"""``nhi-nac enroll``: the workload side of enrollment at boot and renewal.

The key is generated here and never leaves the host; the server sees only the CSR
(or, for renewal, a request signed with the current key). Files are written atomically
by :func:`pki.write_credentials`. ``--loop`` renews between 60% and two thirds of each
lifetime (``pki.renewal_time``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import os
import random
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

import pki
from nhi_nac.errors import NhiError

T = TypeVar("T")

#: Seconds to wait for the enrollment server.
HTTP_TIMEOUT = 30
#: Largest answer read from the server (a certificate bundle is a few kilobytes).
MAX_ANSWER_BYTES = 1024 * 1024
#: After a failed renewal in --loop, wait this long before trying again (bounded back-off).
RETRY_SECONDS = (5, 15, 60, 300)
#: While --loop waits to renew, it asks the CA's OCSP responder this often whether the
#: certificate was revoked, so that a revoked workload stops (and its unit fails) within
#: this time rather than at its renewal time.
STATUS_CHECK_SECONDS = 900.0


class Refused(NhiError):
    """The server answered and said no (a 4xx other than timeout or rate limit): asking
    again with the same credentials will not help."""


class Unreachable(NhiError):
    """The CA could not be reached, or answered that it cannot serve now (a 5xx, 408,
    425 or 429): the same request may succeed later. ``retry_after`` is the wait in
    seconds the answer asked for (``Retry-After``), if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: 4xx answers that are about the moment, not the request: retried.
_TRANSIENT = frozenset({408, 425, 429})
#: Longest ``Retry-After`` honoured, in seconds (a larger one is read as this).
MAX_RETRY_AFTER = 3600


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in delay-seconds (RFC 9110 §10.2.3), capped; an HTTP-date or
    anything else is ignored (the client's own back-off applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(min(int(value.strip()), MAX_RETRY_AFTER))


def retry_delay(failures: int, rand: Callable[[], float],
                retry_after: float | None = None) -> float:
    """The wait after the ``failures``-th failure in a row (from 0): a random point in the
    upper half of RETRY_SECONDS' growing ceiling, so that clients which lost the CA
    together do not return together; at least what the server asked for."""
    ceiling = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
    delay = round(ceiling * (0.5 + rand() / 2), 1)
    return max(delay, retry_after or 0.0)


def retrying(attempt: Callable[[], T], retry_for: float, *, sleep: Any = time.sleep,
             rand: Callable[[], float] = random.random,
             clock: Callable[[], float] = time.monotonic) -> T:
    """``attempt()``, tried again while it raises :class:`Unreachable` for at most
    ``retry_for`` seconds, after the waits of :func:`retry_delay`. When the next wait
    would end past that, the last :class:`Unreachable` is raised; anything else
    (a refusal) at once."""
    deadline = clock() + retry_for
    failures = 0
    while True:
        try:
            return attempt()
        except Unreachable as exc:
            delay = retry_delay(failures, rand, exc.retry_after)
            if clock() + delay > deadline:
                raise
            print(f"nhi-nac enroll: {exc.message}; retrying in {delay}s", file=sys.stderr,
                  flush=True)
            failures += 1
            sleep(delay)


def _checked_url(server: str, path: str) -> str:
    """``server`` + ``path``, refused unless it is an http(s) URL."""
    if not server.startswith(("https://", "http://")):
        raise NhiError(f"--server must be an http:// or https:// URL, not {server!r}")
    return server.rstrip("/") + path


def _post(server: str, path: str, body: dict[str, Any], ca_file: str | None,
          ca_pem: str | None = None) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked by _checked_url
        _checked_url(server, path), data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    data: dict[str, Any] = http_json(req, ca_file, "enrollment refused", ca_pem)
    return data


def root_by_fingerprint(server: str, fingerprint: str) -> str:
    """The server's root CA certificate (PEM), fetched from ``/pki/v1/ca.pem`` without
    trusting anything yet and kept only if its SHA-256 fingerprint is ``fingerprint``
    (hex, colons and case ignored: ``openssl x509 -fingerprint -sha256`` or
    ``nhi-nac ca fingerprint``). This is how a new host learns whom to trust: the
    fingerprint comes with the bootstrap token, out of band."""
    want = fingerprint.replace(":", "").strip().lower()
    if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
        raise NhiError("--root-fingerprint must be a SHA-256 fingerprint (64 hex digits)")
    url = server.rstrip("/") + "/pki/v1/ca.pem"
    if not url.startswith("https://"):
        raise NhiError("--root-fingerprint needs an https:// server")
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # checked below, by the fingerprint
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT,  # noqa: S310 - https only
                                    context=unverified) as resp:
            pem = resp.read(64 * 1024).decode()
        root = x509.load_pem_x509_certificate(pem.encode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise NhiError(f"cannot fetch the root CA from {url}: "
                       f"{getattr(exc, 'reason', exc)}") from None
    got = root.fingerprint(hashes.SHA256()).hex()
    if not hmac.compare_digest(got, want):
        raise NhiError(f"the root CA served by {server} has fingerprint {got}, not the "
                       "one given: refusing to trust it")
    return root.public_bytes(serialization.Encoding.PEM).decode()


def trusted_root(directory: str, ca_file: str | None) -> str | None:
    """What an https:// server must chain to for a host already enrolled: ``ca_file`` if
    given, else the root CA written at enrollment (``DIR/ca.pem``)."""
    if ca_file is None and (Path(directory) / pki.enroll.CA_FILE).exists():
        return str(Path(directory) / pki.enroll.CA_FILE)
    return ca_file


def http_json(req: urllib.request.Request, ca_file: str | None, refused: str,
              ca_pem: str | None = None) -> Any:
    """Send ``req`` (an http(s) URL the caller has checked) and decode the JSON answer; an
    error answer becomes NhiError with its problem ``detail``. ``ca_file`` or ``ca_pem``
    is what an https:// server must chain to (the system's trust store if neither)."""
    try:
        return json.loads(http_bytes(req, ca_file, refused, ca_pem))
    except ValueError:
        raise NhiError(f"{req.full_url} did not answer JSON") from None


def http_bytes(req: urllib.request.Request, ca_file: str | None, refused: str,
               ca_pem: str | None = None) -> bytes:
    """:func:`http_json`'s request, returning the answer's body as it came."""
    url = req.full_url
    ctx = (ssl.create_default_context(cafile=ca_file, cadata=ca_pem)
           if url.startswith("https") else None)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=ctx) as resp:  # noqa: S310
            body: bytes = resp.read(MAX_ANSWER_BYTES)
            return body
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        message = f"{refused} ({exc.code}): {detail}"
        if exc.code >= 500 or exc.code in _TRANSIENT:
            raise Unreachable(message, _retry_after(exc.headers.get("Retry-After"))) from None
        raise (Refused if 400 <= exc.code < 500 else NhiError)(message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            # The server is there but is not the CA this host trusts: not a moment's fault.
            raise NhiError(f"cannot trust {url}: {reason}") from None
        raise Unreachable(f"cannot reach {url}: {reason}") from None


def enroll(server: str, token: str, out: str, key_type: str = "p256",
           validity: str | None = None, ca_file: str | None = None,
           root_fingerprint: str | None = None,
           dns_names: Sequence[str] = ()) -> dict[str, Any]:
    """First enrollment with a bootstrap token; ``dns_names`` are asked for besides the
    SPIFFE ID (the CA grants only those the identity's scope lists, or refuses)."""
    ca_pem = root_by_fingerprint(server, root_fingerprint) if root_fingerprint else None
    enrollment = pki.new_enrollment(key_type, dns_names=dns_names)
    body: dict[str, Any] = {"token": token, "csr": enrollment.csr_pem.decode()}
    if validity:
        body["validity"] = validity
    bundle = _post(server, "/pki/v1/enroll", body, ca_file, ca_pem)
    _store(out, enrollment.key, bundle)
    return bundle


def renew(server: str, out: str, validity: str | None = None,
          ca_file: str | None = None, dns_names: Sequence[str] | None = None
          ) -> dict[str, Any]:
    """Renew with the current certificate, for a new key of the same type. The new
    certificate asks for the current one's DNS names unless ``dns_names`` says which."""
    try:
        key, cert = pki.read_credentials(out)
    except (OSError, pki.PkiError, ValueError) as exc:
        raise NhiError(f"no current credentials in {out}: {exc}") from None
    if dns_names is None:
        dns_names = current_dns_names(cert)
    enrollment = pki.new_enrollment(_key_type(key), dns_names=dns_names)
    proof = pki.build_renewal_proof(key, cert, enrollment.csr_pem, dt.datetime.now(dt.UTC))
    body: dict[str, Any] = {"proof": proof.decode()}
    if validity:
        body["validity"] = validity
    bundle = _post(server, "/pki/v1/renew", body, trusted_root(out, ca_file))
    _store(out, enrollment.key, bundle)
    return bundle


def current_dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate holds, in its order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def _key_type(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa3072"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return "p384"
    return "p256"


def _store(out: str, key: pki.PrivateKey, bundle: dict[str, Any]) -> None:
    try:
        pki.write_credentials(out, key, bundle["certificate_pem"].encode(),
                              bundle["chain_pem"].encode(), bundle["ca_pem"].encode())
    except (KeyError, pki.PkiError) as exc:
        raise NhiError(f"bad enrollment answer: {exc}") from None


def renewal_due(out: str) -> bool:
    """True when the certificate in ``out`` has reached its renewal time (or is unreadable)."""
    try:
        _, cert = pki.read_credentials(out)
    except (OSError, pki.PkiError, ValueError):
        return True
    return dt.datetime.now(dt.UTC) >= pki.renewal_time(cert)


def renew_loop(server: str, out: str, ca_file: str | None, max_rounds: int | None = None,
               sleep: Any = time.sleep, rand: Callable[[], float] = random.random,
               check_every: float = STATUS_CHECK_SECONDS) -> None:
    """Renew at each certificate's renewal time, forever (or ``max_rounds`` times). A
    renewal that could not reach the CA (or got a 5xx, 408 or 429) is retried after a
    growing delay, each drawn at random from its upper half, so that clients which lost
    the CA together do not return together. A refusal (revoked, expired, retired) and an
    expired certificate end the loop with :class:`Refused`: retrying cannot help.

    While it waits, every ``check_every`` seconds it asks the CA's OCSP responder about
    the certificate (:func:`revocation_status`); a revocation ends the loop at once with
    :class:`Refused`. An answer it cannot get or trust changes nothing: the wait goes on.
    """
    rounds, failures = 0, 0
    while max_rounds is None or rounds < max_rounds:
        _, cert = pki.read_credentials(Path(out))
        now = dt.datetime.now(dt.UTC)
        if now >= cert.not_valid_after_utc:
            raise Refused(f"the certificate in {out} expired at "
                          f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} and cannot renew "
                          "itself; enroll again with a bootstrap token")
        wait = (pki.renewal_time(cert) - now).total_seconds()
        while wait > 0:
            step = min(wait, check_every)
            sleep(step)
            wait -= step
            if wait > 0:  # at the renewal time, the renewal itself tells
                ensure_not_revoked(server, out, ca_file, cert)
        try:
            renew(server, out, ca_file=ca_file)
            failures = 0
            rounds += 1
        except Refused:
            raise  # revoked, expired, retired, owner departed: a person has to act
        except NhiError as exc:
            delay = retry_delay(failures, rand, getattr(exc, "retry_after", None))
            print(f"nhi-nac enroll: {exc.message}; retrying in {delay}s", flush=True)
            failures += 1
            sleep(delay)


def revocation_status(server: str, out: str, cert: x509.Certificate,
                      ca_file: str | None = None) -> pki.SerialStatus:
    """What the CA's OCSP responder (``SERVER/pki/v1/ocsp``) says about ``cert``, checked
    as RFC 6960 §3.2 asks (signed for the issuing CA in ``DIR/chain.pem``, current, our
    nonce echoed). Raises NhiError when there is no answer to rely on."""
    try:
        issuer = pki.load_certificates((Path(out) / pki.enroll.CHAIN_FILE).read_bytes())[0]
    except (OSError, IndexError, ValueError, pki.PkiError) as exc:
        raise NhiError(f"no issuing CA certificate in {out}: {exc}") from None
    nonce = os.urandom(16)
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked by _checked_url
        _checked_url(server, "/pki/v1/ocsp"), data=pki.build_request(cert, issuer, nonce),
        method="POST", headers={"Content-Type": "application/ocsp-request"})
    answer = http_bytes(req, trusted_root(out, ca_file), "OCSP request refused")
    try:
        return pki.check_response(answer, cert, issuer, dt.datetime.now(dt.UTC), nonce=nonce)
    except pki.PkiError as exc:
        raise NhiError(f"OCSP answer not usable: {exc}") from None


def ensure_not_revoked(server: str, out: str, ca_file: str | None = None,
                       cert: x509.Certificate | None = None) -> None:
    """Raise :class:`Refused` if the CA says the certificate in ``out`` is revoked. No
    usable answer (CA unreachable, answer not trusted) only prints a warning: the
    certificate stays in use, as it would without the check."""
    if cert is None:
        try:
            _, cert = pki.read_credentials(out)
        except (OSError, pki.PkiError, ValueError) as exc:
            raise NhiError(f"no current credentials in {out}: {exc}") from None
    try:
        status = revocation_status(server, out, cert, ca_file)
    except NhiError as exc:
        print(f"nhi-nac enroll: revocation check skipped: {exc.message}", file=sys.stderr,
              flush=True)
        return
    if status.status is pki.CertStatus.REVOKED:
        at = f" at {status.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if status.revoked_at else ""
        why = f" ({status.reason.name})" if status.reason is not None else ""
        if status.reason is x509.ReasonFlags.certificate_hold:
            since = f" since {status.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if status.revoked_at else ""
            raise Refused(f"the certificate in {out} (serial {cert.serial_number:x}) is on "
                          f"hold{since}; it renews again once an admin releases it "
                          f"(nhi-nac cert release {cert.serial_number:x})")
        raise Refused(f"the certificate in {out} (serial {cert.serial_number:x}) was "
                      f"revoked{at}{why}; enroll again with a bootstrap token")
