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
                   one the current segment map gives the identity (the VLAN
                   comes from the NAS's own Tunnel-Private-Group-Id in
                   accounting when it sends one)
new_site           an AI agent authenticated at a NAS site never seen in its    high
                   baseline
burst              an AI agent's access requests (grant requests and RADIUS     high
                   authentications) in the window exceed the burst threshold
                   and its baseline rate several times over
fan_out            an AI agent spawned more sub-agents in the window than the   high
                   fan-out threshold (and several times its baseline)
sequence           within one window an AI agent widened its scope (a grant),   high
                   then spawned sub-agents, then connected from a new site
volume             an AI agent's sessions moved more octets (accounting) in the high
                   window than ``volume_bytes`` and several times its largest
                   session in the baseline
off_hours          an AI agent was admitted at an hour of day (UTC) never seen  medium
                   in a baseline of at least ``off_hours_min_days`` days
=================  ==========================================================  ========

The behavioural rules (the last six) read a per-agent baseline — NAS sites, access
request rate, sub-agent fan-out, traffic volume, hours active — over
``[agents] baseline`` before the current ``[agents] window``; ``nhi-nac serve``
evaluates them every few seconds, the scheduled scan too.

Actions (``[governance] actions``): ``notify`` (the event only), ``suspend``,
``quarantine`` (fallback segment + CoA; reversible with ``nhi-nac identity release``) or
``revoke`` (every certificate of the identity and its descendants). Each action runs in
the scan's transaction and is audited as actor ``governance``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.config import AgentsConfig, GovernanceConfig
from nhi_nac.durations import parse_duration
from nhi_nac.errors import Conflict, InvalidInput, NotFound
from nhi_nac.inventory import Inventory, quarantine_identity, revoke_identity_certificates
from nhi_nac.outbox import add_event
from nhi_nac.storage import queries
from nhi_nac.storage.models import (
    Admission,
    AgentGrant,
    Credential,
    DiscoveredDevice,
    Finding,
    Identity,
    IdentityMac,
    NasClient,
    Owner,
    RadiusSession,
)

BEHAVIOUR_TYPES = ("new_site", "burst", "fan_out", "sequence", "volume", "off_hours")
#: Baseline admissions read per scan for the hours-of-day rule, at most.
MAX_BASELINE_ROWS = 200_000
#: Event types after which ``nhi-nac serve`` rescans (not finding.*: no loops).
RESCAN_PREFIXES = ("owner.", "identity.", "credential.", "certificate.", "segments.applied",
                   "device.discovered", "session.")
FINDING_TYPES = ("orphaned", "expired_active", "stale_credential", "sprawl", "unused",
                 "unmanaged", "drift", *BEHAVIOUR_TYPES)
SEVERITY = {"orphaned": "high", "expired_active": "high", "stale_credential": "medium",
            "sprawl": "medium", "unused": "low", "unmanaged": "medium", "drift": "high",
            "new_site": "high", "burst": "high", "fan_out": "high", "sequence": "high",
            "volume": "high", "off_hours": "medium"}
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
    #: Another node was scanning at that moment (``scan(wait=False)`` only).
    skipped: bool = False

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
    # A certificate that a renewal superseded is history once it expires (not read at
    # all: a workload renewed daily leaves one a day) and is never stale or expired;
    # while still valid it counts as a live credential for sprawl.
    creds = (await s.execute(
        select(Identity.id, Identity.kind, Identity.name, Credential.fingerprint,
               Credential.serial, Credential.created_at, Credential.last_rotated_at,
               Credential.expires_at, queries.SUPERSEDED_CERTIFICATE.label("superseded"))
        .join(Identity, Identity.id == Credential.identity_id)
        .where(Credential.status == "active", Identity.status == "active",
               ~queries.certificate_history(now))
        .order_by(Identity.id, Credential.id))).all()
    expired: dict[int, list[str]] = {}
    stale: dict[int, list[dict[str, Any]]] = {}
    counts: dict[int, int] = {}
    refs: dict[int, str] = {}
    for iid, kind, name, fp, serial, created, rotated, expires, replaced in creds:
        refs[iid] = _ref(kind, name)
        if expires is not None and expires < now:
            if not replaced:
                expired.setdefault(iid, []).append(fp)
        else:
            counts[iid] = counts.get(iid, 0) + 1
        if replaced:
            continue
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
VlanLookup = Callable[[str, str, Mapping[str, str], str | None, str | None], int | None]


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
        expected = vlan_of(ref, kind, scope, team or None, site or None)
        if expected != vlan and ref not in found:
            found[ref] = Detection("drift", ref, iid, {
                "nas": nas, "port": port, "session": sid, "vlan": vlan,
                "mapped_vlan": expected})
    return list(found.values())


