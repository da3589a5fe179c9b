"""The agent side: ask for a grant or spawn a sub-agent, signing with the agent's key.

``nhi-nac agent request --server URL --dir DIR zone=db --for 30m`` and
``nhi-nac agent spawn --server URL --dir DIR --name NAME [--scope K=V] --out CHILD_DIR``
read the agent's ``key.pem`` and ``cert.pem`` from ``DIR`` (written by ``nhi-nac
enroll``) and sign each request with that key (:mod:`nhi_nac.agent_auth`). A spawned
child's key is generated here and written, with its certificate, into ``CHILD_DIR``.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import pki
from nhi_nac.agent_auth import sign_request
from nhi_nac.enroll_client import http_json, trusted_root
from nhi_nac.errors import NhiError


def call(server: str, directory: str, method: str, path: str,
         body: Mapping[str, Any] | None = None, ca_file: str | None = None) -> Any:
    """One signed request to ``server``; the decoded JSON answer or NhiError."""
    if not server.startswith(("https://", "http://")):
        raise NhiError(f"--server must be an http:// or https:// URL, not {server!r}")
    try:
        key, cert = pki.read_credentials(directory)
    except (OSError, pki.PkiError, ValueError) as exc:
        raise NhiError(f"no agent credentials in {directory}: {exc}") from None
    raw = b"" if body is None else json.dumps(body).encode()
    url = server.rstrip("/") + path
    header = sign_request(key, cert, method, urllib.parse.urlsplit(url).path, raw)
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=raw if body is not None else None, method=method,
        headers={"Content-Type": "application/json", "Authorization": header})
    return http_json(req, trusted_root(directory, ca_file), "refused")


def request_grant(server: str, directory: str, label: str, duration: str,
                  ca_file: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = call(server, directory, "POST", "/agent/v1/grants",
                                  {"label": label, "duration": duration}, ca_file)
    return answer


def spawn(server: str, directory: str, name: str, scope: Mapping[str, str], out: str,
          lifetime: str | None = None, key_type: str = "p256",
          ca_file: str | None = None) -> dict[str, Any]:
    enrollment = pki.new_enrollment(key_type)
    body: dict[str, Any] = {"name": name, "scope": dict(scope),
                            "csr": enrollment.csr_pem.decode()}
    if lifetime:
        body["lifetime"] = lifetime
    answer: dict[str, Any] = call(server, directory, "POST", "/agent/v1/spawn", body, ca_file)
    bundle = answer["bundle"]
    pki.write_credentials(out, enrollment.key, bundle["certificate_pem"].encode(),
                          bundle["chain_pem"].encode(), bundle["ca_pem"].encode())
    return answer
