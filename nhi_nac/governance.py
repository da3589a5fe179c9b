"""Governance findings: what the records say is wrong, opened and resolved by themselves.

A scan computes the set of current problems from the database — each a
:class:`Detection` keyed by (type, subject) — and reconciles it with the ``findings``
table in one transaction:

- detected, no finding yet (or only a resolved one): **open** it (event ``finding.opened``);
- detected and open/acknowledged: refresh ``last_seen`` and the evidence;
- not detected but open/acknowledged: **resolve** it (event ``finding.resolved``).

Acknowledging keeps a finding visible but marks that a human has seen it. Rules:

=================  ==========================================================  ========
type               detected when                                               severity
=================  ==========================================================  ========
orphaned           a live identity's owner has departed                        high
expired_active     an active identity, or an active credential, is past expiry  high
stale_credential   an active credential is older than its kind's rotation days  medium
sprawl             more active credentials than the policy allows              medium
unused             no authentication/accounting for ``unused_days``            low
unmanaged          a MAC authenticated (MAB) that the inventory does not know   medium
drift              accounting shows a live session on a VLAN other than the     high
                   one the current segment map gives the identity
=================  ==========================================================  ========
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.config import GovernanceConfig
from nhi_nac.errors import Conflict, InvalidInput, NotFound
from nhi_nac.inventory import Inventory
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import (
    Credential,
    DiscoveredDevice,
    Finding,
    Identity,
    IdentityMac,
    NasClient,
    Owner,
    RadiusSession,
)

FINDING_TYPES = ("orphaned", "expired_active", "stale_credential", "sprawl", "unused",
                 "unmanaged", "drift")
SEVERITY = {"orphaned": "high", "expired_active": "high", "stale_credential": "medium",
            "sprawl": "medium", "unused": "low", "unmanaged": "medium", "drift": "high"}
LIVE = ("active", "suspended")


@dataclass(frozen=True)
class Detection:
    type: str
    subject: str
    identity_id: int | None
    evidence: dict[str, Any]


@dataclass(frozen=True)
class ScanResult:
    opened: tuple[str, ...]
    resolved: tuple[str, ...]
    open_total: int

    def describe(self) -> str:
        return (f"{len(self.opened)} opened, {len(self.resolved)} resolved, "
                f"{self.open_total} open")


@dataclass(frozen=True)
class FindingView:
    id: int
    type: str
    subject: str
    severity: str
    state: str
    evidence: dict[str, Any]
    first_seen: dt.datetime
    last_seen: dt.datetime
    acknowledged_by: str | None
    resolved_at: dt.datetime | None


def _ref(kind: str, name: str) -> str:
    return f"{kind}/{name}"


async def detect(s: AsyncSession, policy: GovernanceConfig, now: dt.datetime) -> list[Detection]:
    found: list[Detection] = []
    # Orphaned: live identity whose owner departed.
    for iid, kind, name, email, departed in (await s.execute(
            select(Identity.id, Identity.kind, Identity.name, Owner.email, Owner.departed_at)
            .join(Owner, Owner.id == Identity.owner_id)
            .where(Identity.status.in_(LIVE), Owner.status == "departed"))).all():
        found.append(Detection("orphaned", _ref(kind, name), iid, {
            "owner": email, "departed_at": departed.isoformat() if departed else None}))
    # Expired but still active: the identity itself ...
    for iid, kind, name, expires in (await s.execute(
            select(Identity.id, Identity.kind, Identity.name, Identity.expires_at)
            .where(Identity.status == "active", Identity.expires_at < now))).all():
        found.append(Detection("expired_active", _ref(kind, name), iid, {
            "identity_expired_at": expires.isoformat() if expires else None}))
    # ... or one of its credentials; and per-credential age against the kind's policy.
    creds = (await s.execute(
        select(Identity.id, Identity.kind, Identity.name, Credential.fingerprint,
               Credential.serial, Credential.created_at, Credential.last_rotated_at,
               Credential.expires_at)
        .join(Identity, Identity.id == Credential.identity_id)
        .where(Credential.status == "active", Identity.status == "active")
        .order_by(Identity.id, Credential.id))).all()
    expired: dict[int, list[str]] = {}
    stale: dict[int, list[dict[str, Any]]] = {}
    counts: dict[int, int] = {}
    refs: dict[int, str] = {}
    for iid, kind, name, fp, serial, created, rotated, expires in creds:
        refs[iid] = _ref(kind, name)
        counts[iid] = counts.get(iid, 0) + 1
        if expires is not None and expires < now:
            expired.setdefault(iid, []).append(fp)
        days = policy.rotation_days.get(kind)
        age = now - (rotated or created)
        if days is not None and age > dt.timedelta(days=days):
            stale.setdefault(iid, []).append({"fingerprint": fp, "serial": serial,
                                              "age_days": age.days, "policy_days": days})
    ids_expired = {d.identity_id for d in found if d.type == "expired_active"}
    for iid, fps in expired.items():
        if iid not in ids_expired:
            found.append(Detection("expired_active", refs[iid], iid,
                                   {"expired_credentials": fps}))
    for iid, items in stale.items():
        found.append(Detection("stale_credential", refs[iid], iid, {"credentials": items}))
    for iid, n in counts.items():
        if n > policy.max_active_credentials:
            found.append(Detection("sprawl", refs[iid], iid, {
                "active_credentials": n, "policy_max": policy.max_active_credentials}))
    # Unused: active, created before the window, and not seen within it.
    cutoff = now - dt.timedelta(days=policy.unused_days)
    for iid, kind, name, seen in (await s.execute(
            select(Identity.id, Identity.kind, Identity.name, Identity.last_seen_at)
            .where(Identity.status == "active", Identity.created_at < cutoff,
                   func.coalesce(Identity.last_seen_at, Identity.created_at) < cutoff))).all():
        found.append(Detection("unused", _ref(kind, name), iid, {
            "last_seen_at": seen.isoformat() if seen else None,
            "unused_days": policy.unused_days}))
    # Unmanaged: discovered MACs that no identity claims.
    for mac, first, last, nas, port, count in (await s.execute(
            select(DiscoveredDevice.mac, DiscoveredDevice.first_seen, DiscoveredDevice.last_seen,
                   DiscoveredDevice.nas, DiscoveredDevice.port, DiscoveredDevice.count)
            .outerjoin(IdentityMac, IdentityMac.mac == DiscoveredDevice.mac)
            .where(IdentityMac.mac.is_(None)))).all():
        found.append(Detection("unmanaged", f"mac/{mac}", None, {
            "first_seen": first.isoformat(), "last_seen": last.isoformat(), "nas": nas,
            "port": port, "count": count}))
    return found


async def reconcile(
    s: AsyncSession, detections: Iterable[Detection], now: dt.datetime,
    types: Iterable[str] = FINDING_TYPES,
) -> ScanResult:
    """Bring the findings of ``types`` in line with ``detections``."""
    scope = tuple(types)
    current = {(d.type, d.subject): d for d in detections if d.type in scope}
    rows = {(f.type, f.subject): f for f in (await s.scalars(
        select(Finding).where(Finding.type.in_(scope)))).all()}
    opened: list[str] = []
    resolved: list[str] = []
    for key, d in current.items():
        row = rows.get(key)
        if row is None or row.state == "resolved":
            if row is None:
                row = Finding(type=d.type, subject=d.subject, identity_id=d.identity_id,
                              severity=SEVERITY[d.type], evidence=d.evidence, state="open",
                              first_seen=now, last_seen=now)
                s.add(row)
            else:
                row.state, row.first_seen, row.resolved_at = "open", now, None
                row.acknowledged_at = row.acknowledged_by = None
            opened.append(f"{d.type} {d.subject}")
            add_event(s, "finding.opened", {"type": d.type, "subject": d.subject,
                                            "severity": SEVERITY[d.type],
                                            "evidence": d.evidence}, now)
        row.last_seen, row.evidence, row.identity_id = now, d.evidence, d.identity_id
    for key, row in rows.items():
        if key not in current and row.state != "resolved":
            row.state, row.resolved_at = "resolved", now
            resolved.append(f"{row.type} {row.subject}")
            add_event(s, "finding.resolved", {"type": row.type, "subject": row.subject}, now)
    await s.flush()
    total = await s.scalar(select(func.count()).select_from(Finding)
                           .where(Finding.state != "resolved"))
    return ScanResult(tuple(sorted(opened)), tuple(sorted(resolved)), int(total or 0))


#: Answers "which VLAN does the current map give this identity at this NAS site".
VlanLookup = Callable[[str, Mapping[str, str], str | None, str | None], int | None]


async def detect_drift(s: AsyncSession, vlan_of: VlanLookup) -> list[Detection]:
    """Live sessions whose VLAN (from accounting) is not the identity's mapped VLAN."""
    found: dict[str, Detection] = {}
    rows = (await s.execute(
        select(RadiusSession.identity, RadiusSession.nas, RadiusSession.port,
               RadiusSession.vlan, RadiusSession.acct_session_id, Identity.id, Identity.kind,
               Identity.scope, Owner.team, NasClient.site)
        .join(Identity, (Identity.kind + "/" + Identity.name) == RadiusSession.identity)
        .join(Owner, Owner.id == Identity.owner_id)
        .outerjoin(NasClient, NasClient.name == RadiusSession.nas)
        .where(RadiusSession.status == "active", RadiusSession.vlan.is_not(None),
               Identity.status == "active"))).all()
    for ref, nas, port, vlan, sid, iid, kind, scope, team, site in rows:
        expected = vlan_of(kind, scope, team or None, site or None)
        if expected != vlan and ref not in found:
            found[ref] = Detection("drift", ref, iid, {
                "nas": nas, "port": port, "session": sid, "vlan": vlan,
                "mapped_vlan": expected})
    return list(found.values())


