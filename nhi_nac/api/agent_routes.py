"""What an AI agent itself calls (``/agent/v1``), authenticated by its certificate.

No API token: each request carries ``Authorization: NHI-Agent <proof>``, signed with
the key of the agent's current certificate (:mod:`nhi_nac.agent_auth`). The caller's
identity, the check of its certificate and the change it asks for run in one
transaction, so a refused request leaves nothing behind.

- ``POST /agent/v1/grants`` ``{"label": "zone=db", "duration": "30m"}``: ask for a
  time-boxed extra scope label (201 with the grant: ``active`` or ``pending``);
- ``GET /agent/v1/grants``: the caller's grants;
- ``POST /agent/v1/spawn`` ``{"name", "scope", "csr", "lifetime"?}``: create a
  sub-agent and its certificate (201 with the child's certificate bundle).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nhi_nac.agents import AgentService
from nhi_nac.api.bodies import read_json_body
from nhi_nac.errors import InvalidInput
from nhi_nac.views import to_json

AGENTS: web.AppKey[AgentService] = web.AppKey("agents", AgentService)
#: Largest agent request body, in bytes (a spawn carries one CSR).
MAX_AGENT_BODY = 32 * 1024


async def _read(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    if request.method == "GET":
        raw = await request.content.read(MAX_AGENT_BODY + 1)
        if len(raw) > MAX_AGENT_BODY:
            raise InvalidInput(f"request body larger than {MAX_AGENT_BODY} bytes")
        return raw, {}
    return await read_json_body(request, MAX_AGENT_BODY)


async def request_grant(request: web.Request) -> web.Response:
    service = request.app[AGENTS]
    raw, data = await _read(request)
    label, duration = data.get("label"), data.get("duration")
    if not isinstance(label, str) or not isinstance(duration, str):
        raise InvalidInput("label (KEY=VALUE) and duration (e.g. 30m) are required")
    grant = await service.signed_grant_request(
        request.headers.get("Authorization", ""), method=request.method, path=request.path,
        body=raw, label=label, duration=duration, now=service.inventory.clock())
    return web.json_response(to_json(grant), status=201)


async def own_grants(request: web.Request) -> web.Response:
    service = request.app[AGENTS]
    raw, _ = await _read(request)
    ref = await service.signed_identity(
        request.headers.get("Authorization", ""), method=request.method, path=request.path,
        body=raw, now=service.inventory.clock())
    return web.json_response(to_json(await service.grants(ref)))


async def spawn(request: web.Request) -> web.Response:
    service = request.app[AGENTS]
    raw, data = await _read(request)
    name, scope, csr = data.get("name"), data.get("scope", {}), data.get("csr")
    lifetime = data.get("lifetime")
    if not isinstance(name, str) or not isinstance(csr, str):
        raise InvalidInput("name and csr (PEM) are required")
    if not isinstance(scope, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in scope.items()):
        raise InvalidInput("scope must be an object of string labels")
    if lifetime is not None and not isinstance(lifetime, str):
        raise InvalidInput("lifetime is a duration such as 30m")
    result = await service.signed_spawn(
        request.headers.get("Authorization", ""), method=request.method, path=request.path,
        body=raw, name=name, scope=scope, csr_pem=csr.encode(), lifetime=lifetime,
        now=service.inventory.clock())
    return web.json_response(to_json(result), status=201)


def add_agent_routes(app: web.Application, service: AgentService) -> None:
    app[AGENTS] = service
    r = app.router
    r.add_post("/agent/v1/grants", request_grant)
    r.add_get("/agent/v1/grants", own_grants)
    r.add_post("/agent/v1/spawn", spawn)
