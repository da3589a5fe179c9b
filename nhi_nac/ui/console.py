"""Web console: server-rendered pages (Jinja2, autoescaped) with a little script.

Security model:
- log in with an API token; the session cookie (random, stored hashed, 8 h) is
  ``HttpOnly; Secure; SameSite=Strict; Path=/ui``; the role is the token's role;
- every POST carries the session's CSRF token and must come from this origin
  (``Origin``/``Referer`` checked), so a CSRF-less or cross-site post is refused;
- a strict Content-Security-Policy (no inline script, no third-party origin);
- an unauthenticated request to any page redirects to the login page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web
from sqlalchemy import delete, select

import pki
from nhi_nac import apitokens
from nhi_nac.api.routes import CA, GOVERNANCE, INVENTORY, SEGMENTS
from nhi_nac.apitokens import Principal, Role
from nhi_nac.domain import IdentityKind, IdentityRef, parse_scope
from nhi_nac.errors import NhiError, Unauthorized
from nhi_nac.events import ADMISSIONS_EVENT
from nhi_nac.report import FRAMEWORKS, RENDERERS, compliance_report
from nhi_nac.segment_service import SegmentMapRefused, problem_json
from nhi_nac.storage.models import (
    Admission,
    AgentGrant,
    Identity,
    OutboxEvent,
    RadiusSession,
    UiSession,
)

COOKIE = "nhi_session"
LOGIN_COOKIE = "nhi_login_csrf"
SESSION_LIFETIME = dt.timedelta(hours=8)
#: Seconds one live-admissions stream stays open before the browser reconnects.
STREAM_MAX_SECONDS = 3600
STREAM_POLL_SECONDS = 0.5
LIST_LIMIT = 500
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_env = jinja2.Environment(loader=jinja2.PackageLoader("nhi_nac", "ui/templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Session:
    def __init__(self, principal: Principal, csrf: str) -> None:
        self.principal = principal
        self.csrf = csrf

    @property
    def is_admin(self) -> bool:
        return self.principal.role is Role.ADMIN


SESSION: web.RequestKey[Session] = web.RequestKey("ui_session", Session)


def render(request: web.Request, template: str, status: int = 200,
           **context: Any) -> web.Response:
    session = request.get(SESSION)
    ctx = {"principal": session.principal if session else None,
           "csrf": session.csrf if session else "", "message": request.query.get("msg"),
           "error": None, "is_admin": bool(session and session.is_admin), **context}
    return web.Response(text=_env.get_template(template).render(**ctx),
                        content_type="text/html", status=status)


def _same_origin(request: web.Request) -> bool:
    """A POST must name this server as its Origin (or, failing that, its Referer)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.scheme}://{request.host}"


async def _load_session(request: web.Request) -> Session | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 100:
        return None
    inv = request.app[INVENTORY]
    async with inv.db.read() as s:
        row = await s.get(UiSession, _digest(cookie))
    if row is None or row.expires_at <= inv.clock():
        return None
    return Session(Principal(row.token_name, Role(row.role)), row.csrf)


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/ui"):
        return await handler(request)
    public = request.path in ("/ui/login",) or request.path.startswith("/ui/static/")
    if not public:
        session = await _load_session(request)
        if session is None:
            target = quote(request.path_qs, safe="")
            raise web.HTTPSeeOther(f"/ui/login?next={target}")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            token = str(form.get("csrf", ""))
            if not _same_origin(request) or not hmac.compare_digest(token, session.csrf):
                return web.Response(status=403, text="CSRF check failed: form refused")
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _admin(request: web.Request) -> Session:
    session = request[SESSION]
    if not session.is_admin:
        raise web.HTTPForbidden(text="your role may not change anything")
    return session


# -- login / logout ----------------------------------------------------------------------

async def login_page(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", csrf=token, next=request.query.get("next", "/ui/"))
    resp.set_cookie(LOGIN_COOKIE, token, httponly=True, secure=True, samesite="Strict",
                    path="/ui/login", max_age=600)
    return resp


def _safe_next(target: str) -> str:
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if (not _same_origin(request) or not expected
            or not hmac.compare_digest(str(form.get("csrf", "")), expected)):
        return web.Response(status=403, text="CSRF check failed: form refused")
    inv = request.app[INVENTORY]
    try:
        principal = await apitokens.authenticate(inv, str(form.get("token", "")).strip())
    except Unauthorized:
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", status=401, csrf=token,
                      next=str(form.get("next", "/ui/")), error="Invalid or revoked API token.")
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, secure=True, samesite="Strict",
                        path="/ui/login", max_age=600)
        return resp
    cookie = secrets.token_urlsafe(32)
    now = inv.clock()
    async with inv.db.transaction() as s:
        await s.execute(delete(UiSession).where(UiSession.expires_at <= now))
        s.add(UiSession(id_hash=_digest(cookie), token_name=principal.name,
                        role=principal.role.value, csrf=secrets.token_urlsafe(32),
                        created_at=now, expires_at=now + SESSION_LIFETIME))
    resp = web.HTTPSeeOther(_safe_next(str(form.get("next", "/ui/"))))
    resp.set_cookie(COOKIE, cookie, httponly=True, secure=True, samesite="Strict", path="/ui",
                    max_age=int(SESSION_LIFETIME.total_seconds()))
    resp.del_cookie(LOGIN_COOKIE, path="/ui/login")
    raise resp