async def detect_behaviour(s: AsyncSession, cfg: AgentsConfig,
                           now: dt.datetime) -> list[Detection]:
    """The behavioural rules over active AI agents (see the module docstring).

    Only agents with activity in the current window can trip a rule, so those are found
    first (admissions, grants and spawns since the window start, by index); their
    baselines are then read as aggregates. The cost follows recent agent activity, not
    the size of the inventory or of the admissions history.
    """
    window = parse_duration(cfg.window)
    since = now - window
    base_from = since - parse_duration(cfg.baseline)
    windows_in_baseline = max(1.0, parse_duration(cfg.baseline) / window)
    # Probed per agent through the identity indexes: a prefix LIKE cannot use them, and
    # scanning the window's admissions would cost what every other device does there.
    agent_refs = select(Identity.kind + "/" + Identity.name).where(Identity.kind == "ai_agent")
    recent_refs = {r for (r,) in (await s.execute(
        select(Admission.identity).distinct()
        .where(Admission.identity.in_(agent_refs), Admission.at >= since))).all()}
    recent_ids = {i for (i,) in (await s.execute(
        select(AgentGrant.identity_id).distinct()
        .where(AgentGrant.requested_at >= since))).all()}
    recent_ids |= {i for (i,) in (await s.execute(
        select(Identity.parent_id).distinct()
        .where(Identity.created_at >= since, Identity.kind == "ai_agent",
               Identity.parent_id.is_not(None)))).all() if i is not None}
    recent_refs |= {r for (r,) in (await s.execute(
        select(RadiusSession.identity).distinct()
        .where(RadiusSession.identity.in_(agent_refs),
               RadiusSession.updated_at >= since))).all()}
    agents: dict[str, int] = {}
    for iid, kind, name in (await s.execute(
            select(Identity.id, Identity.kind, Identity.name)
            .where(Identity.kind == "ai_agent", Identity.status == "active",
                   Identity.id.in_(recent_ids)
                   | (Identity.kind + "/" + Identity.name).in_(recent_refs)))).all():
        agents[f"{kind}/{name}"] = iid
    if not agents:
        return []
    refs, by_id = list(agents), {iid: ref for ref, iid in agents.items()}
    sites = {name: (site or name) for name, site in (await s.execute(
        select(NasClient.name, NasClient.site))).all()}
    # Baseline: per agent, the sites it was accepted at and how many requests it made.
    known_sites: dict[str, set[str]] = {}
    before: dict[str, int] = {}
    for ref, nas, decision, n in (await s.execute(
            select(Admission.identity, Admission.nas, Admission.decision, func.count())
            .where(Admission.identity.in_(refs), Admission.at >= base_from,
                   Admission.at < since)
            .group_by(Admission.identity, Admission.nas, Admission.decision))).all():
        before[ref] = before.get(ref, 0) + int(n)
        if decision == "accept":
            known_sites.setdefault(ref, set()).add(sites.get(nas, nas))
    # The window: every admission, oldest first.
    seen: dict[str, list[tuple[dt.datetime, str, str, str]]] = {}
    for ref, at, nas, decision in (await s.execute(
            select(Admission.identity, Admission.at, Admission.nas, Admission.decision)
            .where(Admission.identity.in_(refs), Admission.at >= since)
            .order_by(Admission.at, Admission.id))).all():
        seen.setdefault(ref, []).append((at, nas, sites.get(nas, nas), decision))
    grants: dict[str, list[tuple[dt.datetime, str, dt.datetime | None]]] = {}
    for iid, at, status, decided in (await s.execute(
            select(AgentGrant.identity_id, AgentGrant.requested_at, AgentGrant.status,
                   AgentGrant.decided_at)
            .where(AgentGrant.identity_id.in_(list(by_id)),
                   AgentGrant.requested_at >= base_from))).all():
        grants.setdefault(by_id[iid], []).append((at, status, decided))
    spawns: dict[str, list[dt.datetime]] = {}
    for pid, at in (await s.execute(
            select(Identity.parent_id, Identity.created_at)
            .where(Identity.parent_id.in_(list(by_id)), Identity.created_at >= base_from))
            ).all():
        if pid is not None:
            spawns.setdefault(by_id[pid], []).append(at)
    # Traffic (accounting counters): in the window, and the largest session before it.
    window_bytes: dict[str, int] = {}
    baseline_bytes: dict[str, int] = {}
    for ref, updated, octets in (await s.execute(
            select(RadiusSession.identity, RadiusSession.updated_at,
                   RadiusSession.input_octets + RadiusSession.output_octets)
            .where(RadiusSession.identity.in_(refs), RadiusSession.updated_at >= base_from)
            )).all():
        if updated >= since:
            window_bytes[ref] = window_bytes.get(ref, 0) + int(octets or 0)
        else:
            baseline_bytes[ref] = max(baseline_bytes.get(ref, 0), int(octets or 0))
    hours = await _baseline_hours(s, [r for r in refs if seen.get(r)], base_from, since)
    found: list[Detection] = []
    for ref, iid in agents.items():
        admissions = seen.get(ref, [])
        octets = window_bytes.get(ref, 0)
        largest = baseline_bytes.get(ref, 0)
        if octets > cfg.volume_bytes and octets > cfg.burst_factor * largest:
            found.append(Detection("volume", ref, iid, {
                "octets_in_window": octets, "window": cfg.window,
                "threshold": cfg.volume_bytes, "largest_baseline_session": largest}))
        known_hours, days = hours.get(ref, (set(), 0))
        if days >= cfg.off_hours_min_days:
            odd = sorted({at.astimezone(dt.UTC).hour for at, _, _, d in admissions
                          if d == "accept"} - known_hours)
            if odd:
                found.append(Detection("off_hours", ref, iid, {
                    "hours_utc": odd, "baseline_hours_utc": sorted(known_hours),
                    "baseline_days": days}))
        known = set(known_sites.get(ref, ()))
        baseline_sites = sorted(known)
        new_sites: list[tuple[dt.datetime, str, str]] = []
        learning = not known
        for at, nas, site, decision in admissions:
            if decision != "accept" or site in known:
                continue
            if learning:  # the very first site an agent is seen at is its baseline
                known.add(site)
                baseline_sites = [site]
                learning = False
                continue
            new_sites.append((at, nas, site))
            known.add(site)
        if new_sites:
            at, nas, site = new_sites[0]
            found.append(Detection("new_site", ref, iid, {
                "site": site, "nas": nas, "at": at.isoformat(),
                "known_sites": baseline_sites}))
        my_grants = grants.get(ref, [])
        recent = len(admissions) + sum(1 for at, _, _ in my_grants if at >= since)
        baseline_rate = (before.get(ref, 0)
                         + sum(1 for at, _, _ in my_grants if at < since)) / windows_in_baseline
        if recent > cfg.burst_requests and recent > cfg.burst_factor * baseline_rate:
            found.append(Detection("burst", ref, iid, {
                "requests_in_window": recent, "window": cfg.window,
                "threshold": cfg.burst_requests,
                "baseline_per_window": round(baseline_rate, 2)}))
        children = spawns.get(ref, [])
        recent_children = sorted(at for at in children if at >= since)
        child_rate = (len(children) - len(recent_children)) / windows_in_baseline
        if (len(recent_children) > cfg.fan_out_children
                and len(recent_children) > cfg.burst_factor * child_rate):
            found.append(Detection("fan_out", ref, iid, {
                "children_in_window": len(recent_children), "window": cfg.window,
                "threshold": cfg.fan_out_children,
                "baseline_per_window": round(child_rate, 2)}))
        widened = sorted(d for at, status, d in my_grants
                         if d is not None and d >= since and status in ("active", "expired"))
        if widened and new_sites:
            spawned = [at for at in recent_children if at >= widened[0]]
            moved = [at for at, _, _ in new_sites if spawned and at >= spawned[0]]
            if spawned and moved:
                found.append(Detection("sequence", ref, iid, {
                    "widened_at": widened[0].isoformat(),
                    "spawned_at": spawned[0].isoformat(),
                    "new_site_at": moved[0].isoformat(), "window": cfg.window}))
    return found