class Governance:
    def __init__(self, inventory: Inventory, policy: GovernanceConfig,
                 vlan_of: VlanLookup | None = None) -> None:
        self.inventory = inventory
        self.policy = policy
        self.vlan_of = vlan_of

    async def scan(self) -> ScanResult:
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            found = await detect(s, self.policy, now)
            types: tuple[str, ...] = FINDING_TYPES
            if self.vlan_of is not None:
                found += await detect_drift(s, self.vlan_of)
            else:
                types = tuple(t for t in FINDING_TYPES if t != "drift")
            result = await reconcile(s, found, now, types)
            await self._act(s, found, result, now)
            return result

    async def _act(self, s: AsyncSession, found: list[Detection], result: ScanResult,
                   now: dt.datetime) -> None:
        """Apply each newly opened finding's configured action, audited as "governance"."""
        opened = set(result.opened)
        for d in found:
            action = self.policy.actions.get(d.type, "notify")
            if action != "suspend" or f"{d.type} {d.subject}" not in opened:
                continue
            ident = await s.get(Identity, d.identity_id) if d.identity_id else None
            if ident is None or ident.status != "active":
                continue
            ident.status = "suspended"
            await audit.append(s, actor="governance", action="identity.suspended",
                               target=d.subject, before={"status": "active"},
                               after={"status": "suspended", "finding": d.type}, now=now)
            add_event(s, "identity.suspended", {"identity": d.subject, "from": "active",
                                                "to": "suspended", "finding": d.type}, now)

    async def findings(self, type_: str | None = None, state: str | None = "open",
                   limit: int = 1000) -> list[FindingView]:
        if type_ and type_ not in SEVERITY:
            raise InvalidInput(f"unknown finding type {type_!r}")
        q = select(Finding)
        if type_:
            q = q.where(Finding.type == type_)
        if state == "open":
            q = q.where(Finding.state != "resolved")
        elif state:
            q = q.where(Finding.state == state)
        q = q.order_by(Finding.id).limit(limit)
        async with self.inventory.db.read() as s:
            return [_view(f) for f in (await s.scalars(q)).all()]

    async def due(self, within: dt.timedelta) -> list[RotationDue]:
        async with self.inventory.db.read() as s:
            return await rotations_due(s, self.policy, self.inventory.clock(), within)

    async def show(self, finding_id: int) -> FindingView:
        async with self.inventory.db.read() as s:
            row = await s.get(Finding, finding_id)
        if row is None:
            raise NotFound(f"no finding {finding_id}")
        return _view(row)

    async def acknowledge(self, finding_id: int, *, actor: str) -> FindingView:
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            row = await s.get(Finding, finding_id)
            if row is None:
                raise NotFound(f"no finding {finding_id}")
            if row.state != "open":
                raise Conflict(f"finding {finding_id} is {row.state}")
            row.state, row.acknowledged_at, row.acknowledged_by = "acknowledged", now, actor
            await audit.append(s, actor=actor, action="finding.ack",
                               target=f"finding/{finding_id}", before={"state": "open"},
                               after={"state": "acknowledged"}, now=now)
            add_event(s, "finding.acknowledged", {"id": finding_id, "type": row.type,
                                                  "subject": row.subject}, now)
        return _view(row)