async def logout(request: web.Request) -> web.Response:
    inv = request.app[INVENTORY]
    async with inv.db.transaction() as s:
        await s.execute(delete(UiSession).where(
            UiSession.id_hash == _digest(request.cookies.get(COOKIE, ""))))
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(COOKIE, path="/ui")
    raise resp


# -- pages -------------------------------------------------------------------------------

async def overview(request: web.Request) -> web.Response:
    inv = request.app[INVENTORY]
    report = await compliance_report(inv.db, "soc2", inv.clock())
    return render(request, "overview.html", ev=report.evidence)


async def identities(request: web.Request) -> web.Response:
    q = {k: request.query.get(k, "") for k in ("kind", "status", "owner", "scope")}
    error, rows = None, []
    try:
        rows = await request.app[INVENTORY].list_identities(
            kind=q["kind"] or None, status=q["status"] or None, owner=q["owner"] or None,
            scope=parse_scope(q["scope"].split()) if q["scope"] else None, limit=LIST_LIMIT)
    except NhiError as exc:
        error = exc.message
    return render(request, "identities.html", rows=rows, q=q, error=error,
                  kinds=[k.value for k in IdentityKind], limit=LIST_LIMIT)


def _ref(request: web.Request) -> IdentityRef:
    return IdentityRef.parse(f"{request.match_info['kind']}/{request.match_info['name']}")


async def identity(request: web.Request) -> web.Response:
    ref = _ref(request)
    try:
        view = await request.app[INVENTORY].get_identity(ref)
    except NhiError as exc:
        return render(request, "identities.html", status=exc.status, rows=[], error=exc.message,
                      q={"kind": "", "status": "", "owner": "", "scope": ""},
                      kinds=[k.value for k in IdentityKind], limit=LIST_LIMIT)
    findings = [f for f in await request.app[GOVERNANCE].findings() if f.subject == str(ref)]
    async with request.app[INVENTORY].db.read() as s:
        sessions = (await s.scalars(select(RadiusSession).where(
            RadiusSession.identity == str(ref)).order_by(RadiusSession.id.desc())
            .limit(20))).all()
        recent = (await s.scalars(select(Admission).where(Admission.identity == str(ref))
                                  .order_by(Admission.id.desc()).limit(20))).all()
        children = [f"{k}/{n}" for k, n in (await s.execute(
            select(Identity.kind, Identity.name).where(Identity.parent_id == select(
                Identity.id).where(Identity.kind == ref.kind.value,
                                   Identity.name == ref.name).scalar_subquery())
            .order_by(Identity.kind, Identity.name))).all()]
        quarantined_at, quarantine_reason, ceiling = (await s.execute(
            select(Identity.quarantined_at, Identity.quarantine_reason, Identity.ceiling)
            .where(Identity.kind == ref.kind.value, Identity.name == ref.name))).one()
        grants = [(g.id, f"{g.key}={g.value}", g.status, g.expires_at, g.decided_by)
                  for g in (await s.scalars(select(AgentGrant).join(
                      Identity, Identity.id == AgentGrant.identity_id).where(
                      Identity.kind == ref.kind.value, Identity.name == ref.name)
                      .order_by(AgentGrant.id.desc()).limit(20))).all()]
    actions = [("suspend", "Suspend") if view.status == "active" else ("reactivate",
                                                                       "Reactivate"),
               ("release", "Release from quarantine") if quarantined_at else
               ("quarantine", "Quarantine"),
               ("retire", "Retire")]
    revocable = CA in request.app and any(c.type == "certificate" and c.status == "active"
                                          for c in view.credentials)
    held = CA in request.app and any(
        c.type == "certificate" and c.revocation_reason == "certificateHold"
        for c in view.credentials)
    return render(request, "identity.html", v=view, findings=findings, actions=actions,
                  sessions=sessions, admissions=[_admission_json(a) for a in recent],
                  children=children, quarantined_at=quarantined_at,
                  quarantine_reason=quarantine_reason, ceiling=ceiling, grants=grants,
                  revocable=revocable, held=held, reasons=list(pki.REASONS))


