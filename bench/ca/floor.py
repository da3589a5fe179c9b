"""bench/ca floor: what nhi-nac's enrollment costs with nothing but HTTP and the CA's own
work, so a run can say how much of the server CPU per certificate is the stack itself.

    floor.py PORT TRUST_DOMAIN [--http-only]

Serves ``POST /pki/v1/enroll`` on 127.0.0.1:PORT with the same aiohttp version, the same
request body (``{"token", "csr"}``) and the same 201 reply members as ``nhi-nac serve``,
and does only this per request: parse the JSON body, parse the CSR, check it for the
workload named by its URI SAN (self-signature, key policy, names; ``pki.check_csr``),
sign a workload leaf from ``pki.CertificateIssuer``'s DER template, render the reply.

Left out, and what nhi-nac does there: the token (no lookup, nothing burned), governance
(no identity, owner or lifecycle read), key bindings, the database (no certificate row,
no audit record, no event, no commit), logging. A load client cannot tell it from the
service; it is NOT a server anyone should run, and never stores what it signs.
A fresh P-256 hierarchy for TRUST_DOMAIN is made at start, in memory.

``--http-only``: not even that; read the body, parse the JSON, and answer with one
certificate signed at start, rendered the same way (the HTTP stack's own share).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from aiohttp import web
from cryptography import x509

from pki import CertificateIssuer, create_hierarchy, parse_csr

MAX_BODY = 64 * 1024


def make_app(trust_domain: str, http_only: bool = False) -> web.Application:
    hierarchy = create_hierarchy(trust_domain, datetime.now(UTC))
    issuer = CertificateIssuer(hierarchy.issuing, trust_domain,
                               crl_url="http://127.0.0.1/pki/v1/crl",
                               ocsp_url="http://127.0.0.1/pki/v1/ocsp")
    chain = json.dumps(hierarchy.issuing.chain_pem.decode())
    root = json.dumps(hierarchy.issuing.root_pem.decode())
    prefix = f"spiffe://{trust_domain}/"

    canned = None

    async def enroll(request: web.Request) -> web.Response:
        nonlocal canned
        body = json.loads(await request.content.read(MAX_BODY))
        if canned is not None:
            return web.Response(body=canned, status=201, content_type="application/json")
        parsed = parse_csr(body["csr"].encode())
        san = parsed.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uri = san.value.get_values_for_type(x509.UniformResourceIdentifier)[0]
        kind, name = uri.removeprefix(prefix).split("/", 1)
        issued = issuer.issue_for_csr(parsed, kind, name, "workload", datetime.now(UTC))
        text = (
            f'{{"identity": {json.dumps(f"{kind}/{name}")}, '
            f'"certificate_pem": {json.dumps(issued.pem.decode())}, '
            f'"chain_pem": {chain}, "ca_pem": {root}, '
            f'"serial": {json.dumps(format(issued.serial, "x"))}, '
            f'"not_after": {json.dumps(issued.not_after.isoformat())}, '
            f'"profile": "workload"}}'
        )
        if http_only:
            canned = text.encode()  # every later request gets this one
        return web.Response(body=text.encode(), status=201, content_type="application/json")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/pki/v1/enroll", enroll)
    return app


if __name__ == "__main__":
    port, domain = int(sys.argv[1]), sys.argv[2]
    web.run_app(make_app(domain, "--http-only" in sys.argv[3:]), host="127.0.0.1", port=port, access_log=None,
                print=None, handle_signals=True)
