"""Compliance evidence: numbers taken from the system, mapped to framework controls.

``nhi-nac report compliance --framework soc2|iso27001|nist-800-53 --format html|json|csv``.
:func:`gather_evidence` reads the database once; :func:`build_report` maps the evidence
to each control with a status (``ok`` or ``attention`` and why); the renderers format
it. The HTML report is one self-contained file: inline CSS and SVG charts, no script,
no external resource.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.errors import InvalidInput
from nhi_nac.storage import queries
from nhi_nac.storage.models import (
    Admission,
    Credential,
    Finding,
    Identity,
    IdentityLabel,
    Owner,
)

FRAMEWORKS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "soc2": (
        ("CC6.1", "Logical access: every identity inventoried, owned and scoped",
         ("inventory", "audit")),
        ("CC6.2", "Registration, authorization and removal of identities",
         ("inventory", "findings", "audit")),
        ("CC6.3", "Access limited to what the role needs (segmentation, least privilege)",
         ("admissions", "segments", "findings")),
    ),
    "iso27001": (
        ("A.5.15", "Access control", ("admissions", "segments")),
        ("A.5.16", "Identity management", ("inventory", "findings")),
        ("A.5.17", "Authentication information", ("credentials",)),
        ("A.5.18", "Access rights: provision, review, removal", ("findings", "revocations")),
        ("A.8.5", "Secure authentication", ("credentials", "admissions")),
    ),
    "nist-800-53": (
        ("AC-2", "Account management", ("inventory", "findings", "audit")),
        ("AC-6", "Least privilege", ("segments", "findings")),
        ("IA-3", "Device identification and authentication", ("admissions", "credentials")),
        ("IA-4", "Identifier management", ("inventory",)),
        ("IA-5", "Authenticator management", ("credentials", "revocations")),
        ("SC-7", "Boundary protection", ("admissions", "segments")),
    ),
}
AGE_BUCKETS: tuple[tuple[str, int], ...] = (
    ("0-7d", 7), ("8-30d", 30), ("31-90d", 90), ("91-180d", 180), ("181-365d", 365),
    (">365d", 10**6))
HISTORY_DAYS = 30


@dataclass(frozen=True)
class Evidence:
    generated_at: dt.datetime
    inventory: dict[str, Any]
    credentials: dict[str, Any]
    findings: dict[str, Any]
    admissions: dict[str, Any]
    revocations: dict[str, Any]
    segments: dict[str, Any]
    audit: dict[str, Any]


@dataclass(frozen=True)
class ControlResult:
    control: str
    title: str
    status: str
    notes: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComplianceReport:
    framework: str
    generated_at: dt.datetime
    controls: tuple[ControlResult, ...]
    evidence: Evidence


async def _grouped(s: AsyncSession, *cols: Any, where: Any = None) -> list[tuple[Any, ...]]:
    q = select(*cols, func.count()).group_by(*cols)
    if where is not None:
        q = q.where(where)
    return [tuple(r) for r in (await s.execute(q)).all()]


async def gather_evidence(s: AsyncSession, now: dt.datetime,
                          segment_history: dict[str, Any] | None = None) -> Evidence:
    by_kind_status = await _grouped(s, Identity.kind, Identity.status)
    live = Identity.status != "retired"
    total_live = int(await s.scalar(select(func.count()).select_from(Identity).where(live)) or 0)
    owned = int(await s.scalar(
        select(func.count()).select_from(Identity).join(Owner, Owner.id == Identity.owner_id)
        .where(live, Owner.status == "active")) or 0)
    scoped = int(await s.scalar(
        select(func.count(func.distinct(Identity.id))).select_from(Identity)
        .join(IdentityLabel, IdentityLabel.identity_id == Identity.id).where(live)) or 0)
    inventory = {
        "identities_live": total_live,
        "with_active_owner": owned,
        "with_scope": scoped,
        "owner_share": round(owned / total_live, 4) if total_live else 1.0,
        "scope_share": round(scoped / total_live, 4) if total_live else 1.0,
        "by_kind_status": [{"kind": k, "status": st, "count": n} for k, st, n in by_kind_status],
    }
    ages = {label: 0 for label, _ in AGE_BUCKETS}
    # Live credentials: a certificate a renewal superseded and that has since expired is
    # history (a workload renewed daily leaves one a day), not an active credential.
    creds = (await s.execute(select(Credential.created_at, Credential.last_rotated_at)
                             .where(Credential.status == "active",
                                    ~queries.certificate_history(now)))).all()
    for created, rotated in creds:
        days = (now - (rotated or created)).days
        for label, limit in AGE_BUCKETS:
            if days <= limit:
                ages[label] += 1
                break
    expired_active = int(await s.scalar(select(func.count()).select_from(Credential).where(
        Credential.status == "active", Credential.expires_at < now,
        ~queries.SUPERSEDED_CERTIFICATE)) or 0)
    credentials = {"active": len(creds), "age_histogram": ages,
                   "active_past_expiry": expired_active}
    open_by_type = dict(await _grouped(s, Finding.type, where=Finding.state != "resolved"))
    open_high = int(await s.scalar(select(func.count()).select_from(Finding).where(
        Finding.state != "resolved", Finding.severity == "high")) or 0)
    resolved = int(await s.scalar(select(func.count()).select_from(Finding).where(
        Finding.state == "resolved")) or 0)
    since = now - dt.timedelta(days=HISTORY_DAYS)
    per_day: dict[str, int] = {}
    for (first,) in (await s.execute(select(Finding.first_seen)
                                      .where(Finding.first_seen >= since))).all():
        day = first.date().isoformat()
        per_day[day] = per_day.get(day, 0) + 1
    findings = {"open_by_type": open_by_type, "open_total": sum(open_by_type.values()),
                "open_high": open_high, "resolved": resolved,
                "opened_per_day": dict(sorted(per_day.items()))}
    decisions = dict(await _grouped(s, Admission.decision))
    admissions = {"accept": int(decisions.get("accept", 0)),
                  "reject": int(decisions.get("reject", 0))}
    revoked = dict(await _grouped(s, Credential.revocation_reason,
                                  where=Credential.status == "revoked"))
    revocations = {"total": sum(revoked.values()),
                   "by_reason": {str(k): v for k, v in revoked.items()}}
    verdict = await audit.verify_chain(s)
    return Evidence(
        generated_at=now, inventory=inventory, credentials=credentials, findings=findings,
        admissions=admissions, revocations=revocations,
        segments=segment_history or {"versions": 0, "current": None},
        audit={"ok": verdict.ok, "records": verdict.records, "detail": verdict.describe()},
    )


def _assess(area: str, ev: Evidence) -> list[str]:
    """Reasons for attention in one evidence area; empty when it looks healthy."""
    notes: list[str] = []
    if area == "inventory" and ev.inventory["owner_share"] < 1:
        missing = ev.inventory["identities_live"] - ev.inventory["with_active_owner"]
        notes.append(f"{missing} live identities without an active owner")
    if area == "audit" and not ev.audit["ok"]:
        notes.append(f"audit chain: {ev.audit['detail']}")
    if area == "findings" and ev.findings["open_high"]:
        notes.append(f"{ev.findings['open_high']} open high-severity findings")
    if area == "credentials" and ev.credentials["active_past_expiry"]:
        notes.append(f"{ev.credentials['active_past_expiry']} active credentials past expiry")
    if area == "segments" and not ev.segments.get("versions"):
        notes.append("no segment map applied yet")
    return notes


def build_report(framework: str, ev: Evidence) -> ComplianceReport:
    if framework not in FRAMEWORKS:
        raise InvalidInput(f"unknown framework {framework!r} ({', '.join(FRAMEWORKS)})")
    controls = []
    for control, title, areas in FRAMEWORKS[framework]:
        notes = [n for area in areas for n in _assess(area, ev)]
        controls.append(ControlResult(control, title, "attention" if notes else "ok",
                                      tuple(notes), {a: getattr(ev, a) for a in areas}))
    return ComplianceReport(framework, ev.generated_at, tuple(controls), ev)


def render_json(report: ComplianceReport) -> str:
    from nhi_nac.views import to_json

    return json.dumps(to_json(report), indent=2, sort_keys=True)


def render_csv(report: ComplianceReport) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["framework", "control", "title", "status", "area", "metric", "value"])
    for c in report.controls:
        for area, values in c.evidence.items():
            for metric, value in values.items():
                if isinstance(value, dict | list):
                    value = json.dumps(value, sort_keys=True, default=str)
                w.writerow([report.framework, c.control, c.title, c.status, area, metric, value])
    return out.getvalue()


def _bar_chart(title: str, data: dict[str, int], width: int = 520) -> str:
    """A horizontal bar chart as inline SVG."""
    esc = html.escape
    row, label_w = 22, 150
    height = row * max(1, len(data)) + 30
    peak = max(data.values(), default=0) or 1
    parts = [f'<svg role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{esc(title)}</title>']
    for i, (label, value) in enumerate(data.items()):
        y = 10 + i * row
        w = int((width - label_w - 60) * value / peak)
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{esc(str(label))}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w}" height="16" fill="#3b6ea5"/>'
                     f'<text x="{label_w + w + 6}" y="{y + 13}" font-size="12">{value}</text>')
    if not data:
        parts.append('<text x="0" y="20" font-size="12">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: ComplianceReport) -> str:
    esc = html.escape
    ev = report.evidence
    kinds: dict[str, int] = {}
    for r in ev.inventory["by_kind_status"]:
        key = f"{r['kind']} ({r['status']})"
        kinds[key] = kinds.get(key, 0) + r["count"]
    rows = "".join(
        f"<tr><th scope=\"row\">{esc(c.control)}</th><td>{esc(c.title)}</td>"
        f"<td class=\"{c.status}\">{c.status}</td>"
        f"<td>{esc('; '.join(c.notes)) or '—'}</td></tr>" for c in report.controls)
    summary = [
        ("Live identities", ev.inventory["identities_live"]),
        ("With an active owner", f"{ev.inventory['owner_share']:.1%}"),
        ("With a documented scope", f"{ev.inventory['scope_share']:.1%}"),
        ("Active credentials", ev.credentials["active"]),
        ("Open findings", ev.findings["open_total"]),
        ("Resolved findings", ev.findings["resolved"]),
        ("Admissions accepted / rejected",
         f"{ev.admissions['accept']} / {ev.admissions['reject']}"),
        ("Revocations", ev.revocations["total"]),
        ("Segment-map versions", ev.segments.get("versions", 0)),
        ("Audit chain", ev.audit["detail"]),
    ]
    facts = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                    for k, v in summary)
    title = f"nhi-nac compliance evidence — {report.framework}"
    charts = [
        ("Identities by kind and status", kinds),
        ("Active credentials by age", ev.credentials["age_histogram"]),
        (f"Findings opened per day (last {HISTORY_DAYS} days)", ev.findings["opened_per_day"]),
    ]
    sections = "".join(f"<section><h2>{esc(t)}</h2>{_bar_chart(t, d)}</section>"
                       for t, d in charts)
    head = ("<tr><th scope=\"col\">Control</th><th scope=\"col\">Objective</th>"
            "<th scope=\"col\">Status</th><th scope=\"col\">Notes</th></tr>")
    generated = esc(report.generated_at.isoformat(timespec="seconds"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{esc(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p>Generated {generated} from the live database.</p>
<section><h2>Controls</h2>
<table><thead>{head}</thead><tbody>{rows}</tbody></table></section>
<section><h2>Evidence</h2><table><tbody>{facts}</tbody></table></section>
{sections}
</body></html>
"""


_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1d2733}"
    "table{border-collapse:collapse;margin:1rem 0}"
    "th,td{border:1px solid #ccd;padding:.3rem .6rem;text-align:left;vertical-align:top}"
    "td.ok{color:#176b2c;font-weight:600}td.attention{color:#9a3d00;font-weight:600}"
    "section{margin-top:2rem}"
)


RENDERERS = {"json": render_json, "csv": render_csv, "html": render_html}


async def compliance_report(db: Any, framework: str, now: dt.datetime) -> ComplianceReport:
    """Gather evidence from ``db`` (a :class:`Database`) and map it to ``framework``."""
    if framework not in FRAMEWORKS:
        raise InvalidInput(f"unknown framework {framework!r} ({', '.join(FRAMEWORKS)})")
    async with db.read() as s:
        return build_report(framework, await gather_evidence(s, now))