_STATUS_OF = {"suspend": "suspended", "reactivate": "active", "retire": "retired"}


async def identity_action(request: web.Request) -> web.Response:
    session = _admin(request)
    action = request.match_info["action"]
    if action not in (*_STATUS_OF, "quarantine", "release", "revoke", "release-certificates"):
        raise web.HTTPNotFound()
    ref = _ref(request)
    actor = f"ui:{session.principal.name}"
    inventory = request.app[INVENTORY]
    try:
        if action == "quarantine":
            done = await inventory.quarantine(ref, "quarantined from the console", actor=actor)
            msg = f"quarantined: {', '.join(done) or 'nothing new'}"
        elif action == "release":
            msg = f"released: {', '.join(await inventory.release(ref, actor=actor))}"
        elif action == "revoke":
            # Every active certificate of the identity and its descendants; the CRL is
            # re-signed and the enforcer disconnects their sessions.
            if CA not in request.app:
                raise web.HTTPNotFound()
            form = await request.post()
            serials = await request.app[CA].revoke(
                identity=ref, reason=str(form.get("reason") or "unspecified"), actor=actor)
            msg = f"revoked {len(serials)} certificate(s): {', '.join(serials) or 'none active'}"
        elif action == "release-certificates":
            # Every held certificate of the identity and its descendants.
            if CA not in request.app:
                raise web.HTTPNotFound()
            serials = await request.app[CA].release_identity(ref, actor=actor)
            msg = f"released {len(serials)} certificate(s): {', '.join(serials) or 'none held'}"
        else:
            await inventory.set_status(ref, _STATUS_OF[action], actor=actor)
            msg = f"{ref} is now {_STATUS_OF[action]}"
    except NhiError as exc:
        msg = f"refused: {exc.message}"
    raise web.HTTPSeeOther(f"/ui/identities/{ref}?msg={quote(msg)}")


async def findings(request: web.Request) -> web.Response:
    rows = await request.app[GOVERNANCE].findings()
    by_type: dict[str, int] = {}
    for f in rows:
        by_type[f.type] = by_type.get(f.type, 0) + 1
    return render(request, "findings.html", rows=rows, by_type=by_type)


async def finding_ack(request: web.Request) -> web.Response:
    session = _admin(request)
    try:
        await request.app[GOVERNANCE].acknowledge(int(request.match_info["id"]),
                                                  actor=f"ui:{session.principal.name}")
        msg = "finding acknowledged"
    except (NhiError, ValueError) as exc:
        msg = f"refused: {getattr(exc, 'message', exc)}"
    raise web.HTTPSeeOther(f"/ui/findings?msg={quote(msg)}")


def _admission_json(a: Admission) -> dict[str, Any]:
    return {"at": a.at.isoformat(timespec="seconds"), "decision": a.decision,
            "identity": a.identity, "method": a.method, "nas": a.nas, "port": a.port,
            "mac": a.mac, "vlan": a.vlan, "reasons": list(a.reasons.get("reasons", []))}


async def admissions(request: web.Request) -> web.Response:
    async with request.app[INVENTORY].db.read() as s:
        rows = (await s.scalars(select(Admission).order_by(Admission.id.desc())
                                .limit(50))).all()
    return render(request, "admissions.html", rows=[_admission_json(a) for a in rows])


