"""Enrollment, renewal, CA chain, CRL and OCSP over HTTP (``/pki/v1``).

These endpoints are not authenticated by API tokens: enrollment by a bootstrap token,
renewal by a request signed with the current certificate's key, and the CA chain, CRL
and OCSP are public by design (RFC 5280 §4.2.1.13, RFC 6960 Appendix A).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aiohttp import web

from nhi_nac.api.bodies import read_json_body
from nhi_nac.api.routes import CA
from nhi_nac.ca_service import CaService, IssuedBundle
from nhi_nac.durations import parse_duration
from nhi_nac.errors import InvalidInput

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
    issuer = request.app[CA]._issuer()
    return _pem(issuer.ca.root_pem)


async def chain_pem(request: web.Request) -> web.Response:
    return _pem(request.app[CA]._issuer().ca.chain_pem)


async def crl_der(request: web.Request) -> web.Response:
    der, _ = await request.app[CA].current_crl()
    return web.Response(body=der, content_type="application/pkix-crl")


async def crl_pem(request: web.Request) -> web.Response:
    _, pem = await request.app[CA].current_crl()
    return web.Response(body=pem, content_type="application/x-pem-file")


async def ocsp_post(request: web.Request) -> web.Response:
    raw = await request.content.read(MAX_PKI_BODY + 1)
    if len(raw) > MAX_PKI_BODY:
        raise InvalidInput("OCSP request too large")
    der = await request.app[CA].ocsp_response(raw)
    return web.Response(body=der, content_type="application/ocsp-response")


async def ocsp_get(request: web.Request) -> web.Response:
    import base64
    import urllib.parse

    component = urllib.parse.unquote(request.match_info["req"])
    try:
        raw = base64.b64decode(component, validate=True)
    except ValueError:
        raw = b""
    der = await request.app[CA].ocsp_response(raw)
    return web.Response(body=der, content_type="application/ocsp-response")


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


