"""``nhi-nac enroll``: the workload side of enrollment at boot and renewal.

The key is generated here and never leaves the host; the server sees only the CSR
(or, for renewal, a request signed with the current key). Files are written atomically
by :func:`pki.write_credentials`. ``--loop`` renews between 60% and two thirds of each
lifetime (``pki.renewal_time``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pki
from nhi_nac.errors import NhiError

#: Seconds to wait for the enrollment server.
HTTP_TIMEOUT = 30
#: After a failed renewal in --loop, wait this long before trying again (bounded back-off).
RETRY_SECONDS = (5, 15, 60, 300)


class Refused(NhiError):
    """The server answered and said no (a 4xx other than timeout or rate limit): asking
    again with the same credentials will not help."""


#: 4xx answers that are about the moment, not the request: retried.
_TRANSIENT = frozenset({408, 425, 429})


def _post(url: str, body: dict[str, Any], ca_file: str | None) -> dict[str, Any]:
    if not url.startswith(("https://", "http://")):
        raise NhiError(f"--server must be an http:// or https:// URL, not {url!r}")
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    data: dict[str, Any] = http_json(req, ca_file, "enrollment refused")
    return data


def http_json(req: urllib.request.Request, ca_file: str | None, refused: str) -> Any:
    """Send ``req`` (an http(s) URL the caller has checked) and decode the JSON answer; an
    error answer becomes NhiError with its problem ``detail``."""
    url = req.full_url
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=ctx) as resp:  # noqa: S310
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        error = Refused if 400 <= exc.code < 500 and exc.code not in _TRANSIENT else NhiError
        raise error(f"{refused} ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NhiError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def enroll(server: str, token: str, out: str, key_type: str = "p256",
           validity: str | None = None, ca_file: str | None = None) -> dict[str, Any]:
    enrollment = pki.new_enrollment(key_type)
    body: dict[str, Any] = {"token": token, "csr": enrollment.csr_pem.decode()}
    if validity:
        body["validity"] = validity
    bundle = _post(server.rstrip("/") + "/pki/v1/enroll", body, ca_file)
    _store(out, enrollment.key, bundle)
    return bundle


def renew(server: str, out: str, validity: str | None = None,
          ca_file: str | None = None) -> dict[str, Any]:
    try:
        key, cert = pki.read_credentials(out)
    except (OSError, pki.PkiError, ValueError) as exc:
        raise NhiError(f"no current credentials in {out}: {exc}") from None
    enrollment = pki.new_enrollment(_key_type(key))
    proof = pki.build_renewal_proof(key, cert, enrollment.csr_pem, dt.datetime.now(dt.UTC))
    body: dict[str, Any] = {"proof": proof.decode()}
    if validity:
        body["validity"] = validity
    bundle = _post(server.rstrip("/") + "/pki/v1/renew", body, ca_file)
    _store(out, enrollment.key, bundle)
    return bundle


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
               sleep: Any = time.sleep, rand: Callable[[], float] = random.random) -> None:
    """Renew at each certificate's renewal time, forever (or ``max_rounds`` times). A
    renewal that could not reach the CA (or got a 5xx, 408 or 429) is retried after a
    growing delay, each drawn at random from its upper half, so that clients which lost
    the CA together do not return together. A refusal (revoked, expired, retired) and an
    expired certificate end the loop with :class:`Refused`: retrying cannot help."""
    rounds, failures = 0, 0
    while max_rounds is None or rounds < max_rounds:
        _, cert = pki.read_credentials(Path(out))
        now = dt.datetime.now(dt.UTC)
        if now >= cert.not_valid_after_utc:
            raise Refused(f"the certificate in {out} expired at "
                          f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} and cannot renew "
                          "itself; enroll again with a bootstrap token")
        wait = (pki.renewal_time(cert) - now).total_seconds()
        if wait > 0:
            sleep(wait)
        try:
            renew(server, out, ca_file=ca_file)
            failures = 0
            rounds += 1
        except Refused:
            raise  # revoked, expired, retired, owner departed: a person has to act
        except NhiError as exc:
            ceiling = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            delay = round(ceiling * (0.5 + rand() / 2), 1)
            print(f"nhi-nac enroll: {exc.message}; retrying in {delay}s", flush=True)
            failures += 1
            sleep(delay)