async def admissions_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each decision of each new ``admissions.recorded`` outbox
    event, as it is written."""
    db = request.app[INVENTORY].db
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store"})
    await resp.prepare(request)
    async with db.read() as s:
        last = int(await s.scalar(select(OutboxEvent.id).order_by(OutboxEvent.id.desc())
                                  .limit(1)) or 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_MAX_SECONDS
    while loop.time() < deadline:
        async with db.read() as s:
            rows = (await s.scalars(select(OutboxEvent).where(OutboxEvent.id > last)
                                    .order_by(OutboxEvent.id).limit(200))).all()
        for row in rows:
            last = row.id
            if row.type == ADMISSIONS_EVENT:  # a batch: one SSE event per decision
                await resp.write("".join(
                    f"event: admission\ndata: {json.dumps(item)}\n\n"
                    for item in row.payload.get("admissions", ())).encode())
        await resp.write(b": keep-alive\n\n")
        await asyncio.sleep(STREAM_POLL_SECONDS)
    return resp


async def report_index(request: web.Request) -> web.Response:
    return render(request, "report.html", frameworks=sorted(FRAMEWORKS))


async def report_file(request: web.Request) -> web.Response:
    framework, fmt = request.match_info["framework"], request.match_info["fmt"]
    if framework not in FRAMEWORKS or fmt not in RENDERERS:
        raise web.HTTPNotFound()
    inv = request.app[INVENTORY]
    report = await compliance_report(inv.db, framework, inv.clock())
    types = {"html": "text/html", "json": "application/json", "csv": "text/csv"}
    resp = web.Response(text=RENDERERS[fmt](report), content_type=types[fmt])
    if fmt == "html":
        resp.headers["Content-Security-Policy"] = REPORT_CSP
    return resp


async def _segments_page(request: web.Request, *, text: str | None = None,
                         problems: list[dict[str, Any]] | None = None,
                         preview: list[str] | None = None, can_apply: bool = False,
                         status: int = 200, error: str | None = None) -> web.Response:
    svc = request.app[SEGMENTS]
    await svc.refresh()
    current = await svc.current_text()
    m = svc.map
    shown = text if text is not None else (current[1] if current else "")
    # The gutter beside the editor: one number per line, problem lines marked (an error
    # outranks a warning on the same line).
    marks: dict[int, str] = {}
    for p in problems or []:
        if marks.get(p["line"]) != "error":
            marks[p["line"]] = p["severity"]
    return render(
        request, "segments.html", status=status, error=error,
        version=current[0] if current else None, text=shown,
        gutter=[(n, marks.get(n)) for n in range(1, shown.count("\n") + 2)],
        segment_rows=m.segments if m else (), rule_rows=m.rules if m else (),
        fallback=(m.fallback.segment or "reject") if m else "",
        counts=await svc.identities_per_segment(), history=await svc.history(),
        problems=problems or [], preview=preview, can_apply=can_apply)


async def segments_page(request: web.Request) -> web.Response:
    return await _segments_page(request)


async def _posted_map(request: web.Request) -> str:
    text = str((await request.post()).get("yaml", ""))
    return text.replace("\r\n", "\n")


async def segments_validate(request: web.Request) -> web.Response:
    v = await request.app[SEGMENTS].validate(await _posted_map(request), "editor")
    return web.json_response({"ok": v.ok, "problems": [problem_json(p) for p in v.problems]})


async def segments_preview(request: web.Request) -> web.Response:
    text = await _posted_map(request)
    p = await request.app[SEGMENTS].preview(text, "editor")
    problems = [problem_json(x) for x in p.validation.problems]
    if p.diff is None:
        return await _segments_page(request, text=text, problems=problems, status=400,
                                    error="The map has errors; the current map stays in force.")
    return await _segments_page(request, text=text, problems=problems, preview=p.lines(),
                                can_apply=True)


async def segments_apply(request: web.Request) -> web.Response:
    session = _admin(request)
    form = await request.post()
    text = str(form.get("yaml", "")).replace("\r\n", "\n")
    try:
        info = await request.app[SEGMENTS].apply(text, "editor",
                                                 author=f"ui:{session.principal.name}",
                                                 comment=str(form.get("comment", "")))
    except SegmentMapRefused as exc:
        return await _segments_page(request, text=text, status=400, error=exc.message,
                                    problems=[problem_json(p) for p in exc.problems])
    raise web.HTTPSeeOther(f"/ui/segments?msg={quote(f'version {info.version} applied')}")


async def segments_rollback(request: web.Request) -> web.Response:
    session = _admin(request)
    try:
        info = await request.app[SEGMENTS].rollback(int(request.match_info["version"]),
                                                    author=f"ui:{session.principal.name}")
        msg = f"rolled back: version {info.version} applied"
    except (NhiError, ValueError) as exc:
        msg = f"refused: {getattr(exc, 'message', exc)}"
    raise web.HTTPSeeOther(f"/ui/segments?msg={quote(msg)}")


async def root(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/ui/")


def add_console(app: web.Application) -> None:
    from importlib import resources

    r = app.router
    r.add_get("/ui", root)
    r.add_get("/ui/login", login_page)
    r.add_post("/ui/login", login)
    r.add_post("/ui/logout", logout)
    r.add_get("/ui/", overview)
    r.add_get("/ui/identities", identities)
    r.add_get("/ui/identities/{kind}/{name}", identity)
    r.add_post("/ui/identities/{kind}/{name}/{action}", identity_action)
    r.add_get("/ui/segments", segments_page)
    r.add_post("/ui/segments/validate", segments_validate)
    r.add_post("/ui/segments/preview", segments_preview)
    r.add_post("/ui/segments/apply", segments_apply)
    r.add_post("/ui/segments/rollback/{version}", segments_rollback)
    r.add_get("/ui/findings", findings)
    r.add_post("/ui/findings/{id}/ack", finding_ack)
    r.add_get("/ui/admissions", admissions)
    r.add_get("/ui/admissions/stream", admissions_stream)
    r.add_get("/ui/report", report_index)
    r.add_get("/ui/report/{framework}.{fmt}", report_file)
    r.add_static("/ui/static/", str(resources.files("nhi_nac") / "ui" / "static"))
