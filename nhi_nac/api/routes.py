"""The /api/v1 routes, declared once: the table drives both aiohttp and the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nhi_nac import apitokens
from nhi_nac.agents import parse_ceiling
from nhi_nac.api.agent_routes import AGENTS
from nhi_nac.apitokens import Principal, Role
from nhi_nac.bootstrap_tokens import create_bootstrap_token
from nhi_nac.ca_service import CaService
from nhi_nac.domain import IdentityRef, parse_scope
from nhi_nac.durations import parse_duration
from nhi_nac.enforcement import coa_status
from nhi_nac.errors import InvalidInput, NotFound
from nhi_nac.governance import Governance
from nhi_nac.importer import import_identities, parse_import
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.report import RENDERERS, compliance_report
from nhi_nac.segment_service import SegmentMapRefused, SegmentService, problem_json
from nhi_nac.views import to_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INVENTORY: web.AppKey[Inventory] = web.AppKey("inventory", Inventory)
GOVERNANCE: web.AppKey[Governance] = web.AppKey("governance", Governance)
SEGMENTS: web.AppKey[SegmentService] = web.AppKey("segments", SegmentService)
CA: web.AppKey[CaService] = web.AppKey("ca", CaService)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)

READ_ROLES = frozenset(Role)
ADMIN = frozenset({Role.ADMIN})
ENROLLERS = frozenset({Role.ADMIN, Role.ENROLLER})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: frozenset[Role]
    body: dict[str, Any] | None = None
    query: tuple[str, ...] = field(default=())
    ok: int = 200


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(to_json(data), status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def _actor(request: web.Request) -> str:
    return request[PRINCIPAL].actor


def _ref(request: web.Request) -> IdentityRef:
    return IdentityRef.parse(f"{request.match_info['kind']}/{request.match_info['name']}")


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer") from None


def _str(data: dict[str, Any], key: str, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string")
    if required and not value:
        raise InvalidInput(f"{key} is required")
    return value


async def list_owners(request: web.Request) -> web.Response:
    return _json(await request.app[INVENTORY].list_owners())


async def add_owner(request: web.Request) -> web.Response:
    d = await _body(request)
    owner = await request.app[INVENTORY].add_owner(
        _str(d, "email", True), _str(d, "name", True), _str(d, "team"), actor=_actor(request))
    return _json(owner, 201)


async def offboard_owner(request: web.Request) -> web.Response:
    d = await _body(request) if request.can_read_body else {}
    report = await request.app[INVENTORY].offboard_owner(
        request.match_info["email"], _str(d, "reassign_to") or None, actor=_actor(request))
    return _json(report)


async def list_identities(request: web.Request) -> web.Response:
    q = request.query
    scope = parse_scope(q.getall("scope", []))
    rows = await request.app[INVENTORY].list_identities(
        kind=q.get("kind"), scope=scope, status=q.get("status"), owner=q.get("owner"),
        limit=_int(request, "limit", 1000), offset=_int(request, "offset", 0))
    return _json(rows)


async def add_identity(request: web.Request) -> web.Response:
    d = await _body(request)
    scope = d.get("scope") or {}
    if isinstance(scope, list):
        scope = parse_scope(scope)
    macs = d.get("macs") or []
    if not isinstance(scope, dict) or not isinstance(macs, list):
        raise InvalidInput("scope must be an object and macs a list")
    allow_mab = d.get("allow_mab", False)
    if not isinstance(allow_mab, bool):
        raise InvalidInput("allow_mab must be true or false")
    expires = _str(d, "expires_at")
    try:
        expires_at = dt.datetime.fromisoformat(expires) if expires else None
    except ValueError:
        raise InvalidInput("expires_at must be an ISO 8601 timestamp with a zone") from None
    new = NewIdentity.build(
        kind=_str(d, "kind", True), name=_str(d, "name", True), owner=_str(d, "owner") or None,
        scope=scope, macs=[str(m) for m in macs], parent=_str(d, "parent") or None,
        allow_mab=allow_mab, description=_str(d, "description"), expires_at=expires_at)
    return _json(await request.app[INVENTORY].add_identity(new, actor=_actor(request)), 201)


async def show_identity(request: web.Request) -> web.Response:
    inventory, ref = request.app[INVENTORY], _ref(request)
    view = to_json(await inventory.get_identity(ref))
    since, reason = await inventory.quarantine_state(ref)
    return _json({**view, "quarantined_at": to_json(since), "quarantine_reason": reason})


def _status_change(status: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        view = await request.app[INVENTORY].set_status(_ref(request), status,
                                                       actor=_actor(request))
        return _json(view)
    return handler


async def list_nas(request: web.Request) -> web.Response:
    return _json(await request.app[INVENTORY].list_nas())


async def add_nas(request: web.Request) -> web.Response:
    d = await _body(request)
    require_ma = d.get("require_message_authenticator", True)
    if not isinstance(require_ma, bool):
        raise InvalidInput("require_message_authenticator must be true or false")
    nas = await request.app[INVENTORY].add_nas(
        _str(d, "name", True), _str(d, "address", True), _str(d, "secret", True),
        _str(d, "vendor") or "generic", _str(d, "site"), require_ma, actor=_actor(request))
    return _json(nas, 201)


async def remove_nas(request: web.Request) -> web.Response:
    await request.app[INVENTORY].remove_nas(request.match_info["name"], actor=_actor(request))
    return web.Response(status=204)


async def import_file(request: web.Request) -> web.Response:
    ctype = request.content_type
    if ctype not in ("application/json", "text/csv"):
        raise InvalidInput("import body must be application/json or text/csv")
    name = "request.json" if ctype == "application/json" else "request.csv"
    owners, rows = parse_import(await request.read(), name)
    report = await import_identities(request.app[INVENTORY], owners, rows,
                                     actor=_actor(request), source="api")
    return _json(report, 201)


async def audit_list(request: web.Request) -> web.Response:
    entries = await request.app[INVENTORY].audit_entries(
        limit=_int(request, "limit", 50), target=request.query.get("target"))
    return _json(entries)


async def audit_verify(request: web.Request) -> web.Response:
    verdict = await request.app[INVENTORY].verify_audit()
    return _json({"ok": verdict.ok, "records": verdict.records, "bad_seq": verdict.bad_seq,
                  "reason": verdict.reason, "message": verdict.describe()},
                 200 if verdict.ok else 409)


async def list_api_tokens(request: web.Request) -> web.Response:
    return _json(await apitokens.list_tokens(request.app[INVENTORY]))


async def create_api_token(request: web.Request) -> web.Response:
    d = await _body(request)
    token = await apitokens.create_token(request.app[INVENTORY], _str(d, "name", True),
                                         _str(d, "role", True), actor=_actor(request))
    return _json({"name": d["name"], "role": d["role"], "token": token}, 201)


async def revoke_api_token(request: web.Request) -> web.Response:
    await apitokens.revoke_token(request.app[INVENTORY], request.match_info["name"],
                                 actor=_actor(request))
    return web.Response(status=204)


async def create_bootstrap(request: web.Request) -> web.Response:
    d = await _body(request)
    ttl = parse_duration(_str(d, "ttl") or "15m")
    token, expires = await create_bootstrap_token(
        request.app[INVENTORY], IdentityRef.parse(_str(d, "identity", True)), ttl,
        actor=_actor(request))
    return _json({"identity": d["identity"], "token": token, "expires_at": expires}, 201)


async def governance_scan(request: web.Request) -> web.Response:
    return _json(await request.app[GOVERNANCE].scan())


async def list_findings(request: web.Request) -> web.Response:
    state = request.query.get("state", "open")
    rows = await request.app[GOVERNANCE].findings(request.query.get("type"),
                                              None if state == "all" else state)
    return _json(rows)


def _finding_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise InvalidInput("finding id must be an integer") from None


async def show_finding(request: web.Request) -> web.Response:
    return _json(await request.app[GOVERNANCE].show(_finding_id(request)))


async def ack_finding(request: web.Request) -> web.Response:
    return _json(await request.app[GOVERNANCE].acknowledge(_finding_id(request),
                                                           actor=_actor(request)))


_REPORT_TYPES = {"json": "application/json", "csv": "text/csv", "html": "text/html"}


async def report_compliance(request: web.Request) -> web.Response:
    fmt = request.query.get("format", "json")
    if fmt not in RENDERERS:
        raise InvalidInput("format must be json, csv or html")
    report = await compliance_report(request.app[INVENTORY].db,
                                     request.query.get("framework", ""),
                                     request.app[INVENTORY].clock())
    return web.Response(text=RENDERERS[fmt](report), content_type=_REPORT_TYPES[fmt])


async def _map_text(request: web.Request) -> str:
    data = await request.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("segment map must be UTF-8 text") from None


def _name(request: web.Request) -> str:
    return request.query.get("filename", "request.yaml")[:200]


async def segments_current(request: web.Request) -> web.Response:
    svc = request.app[SEGMENTS]
    current = await svc.current_text()
    if current is None:
        raise NotFound("no segment map applied yet")
    return _json({"version": current[0], "text": current[1],
                  "identities_per_segment": await svc.identities_per_segment()})


async def segments_validate(request: web.Request) -> web.Response:
    v = await request.app[SEGMENTS].validate(await _map_text(request), _name(request))
    return _json({"ok": v.ok, "problems": [problem_json(p) for p in v.problems]})


async def segments_diff(request: web.Request) -> web.Response:
    p = await request.app[SEGMENTS].preview(await _map_text(request), _name(request))
    if p.diff is None:
        raise SegmentMapRefused(p.validation.problems)
    return _json({"current_version": p.current_version, "summary": p.lines(),
                  "moved": sorted(p.diff.moved), "to_fallback": p.diff.to_fallback,
                  "transitions": [{"from_vlan": a, "to_vlan": b, "identities": n}
                                  for (a, b), n in p.diff.transitions.items()],
                  "sessions_per_nas": p.sessions_per_nas,
                  "problems": [problem_json(x) for x in p.validation.problems]})


async def segments_apply(request: web.Request) -> web.Response:
    info = await request.app[SEGMENTS].apply(await _map_text(request), _name(request),
                                             author=_actor(request),
                                             comment=request.query.get("comment", ""))
    return _json(info, 201)


async def segments_history(request: web.Request) -> web.Response:
    return _json(await request.app[SEGMENTS].history())


async def segments_rollback(request: web.Request) -> web.Response:
    try:
        version = int(request.match_info["version"])
    except ValueError:
        raise InvalidInput("version must be an integer") from None
    return _json(await request.app[SEGMENTS].rollback(version, author=_actor(request)), 201)


def _ca(request: web.Request) -> CaService:
    ca = request.app.get(CA)
    if ca is None:
        raise NotFound("this server has no CA configured")
    return ca


async def list_certificates(request: web.Request) -> web.Response:
    ident = request.query.get("identity")
    within = request.query.get("expiring_within")
    rows = await _ca(request).certificates(
        IdentityRef.parse(ident) if ident else None,
        parse_duration(within) if within else None, status=request.query.get("status"))
    return _json(rows)


async def show_certificate(request: web.Request) -> web.Response:
    view, pem = await _ca(request).certificate(request.match_info["serial"])
    return _json({**to_json(view), "pem": pem})


async def revoke_certificate(request: web.Request) -> web.Response:
    d = await _body(request) if request.can_read_body else {}
    revoked = await _ca(request).revoke(serial=request.match_info["serial"],
                                           reason=_str(d, "reason") or "unspecified",
                                           actor=_actor(request))
    return _json({"revoked": revoked})


async def release_certificate(request: web.Request) -> web.Response:
    serial = await _ca(request).release(request.match_info["serial"], actor=_actor(request))
    return _json({"released": [serial]})


async def revoke_identity_certificates(request: web.Request) -> web.Response:
    d = await _body(request) if request.can_read_body else {}
    revoked = await _ca(request).revoke(identity=_ref(request),
                                        reason=_str(d, "reason") or "unspecified",
                                        actor=_actor(request))
    return _json({"revoked": revoked})


async def release_identity_certificates(request: web.Request) -> web.Response:
    released = await _ca(request).release_identity(_ref(request), actor=_actor(request))
    return _json({"released": released})


async def quarantine_identity(request: web.Request) -> web.Response:
    d = await _body(request) if request.can_read_body else {}
    done = await request.app[INVENTORY].quarantine(
        _ref(request), _str(d, "reason") or "quarantined by an admin", actor=_actor(request))
    return _json({"quarantined": done})


async def release_identity(request: web.Request) -> web.Response:
    done = await request.app[INVENTORY].release(_ref(request), actor=_actor(request))
    return _json({"released": done})


async def set_ceiling(request: web.Request) -> web.Response:
    d = await _body(request)
    ceiling = d.get("ceiling")
    if not isinstance(ceiling, dict):
        raise InvalidInput("ceiling must be an object {label: [values]}")
    parsed = await request.app[AGENTS].set_ceiling(_ref(request), parse_ceiling(ceiling),
                                                   actor=_actor(request))
    return _json({"identity": str(_ref(request)), "ceiling": parsed})


async def agent_tree(request: web.Request) -> web.Response:
    return _json(await request.app[AGENTS].tree(_ref(request)))


async def list_grants(request: web.Request) -> web.Response:
    ident = request.query.get("identity")
    return _json(await request.app[AGENTS].grants(
        IdentityRef.parse(ident) if ident else None, request.query.get("status") or None,
        _int(request, "limit", 1000)))


def _decide(approve: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        try:
            grant_id = int(request.match_info["id"])
        except ValueError:
            raise NotFound("no such grant") from None
        return _json(await request.app[AGENTS].decide(grant_id, approve,
                                                      actor=_actor(request)))
    return handler


async def list_coa(request: web.Request) -> web.Response:
    return _json(await coa_status(request.app[INVENTORY].db, _int(request, "limit", 100)))


_OWNER = {"email": "string", "name": "string", "team": "string"}
_IDENTITY = {"kind": "string", "name": "string", "owner": "string", "scope": "object",
             "macs": "array", "parent": "string", "allow_mab": "boolean", "description": "string",
             "expires_at": "string"}
_NAS = {"name": "string", "address": "string", "secret": "string", "vendor": "string",
        "site": "string", "require_message_authenticator": "boolean"}
_IDENT_PATH = "/api/v1/identities/{kind}/{name}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/owners", list_owners, "List owners", READ_ROLES),
    Route("POST", "/api/v1/owners", add_owner, "Add an owner", ADMIN, _OWNER, ok=201),
    Route("POST", "/api/v1/owners/{email}/offboard", offboard_owner,
          "Mark an owner departed; report or reassign what it leaves", ADMIN,
          {"reassign_to": "string"}),
    Route("GET", "/api/v1/identities", list_identities, "List identities", READ_ROLES,
          query=("kind", "status", "owner", "scope", "limit", "offset")),
    Route("POST", "/api/v1/identities", add_identity, "Add an identity (owner required)",
          ADMIN, _IDENTITY, ok=201),
    Route("GET", _IDENT_PATH, show_identity, "Show one identity", READ_ROLES),
    Route("POST", _IDENT_PATH + "/suspend", _status_change("suspended"), "Suspend", ADMIN),
    Route("POST", _IDENT_PATH + "/reactivate", _status_change("active"), "Reactivate", ADMIN),
    Route("POST", _IDENT_PATH + "/retire", _status_change("retired"), "Retire (final)", ADMIN),
    Route("GET", "/api/v1/nas", list_nas, "List NAS clients", READ_ROLES),
    Route("POST", "/api/v1/nas", add_nas, "Add a NAS client", ADMIN, _NAS, ok=201),
    Route("DELETE", "/api/v1/nas/{name}", remove_nas, "Remove a NAS client", ADMIN, ok=204),
    Route("POST", "/api/v1/import", import_file, "Bulk import (CSV or JSON), all or nothing",
          ADMIN, {"identities": "array", "owners": "array"}, ok=201),
    Route("GET", "/api/v1/audit", audit_list, "Latest audit records", READ_ROLES,
          query=("limit", "target")),
    Route("GET", "/api/v1/audit/verify", audit_verify, "Verify the audit hash chain",
          READ_ROLES),
    Route("POST", "/api/v1/bootstrap-tokens", create_bootstrap,
          "Mint a single-use enrollment token for an identity", ENROLLERS,
          {"identity": "string", "ttl": "string"}, ok=201),
    Route("POST", "/api/v1/governance/scan", governance_scan, "Run a governance scan", ADMIN),
    Route("GET", "/api/v1/findings", list_findings, "List findings", READ_ROLES,
          query=("type", "state")),
    Route("GET", "/api/v1/findings/{id}", show_finding, "Show a finding", READ_ROLES),
    Route("POST", "/api/v1/findings/{id}/ack", ack_finding, "Acknowledge a finding", ADMIN),
    Route("GET", "/api/v1/reports/compliance", report_compliance,
          "Compliance evidence for a framework", READ_ROLES, query=("framework", "format")),
    Route("GET", "/api/v1/segments", segments_current, "The current segment map", READ_ROLES),
    Route("POST", "/api/v1/segments/validate", segments_validate,
          "Validate a segment map (YAML body)", READ_ROLES, query=("filename",)),
    Route("POST", "/api/v1/segments/diff", segments_diff,
          "Preview a segment map: who moves, sessions touched", READ_ROLES,
          query=("filename",)),
    Route("POST", "/api/v1/segments/apply", segments_apply, "Apply a segment map", ADMIN,
          query=("filename", "comment"), ok=201),
    Route("GET", "/api/v1/segments/history", segments_history, "Applied versions",
          READ_ROLES),
    Route("POST", "/api/v1/segments/rollback/{version}", segments_rollback,
          "Re-apply an earlier version", ADMIN, ok=201),
    Route("GET", "/api/v1/certificates", list_certificates, "Issued certificates", READ_ROLES,
          query=("identity", "expiring_within", "status")),
    Route("GET", "/api/v1/certificates/{serial}", show_certificate, "One certificate",
          READ_ROLES),
    Route("POST", "/api/v1/certificates/{serial}/revoke", revoke_certificate,
          "Revoke a certificate (RFC 5280 reason)", ADMIN, {"reason": "string"}),
    Route("POST", "/api/v1/certificates/{serial}/release", release_certificate,
          "Take a certificate off hold (certificateHold)", ADMIN),
    Route("POST", _IDENT_PATH + "/revoke-certificates", revoke_identity_certificates,
          "Revoke every active certificate of an identity", ADMIN, {"reason": "string"}),
    Route("POST", _IDENT_PATH + "/release-certificates", release_identity_certificates,
          "Take the held certificates of an identity and its descendants off hold", ADMIN),
    Route("POST", _IDENT_PATH + "/quarantine", quarantine_identity,
          "Quarantine an identity and its descendants (fallback segment + CoA)", ADMIN,
          {"reason": "string"}),
    Route("POST", _IDENT_PATH + "/release", release_identity,
          "Lift a quarantine (the identity and its descendants)", ADMIN),
    Route("PUT", _IDENT_PATH + "/ceiling", set_ceiling,
          "Set an agent's owner-approved ceiling {label: [values]}", ADMIN,
          {"ceiling": "object"}),
    Route("GET", _IDENT_PATH + "/tree", agent_tree,
          "An agent's family with scopes, ceilings, grants and lifetimes", READ_ROLES),
    Route("GET", "/api/v1/agent-grants", list_grants, "Agents' dynamic grants",
          READ_ROLES, query=("identity", "status", "limit")),
    Route("POST", "/api/v1/agent-grants/{id}/approve", _decide(True),
          "Approve a pending grant (the owner's decision)", ADMIN),
    Route("POST", "/api/v1/agent-grants/{id}/deny", _decide(False),
          "Deny a pending grant", ADMIN),
    Route("GET", "/api/v1/coa", list_coa, "CoA/Disconnect requests and their answers",
          READ_ROLES, query=("limit",)),
    Route("GET", "/api/v1/api-tokens", list_api_tokens, "List API tokens", ADMIN),
    Route("POST", "/api/v1/api-tokens", create_api_token, "Create an API token", ADMIN,
          {"name": "string", "role": "string"}, ok=201),
    Route("DELETE", "/api/v1/api-tokens/{name}", revoke_api_token, "Revoke an API token",
          ADMIN, ok=204),
)