async def _baseline_hours(s: AsyncSession, refs: list[str], base_from: dt.datetime,
                          since: dt.datetime) -> dict[str, tuple[set[int], int]]:
    """Per agent: the UTC hours of day and the number of distinct days it was admitted
    in the baseline (for ``off_hours``); only agents admitted in the window are asked."""
    result: dict[str, tuple[set[int], int]] = {}
    if not refs:
        return result
    days: dict[str, set[dt.date]] = {}
    for ref, at in (await s.execute(
            select(Admission.identity, Admission.at)
            .where(Admission.identity.in_(refs), Admission.decision == "accept",
                   Admission.at >= base_from, Admission.at < since)
            .limit(MAX_BASELINE_ROWS))).all():
        utc = at.astimezone(dt.UTC)
        hours, _ = result.setdefault(ref, (set(), 0))
        hours.add(utc.hour)
        days.setdefault(ref, set()).add(utc.date())
    return {ref: (hours, len(days.get(ref, ()))) for ref, (hours, _) in result.items()}


_RESCAN_EVENT = queries.event_probe(RESCAN_PREFIXES)
_ANY_ACTIVE_AGENT = select(Identity.id).where(Identity.kind == "ai_agent",
                                              Identity.status == "active").limit(1)
_OPEN_BEHAVIOUR = select(Finding.id).where(Finding.type.in_(BEHAVIOUR_TYPES),
                                           Finding.state != "resolved").limit(1)


