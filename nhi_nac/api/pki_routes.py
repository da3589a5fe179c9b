"""Enrollment, renewal, CA chain, CRL and OCSP over HTTP (``/pki/v1``).

These endpoints are not authenticated by API tokens: enrollment by a bootstrap token,
renewal by a request signed with the current certificate's key, and the CA chain, CRL
and OCSP are public by design (RFC 5280 §4.2.1.13, RFC 6960 Appendix A).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import urllib.parse
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.x509 import ocsp

from nhi_nac.api.bodies import read_json_body
from nhi_nac.api.routes import CA
from nhi_nac.ca_service import CaService, IssuedBundle
from nhi_nac.durations import parse_duration
from nhi_nac.errors import InvalidInput

_NONCE = x509.OCSPNonce
#: Largest enrollment/renewal/OCSP request body, in bytes.
MAX_PKI_BODY = 64 * 1024


async def _json_body(request: web.Request) -> dict[str, Any]:
    return (await read_json_body(request, MAX_PKI_BODY))[1]


@lru_cache(maxsize=4)
def _encoded_ca(chain_pem: str, ca_pem: str) -> str:
    """The chain and root members of a bundle, JSON-encoded once per CA rather than per
    certificate (they are most of the body and the same in every response)."""
    return f'"chain_pem": {json.dumps(chain_pem)}, "ca_pem": {json.dumps(ca_pem)}'


def _bundle_response(bundle: IssuedBundle) -> web.Response:
    """201 with the bundle as ``to_json`` would render it (same members, same values)."""
    body = (
        f'{{"identity": {json.dumps(bundle.identity)}, '
        f'"certificate_pem": {json.dumps(bundle.certificate_pem)}, '
        f"{_encoded_ca(bundle.chain_pem, bundle.ca_pem)}, "
        f'"serial": {json.dumps(bundle.serial)}, '
        f'"not_after": {json.dumps(bundle.not_after.isoformat())}, '
        f'"profile": {json.dumps(bundle.profile)}}}'
    )
    return web.Response(body=body.encode(), status=201, content_type="application/json")


def _validity(data: dict[str, Any]) -> Any:
    value = data.get("validity")
    return parse_duration(str(value)) if value else None


async def enroll(request: web.Request) -> web.Response:
    d = await _json_body(request)
    token, csr = d.get("token"), d.get("csr")
    if not isinstance(token, str) or not isinstance(csr, str):
        raise InvalidInput("token and csr (PEM) are required")
    bundle = await request.app[CA].enroll(token, csr.encode(), _validity(d))
    return _bundle_response(bundle)


async def renew(request: web.Request) -> web.Response:
    d = await _json_body(request)
    proof = d.get("proof")
    if not isinstance(proof, str):
        raise InvalidInput("proof is required")
    bundle = await request.app[CA].renew(proof.encode(), _validity(d))
    return _bundle_response(bundle)


def _pem(data: bytes) -> web.Response:
    return web.Response(body=data, content_type="application/pem-certificate-chain")


async def ca_pem(request: web.Request) -> web.Response:
    return _pem(request.app[CA].issuing_ca().root_pem)


async def chain_pem(request: web.Request) -> web.Response:
    return _pem(request.app[CA].issuing_ca().chain_pem)


def _cached(request: web.Request, body: bytes, content_type: str, this_update: dt.datetime,
            next_update: dt.datetime, etag: str) -> web.Response:
    """A response HTTP caches may keep until ``next_update`` (RFC 5019 §6.2: Last-Modified,
    Expires, ETag, ``Cache-Control: max-age, public, no-transform, must-revalidate``),
    or 304 Not Modified to a conditional GET (RFC 9110 §13) that already holds it."""
    now = request.app[CA].inventory.clock()
    max_age = max(0, int((next_update - now).total_seconds()))
    headers = {"ETag": etag, "Last-Modified": format_datetime(this_update, usegmt=True),
               "Expires": format_datetime(next_update, usegmt=True),
               "Cache-Control": f"max-age={max_age}, public, no-transform, must-revalidate"}
    if _not_modified(request, etag, this_update):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


def _not_modified(request: web.Request, etag: str, this_update: dt.datetime) -> bool:
    match = request.headers.get("If-None-Match")
    if match is not None:  # takes precedence over If-Modified-Since (RFC 9110 §13.1.3)
        return match.strip() == "*" or etag in (t.strip().removeprefix("W/")
                                                for t in match.split(","))
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        return this_update <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


async def crl_der(request: web.Request) -> web.Response:
    crl = await request.app[CA].current_crl()
    return _cached(request, crl.der, "application/pkix-crl", crl.this_update,
                   crl.next_update, crl.etag)


async def crl_pem(request: web.Request) -> web.Response:
    crl = await request.app[CA].current_crl()
    return _cached(request, crl.pem, "application/x-pem-file", crl.this_update,
                   crl.next_update, crl.etag.replace('"', '"pem-', 1))


async def ocsp_post(request: web.Request) -> web.Response:
    raw = await request.content.read(MAX_PKI_BODY + 1)
    if len(raw) > MAX_PKI_BODY:
        raise InvalidInput("OCSP request too large")
    der = await request.app[CA].ocsp_response(raw)
    return web.Response(body=der, content_type="application/ocsp-response")


async def ocsp_get(request: web.Request) -> web.Response:
    """RFC 6960 Appendix A.1 GET; a good answer to a request without a nonce is the same
    for everyone until its nextUpdate, so it carries the RFC 5019 caching headers."""
    component = urllib.parse.unquote(request.match_info["req"])
    try:
        raw = base64.b64decode(component, validate=True)
    except ValueError:
        raw = b""
    der = await request.app[CA].ocsp_response(raw)
    parsed = ocsp.load_der_ocsp_response(der)
    if parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and not any(
            isinstance(e.value, _NONCE) for e in parsed.extensions):
        next_update = parsed.next_update_utc
        if next_update is not None:
            return _cached(request, der, "application/ocsp-response", parsed.this_update_utc,
                           next_update, '"' + hashlib.sha256(der).hexdigest()[:32] + '"')
    return web.Response(body=der, content_type="application/ocsp-response",
                        headers={"Cache-Control": "no-store"})


def add_pki_routes(app: web.Application, ca: CaService) -> None:
    app[CA] = ca
    r = app.router
    r.add_post("/pki/v1/enroll", enroll)
    r.add_post("/pki/v1/renew", renew)
    r.add_get("/pki/v1/ca.pem", ca_pem)
    r.add_get("/pki/v1/chain.pem", chain_pem)
    r.add_get("/pki/v1/crl", crl_der)
    r.add_get("/pki/v1/crl.pem", crl_pem)
    r.add_post("/pki/v1/ocsp", ocsp_post)
    r.add_get("/pki/v1/ocsp/{req:.+}", ocsp_get)


