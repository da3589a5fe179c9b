"""AI agents: owner-approved ceilings, time-boxed grants and sub-agents.

An agent (identity kind ``ai_agent``) acts at machine speed, so its access changes
without a ticket — but only inside bounds its human owner set:

- **Ceiling.** The owner approves the widest scope the agent may ever reach: per label,
  the values allowed (``{"zone": ["db", "web"]}``). ``nhi-nac agent ceiling``.
- **Grants.** The agent, authenticated by its own certificate, asks for one extra
  label for a while (``zone=db`` for 30 minutes). Inside the ceiling and within
  ``[agents] max_grant``, it is granted at once; otherwise it waits for the owner
  (approve or deny, CLI or API) and times out after ``pending_timeout``. A grant ends
  by itself; while it lasts, the agent's segment follows its widened scope (the
  segment service's overlay) and the enforcer re-authenticates its sessions on grant
  and on expiry.
- **Sub-agents.** An agent spawns a child through the API with the child's CSR: the
  inventory's lineage invariants hold (scope within the parent's, owner inherited,
  depth and fan-out limits), the child's certificate never outlives the certificate
  the parent presented, and the child inherits the parent's ceiling. Identity and
  certificate are created in one transaction: a refusal leaves nothing behind.

Every request, decision, expiry and spawn is audited (actor ``agent:KIND/NAME`` or the
approving human) and raised as an ``agent.*`` event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import agent_auth, audit
from nhi_nac.bootstrap_tokens import active_identity
from nhi_nac.ca_service import CaService, IssuedBundle
from nhi_nac.config import AgentsConfig
from nhi_nac.domain import IdentityKind, IdentityRef, check_scope
from nhi_nac.durations import parse_duration
from nhi_nac.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from nhi_nac.inventory import Inventory, NewIdentity, descendants
from nhi_nac.lineage import MAX_LINEAGE_DEPTH, ParentFacts, check_child
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import (
    AgentGrant,
    AgentProofNonce,
    Credential,
    Identity,
    IdentityLabel,
    OutboxEvent,
    Owner,
    table_of,
)

_GRANTS = table_of(AgentGrant)
_NONCES = table_of(AgentProofNonce)
_BURN_NONCE = insert(_NONCES)
_FORGET_NONCES = delete(_NONCES).where(_NONCES.c.expires_at < bindparam("now"))
#: How often a node deletes the nonces of proofs that are stale anyway.
NONCE_PRUNE_EVERY = dt.timedelta(minutes=1)
_AUTH = (
    select(Credential.pem, Credential.status.label("cred_status"), Identity.id, Identity.kind,
           Identity.name, Identity.status, Identity.scope, Identity.ceiling,
           Identity.quarantined_at, Identity.parent_id, Identity.owner_id,
           Owner.status.label("owner_status"),
           Owner.email.label("owner"))
    .join(Identity, Identity.id == Credential.identity_id)
    .join(Owner, Owner.id == Identity.owner_id)
    .where(Credential.serial == bindparam("serial"), Credential.type == "certificate")
)
_OPEN_GRANTS = select(_GRANTS).where(_GRANTS.c.identity_id == bindparam("iid"),
                                     _GRANTS.c.status.in_(("pending", "active")))
_INSERT_GRANT = insert(_GRANTS).returning(_GRANTS.c.id)
_IDENTITIES = table_of(Identity)
_PARENT_OF = select(_IDENTITIES.c.parent_id).where(_IDENTITIES.c.id == bindparam("id"))
_LIVE_CHILDREN = select(func.count()).select_from(_IDENTITIES).where(
    _IDENTITIES.c.parent_id == bindparam("id"), _IDENTITIES.c.status != "retired")
_NAME_TAKEN = select(_IDENTITIES.c.id).where(_IDENTITIES.c.kind == bindparam("kind"),
                                             _IDENTITIES.c.name == bindparam("name"))
_INSERT_IDENTITY = insert(_IDENTITIES).returning(_IDENTITIES.c.id)
_INSERT_LABELS = insert(table_of(IdentityLabel))
_ANY_DUE = select(_GRANTS.c.id).where(
    ((_GRANTS.c.status == "active") & (_GRANTS.c.expires_at <= bindparam("now")))
    | ((_GRANTS.c.status == "pending") & (_GRANTS.c.requested_at <= bindparam("limit")))
).limit(1)
_INSERT_EVENT = insert(table_of(OutboxEvent))

GRANT_STATES = ("pending", "active", "denied", "expired", "timed_out", "revoked")
#: Values one ceiling label may list, and labels one ceiling may hold.
MAX_CEILING_VALUES = 64
MAX_CEILING_LABELS = 32
#: Default lifetime of a sub-agent's certificate when the request names none (never
#: more than the parent certificate's remaining life).
DEFAULT_CHILD_LIFETIME = dt.timedelta(hours=1)
#: Parsed agent certificates kept (oldest dropped first).
CERTIFICATE_CACHE = 10_000
#: Pending and active grants one agent may hold at once.
MAX_OPEN_GRANTS = 32


@dataclass(frozen=True)
class GrantView:
    id: int
    identity: str
    label: str
    status: str
    duration_seconds: int
    requested_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    expires_at: dt.datetime | None
    reason: str


@dataclass(frozen=True)
class SpawnResult:
    child: str
    parent: str
    scope: dict[str, str]
    bundle: IssuedBundle


@dataclass(frozen=True)
class TreeNode:
    depth: int
    identity: str
    status: str
    scope: dict[str, str]
    ceiling: dict[str, list[str]] | None
    quarantined: bool
    grants: tuple[str, ...]
    certificate_not_after: dt.datetime | None


def parse_ceiling(items: Mapping[str, Any]) -> dict[str, list[str]]:
    """Validate a ceiling ``{label: [values]}`` (a single string is one value)."""
    if len(items) > MAX_CEILING_LABELS:
        raise InvalidInput(f"a ceiling holds at most {MAX_CEILING_LABELS} labels")
    result: dict[str, list[str]] = {}
    for key, raw in items.items():
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not values or not all(
                isinstance(v, str) for v in values):
            raise InvalidInput(f"ceiling label {key!r} needs a list of values")
        if len(values) > MAX_CEILING_VALUES:
            raise InvalidInput(f"ceiling label {key!r} lists more than "
                               f"{MAX_CEILING_VALUES} values")
        for v in values:
            check_scope({key: v})
        result[key] = sorted(set(values))
    return result


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise InvalidInput(f"a label is KEY=VALUE, not {text!r}")
    checked = check_scope({key.strip(): value.strip()})
    ((k, v),) = checked.items()
    return k, v


def within_ceiling(ceiling: Mapping[str, list[str]] | None, key: str, value: str) -> bool:
    return bool(ceiling) and value in (ceiling or {}).get(key, ())


def _ref(row: Identity) -> str:
    return f"{row.kind}/{row.name}"


def _grant_view(g: AgentGrant, ref: str) -> GrantView:
    return GrantView(g.id, ref, f"{g.key}={g.value}", g.status, g.duration_seconds,
                     g.requested_at, g.decided_at, g.decided_by, g.expires_at, g.reason)


class AgentService:
    def __init__(self, inventory: Inventory, ca: CaService, config: AgentsConfig) -> None:
        self.inventory = inventory
        self.ca = ca
        self.config = config
        self.max_grant = parse_duration(config.max_grant)
        self.pending_timeout = parse_duration(config.pending_timeout)
        self.replays = agent_auth.ReplayGuard()
        self._nonces_pruned = dt.datetime.min.replace(tzinfo=dt.UTC)
        #: serial -> (PEM, parsed certificate already checked against the issuing CA).
        self._certificates: dict[str, tuple[str, x509.Certificate]] = {}

    # -- authentication ------------------------------------------------------------------

    async def signed_identity(self, header: str, *, method: str, path: str, body: bytes,
                              now: dt.datetime) -> IdentityRef:
        """The agent behind a signed read-only request, or a refusal saying why."""
        proof = agent_auth.parse_header(header)
        row, _cert = await self.inventory.db.run_write(lambda conn: self._authenticate_on(
            conn, proof, method=method, path=path, body=body, now=now))
        return IdentityRef(IdentityKind(row.kind), row.name)

    def _certificate(self, serial: str, pem: str) -> x509.Certificate:
        """The parsed certificate, checked once against our issuing CA, then cached."""
        cached = self._certificates.get(serial)
        if cached is not None and cached[0] == pem:
            return cached[1]
        certificate = x509.load_pem_x509_certificate(pem.encode())
        agent_auth.check_issuer(certificate, self.ca.issuing_ca().certificate)
        if len(self._certificates) >= CERTIFICATE_CACHE:
            self._certificates.pop(next(iter(self._certificates)))
        self._certificates[serial] = (pem, certificate)
        return certificate

    # -- ceiling ---------------------------------------------------------------------------

    async def set_ceiling(self, ref: IdentityRef, ceiling: Mapping[str, Any], *,
                          actor: str) -> dict[str, list[str]]:
        parsed = parse_ceiling(ceiling)
        if ref.kind is not IdentityKind.AI_AGENT:
            raise InvalidInput(f"a ceiling belongs to ai_agent identities, not {ref.kind.value}")
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            row = await self._row(s, ref)
            if row.parent_id is not None:
                parent = await s.get(Identity, row.parent_id)
                wider = _wider_than(parsed, parent.ceiling if parent else None)
                if wider:
                    raise InvalidInput(f"a sub-agent's ceiling stays within its parent's: "
                                       f"{', '.join(wider)} is not in it")
            before = row.ceiling
            row.ceiling = parsed
            await audit.append(s, actor=actor, action="agent.ceiling", target=str(ref),
                               before={"ceiling": before}, after={"ceiling": parsed}, now=now)
            add_event(s, "agent.ceiling", {"identity": str(ref), "ceiling": parsed}, now)
        return parsed

    # -- grants ----------------------------------------------------------------------------

    def _authenticate_on(self, conn: Connection,
                         proof: tuple[bytes, dict[str, Any], bytes], *, method: str,
                         path: str, body: bytes, now: dt.datetime,
                         refused_in_quarantine: str | None = None,
                         ) -> tuple[Any, x509.Certificate]:
        """:meth:`authenticate` inside a ``run_write`` transaction: the agent's row. With
        ``refused_in_quarantine`` (what the agent wants to do), a quarantined agent is
        refused with that reason."""
        payload_bytes, payload, signature = proof
        serial = format(int(payload["serial"], 16), "x")
        row = conn.execute(_AUTH, {"serial": serial}).first()
        if row is None or row.pem is None:
            raise Unauthorized("agent certificate unknown to this CA")
        certificate = self._certificate(serial, row.pem)
        claims = agent_auth.verify_request(
            payload_bytes, payload, signature, certificate, None, method=method,
            path=path, body=body, now=now, revoked=row.cred_status == "revoked")
        self.replays.check(claims.nonce)
        self._burn_nonce(conn, claims, now)
        ref = f"{row.kind}/{row.name}"
        if row.kind != IdentityKind.AI_AGENT.value:
            raise Forbidden(f"{ref} is not an ai_agent")
        if row.status != "active":
            raise Forbidden(f"identity {ref} is {row.status}")
        if row.owner_status != "active":
            raise Forbidden(f"owner {row.owner} of {ref} has departed")
        if refused_in_quarantine and row.quarantined_at is not None:
            raise Forbidden(f"{ref} is quarantined; it cannot {refused_in_quarantine}")
        return row, certificate

    def _burn_nonce(self, conn: Connection, claims: agent_auth.ProofClaims,
                    now: dt.datetime) -> None:
        """Record the proof as used in the shared table, in the request's transaction:
        the same proof sent to another node (whose ``ReplayGuard`` has not seen it) is
        refused too. A request refused later rolls the record back with everything else;
        this node's ``ReplayGuard`` still remembers it."""
        if now - self._nonces_pruned >= NONCE_PRUNE_EVERY:
            conn.execute(_FORGET_NONCES, {"now": now})
            self._nonces_pruned = now
        try:  # a unique violation ends the transaction: the request is refused whole
            conn.execute(_BURN_NONCE, {
                "digest": agent_auth.nonce_digest(claims),
                "expires_at": claims.signed_at + agent_auth.MAX_AGE + agent_auth.SKEW})
        except IntegrityError:
            raise Unauthorized("agent proof was already used (replay)") from None

    async def signed_spawn(self, header: str, *, method: str, path: str, body: bytes,
                           name: str, scope: Mapping[str, str], csr_pem: bytes,
                           lifetime: str | None, now: dt.datetime) -> SpawnResult:
        """Create a child agent and its certificate: proof, lineage bounds, identity,
        certificate, audit and events in one write transaction (``run_write``)."""
        proof = agent_auth.parse_header(header)

        def tx(conn: Connection) -> SpawnResult:
            row, certificate = self._authenticate_on(
                conn, proof, method=method, path=path, body=body, now=now,
                refused_in_quarantine="spawn sub-agents")
            ref = f"{row.kind}/{row.name}"
            remaining = certificate.not_valid_after_utc - now
            if lifetime:
                validity = parse_duration(lifetime)
                if validity > remaining:
                    raise InvalidInput(
                        f"a child certificate cannot outlive its parent's: {lifetime} asked,"
                        f" the parent certificate ends in {int(remaining.total_seconds())}s")
            else:
                validity = min(DEFAULT_CHILD_LIFETIME, remaining)
            if validity < dt.timedelta(seconds=60):
                raise InvalidInput("the parent certificate ends within a minute; renew it first")
            new = NewIdentity.build("ai_agent", name, row.owner, scope=dict(scope), parent=ref,
                                    description=f"sub-agent spawned by {ref}")
            depth, cursor = 0, row.parent_id
            while cursor is not None and depth <= MAX_LINEAGE_DEPTH:
                depth += 1
                cursor = conn.execute(_PARENT_OF, {"id": cursor}).scalar()
            children = int(conn.execute(_LIVE_CHILDREN, {"id": row.id}).scalar() or 0)
            check_child(ParentFacts(ref, row.status, row.owner, dict(row.scope or {}), depth,
                                    children), new.owner, new.scope)
            if conn.execute(_NAME_TAKEN, {"kind": "ai_agent", "name": new.name}).first():
                raise Conflict(f"identity ai_agent/{new.name} already exists")
            child_id = conn.execute(_INSERT_IDENTITY, {
                "kind": "ai_agent", "name": new.name, "owner_id": row.owner_id,
                "status": "active", "scope": new.scope, "parent_id": row.id,
                "allow_mab": False, "description": new.description, "created_at": now,
                "expires_at": None, "ceiling": row.ceiling}).scalar_one()
            if new.scope:
                conn.execute(_INSERT_LABELS, [{"identity_id": child_id, "key": k, "value": v}
                                              for k, v in new.scope.items()])
            child_ref = f"ai_agent/{new.name}"
            actor = f"agent:{ref}"
            audit.append_many_sync(conn, [(actor, "identity.add", child_ref, None, {
                "kind": "ai_agent", "name": new.name, "owner": row.owner, "status": "active",
                "scope": new.scope, "macs": [], "allow_mab": False, "parent": ref})], now)
            conn.execute(_INSERT_EVENT, {
                "event_id": str(uuid.uuid4()), "type": "identity.created", "at": now,
                "payload": {"identity": child_ref, "owner": row.owner, "scope": new.scope,
                            "parent": ref}, "published_at": None})
            bundle = self.ca.issue_on(conn, identity_id=child_id, kind="ai_agent",
                                      name=new.name, scope=new.scope, parent_id=row.id,
                                      csr_pem=csr_pem, validity=validity, now=now, actor=actor)
            after = {"parent": ref, "owner": row.owner, "scope": new.scope,
                     "serial": bundle.serial, "not_after": bundle.not_after.isoformat()}
            audit.append_many_sync(conn, [(actor, "agent.spawn", child_ref, None, after)], now)
            conn.execute(_INSERT_EVENT, {
                "event_id": str(uuid.uuid4()), "type": "agent.spawned", "at": now,
                "payload": {"identity": child_ref, **{k: v for k, v in after.items()
                                                       if k != "owner"}},
                "published_at": None})
            return SpawnResult(child_ref, ref, dict(new.scope), bundle)

        return await self.inventory.db.run_write(tx)

    async def signed_grant_request(self, header: str, *, method: str, path: str,
                                   body: bytes, label: str, duration: str,
                                   now: dt.datetime) -> GrantView:
        """The whole grant request — proof, checks, policy, grant, audit, events — as one
        write transaction of Core statements (``Database.run_write``): one thread
        crossing on SQLite, so a decision takes about a millisecond, not ten."""
        proof = agent_auth.parse_header(header)

        def tx(conn: Connection) -> GrantView:
            row, _cert = self._authenticate_on(conn, proof, method=method, path=path,
                                               body=body, now=now,
                                               refused_in_quarantine="widen its access")
            ref = f"{row.kind}/{row.name}"
            key, value = parse_label(label)
            length = parse_duration(duration)
            if length > self.max_grant:
                raise InvalidInput(f"a grant lasts at most {self.config.max_grant}; "
                                   f"{duration} was asked")
            if dict(row.scope or {}).get(key) == value:
                raise Conflict(f"{ref} already has {key}={value} in its scope")
            open_grants = conn.execute(_OPEN_GRANTS, {"iid": row.id}).all()
            for g in open_grants:
                if (g.key, g.value) == (key, value):
                    return GrantView(g.id, ref, f"{key}={value}", g.status,
                                     g.duration_seconds, g.requested_at, g.decided_at,
                                     g.decided_by, g.expires_at, g.reason)
            if len(open_grants) >= MAX_OPEN_GRANTS:
                raise Conflict(f"{ref} already has {len(open_grants)} open grants "
                               f"(limit {MAX_OPEN_GRANTS})")
            seconds = int(length.total_seconds())
            if within_ceiling(row.ceiling, key, value):
                status, decided_at, by, expires = "active", now, "policy", now + length
                reason = "inside the owner-approved ceiling"
            else:
                status, decided_at, by, expires = "pending", None, None, None
                reason = (f"{key}={value} is outside the ceiling; waiting for the owner "
                          f"until {now + self.pending_timeout:%Y-%m-%dT%H:%M:%SZ}")
            grant_id = conn.execute(_INSERT_GRANT, {
                "identity_id": row.id, "key": key, "value": value, "status": status,
                "duration_seconds": seconds, "requested_at": now, "decided_at": decided_at,
                "decided_by": by, "expires_at": expires, "reason": reason}).scalar_one()
            after = {"label": f"{key}={value}", "status": status,
                     "duration_seconds": seconds, "reason": reason, "owner": row.owner}
            audit.append_many_sync(conn, [(f"agent:{ref}", "agent.grant.request", ref, None,
                                           after)], now)
            events = [("agent.grant.requested", {"identity": ref, "id": grant_id, **after})]
            if status == "active":
                events.append(("agent.grant.approved", {
                    "identity": ref, "id": grant_id, "label": f"{key}={value}", "by": by,
                    "expires_at": expires.isoformat() if expires else None}))
            conn.execute(_INSERT_EVENT, [{"event_id": str(uuid.uuid4()), "type": t, "at": now,
                                          "payload": p, "published_at": None}
                                         for t, p in events])
            return GrantView(grant_id, ref, f"{key}={value}", status, seconds, now,
                             decided_at, by, expires, reason)

        return await self.inventory.db.run_write(tx)

    def _grant_event(self, g: AgentGrant, ref: str) -> dict[str, Any]:
        return {"identity": ref, "id": g.id, "label": f"{g.key}={g.value}",
                "by": g.decided_by,
                "expires_at": g.expires_at.isoformat() if g.expires_at else None}

    async def decide(self, grant_id: int, approve: bool, *, actor: str) -> GrantView:
        """The owner (or an admin for them) approves or denies a pending grant."""
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            g = await s.get(AgentGrant, grant_id)
            if g is None:
                raise NotFound(f"no grant {grant_id}")
            row = await s.get(Identity, g.identity_id)
            assert row is not None
            ref = _ref(row)
            if g.status == "pending" and now >= g.requested_at + self.pending_timeout:
                await self._close(s, g, ref, "timed_out", now, "no decision in time")
                raise Conflict(f"grant {grant_id} timed out waiting for a decision")
            if g.status != "pending":
                raise Conflict(f"grant {grant_id} is {g.status}, not pending")
            if approve:
                await active_identity(s, IdentityRef(IdentityKind(row.kind), row.name))
                g.status, g.expires_at = "active", now + dt.timedelta(seconds=g.duration_seconds)
                g.reason = "approved by the owner"
            else:
                g.status, g.reason = "denied", "denied by the owner"
            g.decided_at, g.decided_by = now, actor
            await audit.append(s, actor=actor, action=f"agent.grant.{_past(approve)}",
                               target=ref, before={"status": "pending"},
                               after={"grant": g.id, "label": f"{g.key}={g.value}",
                                      "status": g.status}, now=now)
            add_event(s, f"agent.grant.{_past(approve)}", self._grant_event(g, ref), now)
            return _grant_view(g, ref)

    async def expire_due(self) -> list[GrantView]:
        """End grants past their expiry and pending ones past the timeout."""
        now = self.inventory.clock()
        limit = now - self.pending_timeout
        # Called every second: look first (an indexed read), write only when due.
        if await self.inventory.db.run_read(
                lambda conn: conn.execute(_ANY_DUE, {"now": now, "limit": limit}).first()
        ) is None:
            return []
        async with self.inventory.db.transaction() as s:
            due = (await s.execute(
                select(AgentGrant, Identity.kind, Identity.name)
                .join(Identity, Identity.id == AgentGrant.identity_id)
                .where(((AgentGrant.status == "active") & (AgentGrant.expires_at <= now))
                       | ((AgentGrant.status == "pending")
                          & (AgentGrant.requested_at <= now - self.pending_timeout)))
                .order_by(AgentGrant.id).limit(1000))).all()
            ended = []
            for g, kind, name in due:
                if g.status == "active":
                    await self._close(s, g, f"{kind}/{name}", "expired", now, "time box ended")
                else:
                    await self._close(s, g, f"{kind}/{name}", "timed_out", now,
                                      "no decision in time")
                ended.append(_grant_view(g, f"{kind}/{name}"))
            return ended

    async def _close(self, s: AsyncSession, g: AgentGrant, ref: str, status: str,
                     now: dt.datetime, why: str) -> None:
        before = g.status
        g.status, g.reason = status, why
        if before == "pending":
            g.decided_at, g.decided_by = now, "timeout"
        await audit.append(s, actor="nhi-nac", action=f"agent.grant.{status}", target=ref,
                           before={"status": before},
                           after={"grant": g.id, "label": f"{g.key}={g.value}",
                                  "status": status}, now=now)
        add_event(s, f"agent.grant.{status}", self._grant_event(g, ref), now)

    async def grants(self, ref: IdentityRef | None = None, status: str | None = None,
                     limit: int = 1000) -> list[GrantView]:
        if status is not None and status not in GRANT_STATES:
            raise InvalidInput(f"unknown grant status {status!r} ({', '.join(GRANT_STATES)})")
        q = (select(AgentGrant, Identity.kind, Identity.name)
             .join(Identity, Identity.id == AgentGrant.identity_id))
        if ref is not None:
            q = q.where(Identity.kind == ref.kind.value, Identity.name == ref.name)
        if status is not None:
            q = q.where(AgentGrant.status == status)
        async with self.inventory.db.read() as s:
            rows = (await s.execute(q.order_by(AgentGrant.id.desc()).limit(limit))).all()
        return [_grant_view(g, f"{k}/{n}") for g, k, n in reversed(rows)]

    # -- sub-agents ------------------------------------------------------------------------

    # -- lineage view ------------------------------------------------------------------------

    async def tree(self, ref: IdentityRef) -> list[TreeNode]:
        async with self.inventory.db.read() as s:
            root = await self._row(s, ref)
            rows = [root, *await descendants(s, root.id)]
            depth = {root.id: 0}
            for r in rows[1:]:
                depth[r.id] = depth.get(r.parent_id or 0, 0) + 1
            ids = [r.id for r in rows]
            grants: dict[int, list[str]] = {}
            for g in (await s.scalars(select(AgentGrant).where(
                    AgentGrant.identity_id.in_(ids), AgentGrant.status.in_(
                        ("pending", "active"))).order_by(AgentGrant.id))).all():
                until = (f" until {g.expires_at:%Y-%m-%dT%H:%M:%SZ}" if g.expires_at
                         else "")
                grants.setdefault(g.identity_id, []).append(
                    f"{g.key}={g.value} ({g.status}{until})")
            certs: dict[int, dt.datetime] = {}
            for iid, not_after in (await s.execute(
                    select(Credential.identity_id, Credential.expires_at).where(
                        Credential.identity_id.in_(ids), Credential.type == "certificate",
                        Credential.status == "active"))).all():
                if not_after is not None and (iid not in certs or not_after > certs[iid]):
                    certs[iid] = not_after
        order = _preorder(rows)
        return [TreeNode(depth[r.id], _ref(r), r.status, dict(r.scope), r.ceiling,
                         r.quarantined_at is not None, tuple(grants.get(r.id, ())),
                         certs.get(r.id)) for r in order]

    async def _row(self, s: AsyncSession, ref: IdentityRef) -> Identity:
        row = await s.scalar(select(Identity).where(Identity.kind == ref.kind.value,
                                                    Identity.name == ref.name))
        if row is None:
            raise NotFound(f"no identity {ref}")
        return row


def _preorder(rows: list[Identity]) -> list[Identity]:
    children: dict[int | None, list[Identity]] = {}
    for r in rows[1:]:
        children.setdefault(r.parent_id, []).append(r)
    out: list[Identity] = []

    def walk(node: Identity) -> None:
        out.append(node)
        for c in children.get(node.id, []):
            walk(c)
    walk(rows[0])
    return out


def _wider_than(ceiling: Mapping[str, list[str]],
                parent: Mapping[str, list[str]] | None) -> list[str]:
    outer = parent or {}
    return sorted(f"{k}={v}" for k, values in ceiling.items() for v in values
                  if v not in outer.get(k, ()))


def _past(approve: bool) -> str:
    return "approved" if approve else "denied"