@dataclass(frozen=True)
class RotationDue:
    identity: str
    type: str
    fingerprint: str
    serial: str | None
    due_at: dt.datetime
    reason: str


async def rotations_due(s: AsyncSession, policy: GovernanceConfig, now: dt.datetime,
                        within: dt.timedelta) -> list[RotationDue]:
    """Active credentials whose rotation date (policy age or expiry) falls before now+within."""
    horizon = now + within
    due: list[RotationDue] = []
    for kind, name, ctype, fp, serial, created, rotated, expires in (await s.execute(
            select(Identity.kind, Identity.name, Credential.type, Credential.fingerprint,
                   Credential.serial, Credential.created_at, Credential.last_rotated_at,
                   Credential.expires_at)
            .join(Identity, Identity.id == Credential.identity_id)
            .where(Credential.status == "active", Identity.status == "active"))).all():
        candidates: list[tuple[dt.datetime, str]] = []
        days = policy.rotation_days.get(kind)
        if days is not None:
            candidates.append(((rotated or created) + dt.timedelta(days=days),
                               f"rotation policy {days}d"))
        if expires is not None:
            candidates.append((expires, "expiry"))
        if not candidates:
            continue
        when, reason = min(candidates)
        if when <= horizon:
            due.append(RotationDue(_ref(kind, name), ctype, fp, serial, when, reason))
    return sorted(due, key=lambda d: (d.due_at, d.identity))


def _view(f: Finding) -> FindingView:
    return FindingView(f.id, f.type, f.subject, f.severity, f.state, dict(f.evidence),
                       f.first_seen, f.last_seen, f.acknowledged_by, f.resolved_at)