def _agents_to_watch(conn: Connection) -> bool:
    """Whether the behavioural rules have anything to look at: an active agent, or an
    open behaviour finding that may resolve."""
    return (conn.execute(_ANY_ACTIVE_AGENT).first() is not None
            or conn.execute(_OPEN_BEHAVIOUR).first() is not None)


class Governance:
    def __init__(self, inventory: Inventory, policy: GovernanceConfig,
                 vlan_of: VlanLookup | None = None,
                 agents: AgentsConfig | None = None) -> None:
        self.inventory = inventory
        self.policy = policy
        self.vlan_of = vlan_of
        self.agents = agents or AgentsConfig()
        self._mark: int | None = None

    async def changed(self) -> bool:
        """Whether a change that can open or resolve a finding was written (by any node)
        since the last call; the first call only sets the mark. Asked every second by
        ``serve``: prebuilt Core reads, the second only when the outbox grew."""
        mark = self._mark
        if mark is None:
            self._mark = await self.inventory.db.run_read(queries.newest_event)
            return False
        self._mark, hit = await self.inventory.db.run_read(
            lambda conn: queries.changed_since(conn, mark, _RESCAN_EVENT))
        return hit

    async def scan(self, behaviour_only: bool = False, wait: bool = True) -> ScanResult:
        """Detect, reconcile and act; ``behaviour_only`` runs just the agent rules (the
        cheap, frequent pass of ``nhi-nac serve``). On PostgreSQL one node scans at a
        time (a transaction-scoped advisory lock): ``wait=False`` (the service's own
        rescans) skips a scan another node is running instead of repeating it."""
        now = self.inventory.clock()
        if behaviour_only:
            # The frequent pass: decide with reads whether anything is to change, so that
            # an idle fleet costs no write transaction every two seconds; a fleet without
            # active agents or open behaviour findings, two indexed Core reads.
            if not await self.inventory.db.run_read(_agents_to_watch):
                return ScanResult((), (), 0)
            async with self.inventory.db.read() as s:
                quiet = not await detect_behaviour(s, self.agents, now) and not await s.scalar(
                    select(func.count()).select_from(Finding).where(
                        Finding.type.in_(BEHAVIOUR_TYPES), Finding.state != "resolved"))
            if quiet:
                return ScanResult((), (), 0)
        async with self.inventory.db.transaction() as s:
            # SQLite has one writer at a time already.
            if not self.inventory.db.is_sqlite and not await _scan_lock(s, wait):
                return ScanResult((), (), 0, skipped=True)
            found = [] if behaviour_only else await detect(s, self.policy, now)
            found += await detect_behaviour(s, self.agents, now)
            types: tuple[str, ...] = BEHAVIOUR_TYPES if behaviour_only else FINDING_TYPES
            if self.vlan_of is not None and not behaviour_only:
                found += await detect_drift(s, self.vlan_of)
            else:
                types = tuple(t for t in types if t != "drift")
            result = await reconcile(s, found, now, types)
            await self._act(s, found, result, now)
            return result

    async def _act(self, s: AsyncSession, found: list[Detection], result: ScanResult,
                   now: dt.datetime) -> None:
        """Apply each newly opened finding's configured action, audited as "governance"."""
        opened = set(result.opened)
        for d in found:
            action = self.policy.actions.get(d.type, "notify")
            if action == "notify" or f"{d.type} {d.subject}" not in opened:
                continue
            ident = await s.get(Identity, d.identity_id) if d.identity_id else None
            if ident is None or ident.status != "active":
                continue
            why = f"finding {d.type}"
            if action == "suspend":
                ident.status = "suspended"
                await audit.append(s, actor="governance", action="identity.suspended",
                                   target=d.subject, before={"status": "active"},
                                   after={"status": "suspended", "finding": d.type}, now=now)
                add_event(s, "identity.suspended", {"identity": d.subject, "from": "active",
                                                    "to": "suspended", "finding": d.type}, now)
            elif action == "quarantine":
                await quarantine_identity(s, ident, why, actor="governance", now=now)
            elif action == "revoke":
                await revoke_identity_certificates(s, ident, "privilegeWithdrawn",
                                                   actor="governance", now=now)

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
            .where(Credential.status == "active", Identity.status == "active",
                   ~queries.SUPERSEDED_CERTIFICATE))).all():
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


#: PostgreSQL advisory lock key of the governance scan ("nhi-gov" in ASCII).
SCAN_LOCK_KEY = 0x6E68692D676F76


async def _scan_lock(s: AsyncSession, wait: bool) -> bool:
    """Take the scan lock for this transaction (PostgreSQL)."""
    if wait:
        await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCAN_LOCK_KEY})
        return True
    return bool(await s.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"),
                               {"key": SCAN_LOCK_KEY}))
