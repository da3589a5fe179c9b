"""The inventory service: owners, identities, credentials metadata and NAS clients.

Every change runs in one transaction that also appends to the audit chain and writes
its event to the outbox; a refused change raises an :class:`NhiError` and writes nothing.
Invariants held on every path (CLI, API, import):

- an identity always has an owner, and only an *active* owner can receive one;
- ``(kind, name)`` is unique; a MAC belongs to at most one identity;
- ``retired`` is terminal; nothing is hard-deleted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509 import ReasonFlags
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import pki
from nhi_nac import audit
from nhi_nac.domain import (
    IdentityKind,
    IdentityRef,
    IdentityStatus,
    OwnerStatus,
    check_name,
    check_scope,
    normalize_mac,
    parse_kind,
)
from nhi_nac.errors import Conflict, InvalidInput, NotFound
from nhi_nac.lineage import MAX_LINEAGE_DEPTH, ParentFacts, check_child
from nhi_nac.outbox import add_event
from nhi_nac.storage import queries
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import (
    AuditRecord,
    Credential,
    Identity,
    IdentityLabel,
    IdentityMac,
    NasClient,
    Owner,
)
from nhi_nac.views import (
    AuditEntry,
    CredentialView,
    IdentityView,
    NasView,
    OffboardReport,
    OwnerView,
)

NAS_VENDORS = ("generic", "cisco", "aruba", "juniper", "hostapd")
MAX_MACS_PER_IDENTITY = 16
#: Largest page a list call returns.
MAX_LIST_LIMIT = 10_000
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 128

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_email(email: str) -> str:
    email = email.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or len(email) > 254 or " " in email:
        raise InvalidInput(f"invalid owner email {email!r}")
    return email


@dataclass(frozen=True)
class NewIdentity:
    """A validated request to create one identity (from CLI, API or an import row)."""

    kind: IdentityKind
    name: str
    owner: str
    scope: dict[str, str] = field(default_factory=dict)
    macs: tuple[str, ...] = ()
    parent: IdentityRef | None = None
    allow_mab: bool = False
    description: str = ""
    expires_at: dt.datetime | None = None

    @classmethod
    def build(
        cls,
        kind: str,
        name: str,
        owner: str | None,
        scope: Mapping[str, str] | None = None,
        macs: Iterable[str] = (),
        parent: str | None = None,
        allow_mab: bool = False,
        description: str = "",
        expires_at: dt.datetime | None = None,
    ) -> NewIdentity:
        k = parse_kind(kind)
        if not owner:
            raise InvalidInput("an owner is required: every identity belongs to a human")
        mac_list = tuple(dict.fromkeys(normalize_mac(m) for m in macs))
        if mac_list and k is not IdentityKind.DEVICE:
            raise InvalidInput(f"MAC addresses belong to devices, not to {k.value} identities")
        if len(mac_list) > MAX_MACS_PER_IDENTITY:
            raise InvalidInput(f"at most {MAX_MACS_PER_IDENTITY} MAC addresses per identity")
        if allow_mab and not mac_list:
            raise InvalidInput("MAC-auth-bypass needs at least one MAC address")
        if len(description) > 1000:
            raise InvalidInput("description is longer than 1000 characters")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a time zone")
        return cls(
            kind=k,
            name=check_name(name),
            owner=_check_email(owner),
            scope=check_scope(scope or {}),
            macs=mac_list,
            parent=IdentityRef.parse(parent) if parent else None,
            allow_mab=allow_mab,
            description=description,
            expires_at=expires_at,
        )


def _identity_snapshot(row: Identity, owner: str, macs: Sequence[str]) -> dict[str, Any]:
    return {
        "kind": row.kind, "name": row.name, "owner": owner, "status": row.status,
        "scope": row.scope, "macs": list(macs), "allow_mab": row.allow_mab,
    }


class Inventory:
    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock

    # -- owners ---------------------------------------------------------------

    async def add_owner(self, email: str, name: str, team: str = "", *, actor: str) -> OwnerView:
        email = _check_email(email)
        if not name.strip() or len(name) > 200:
            raise InvalidInput("owner name is required (at most 200 characters)")
        if len(team) > 100:
            raise InvalidInput("team is longer than 100 characters")
        now = self.clock()
        async with self.db.transaction() as s:
            if await s.scalar(select(Owner.id).where(Owner.email == email)):
                raise Conflict(f"owner {email} already exists")
            row = Owner(email=email, name=name.strip(), team=team, status="active", created_at=now)
            s.add(row)
            after = {"email": email, "name": row.name, "team": team, "status": "active"}
            await audit.append(s, actor=actor, action="owner.add", target=f"owner/{email}",
                               before=None, after=after, now=now)
            add_event(s, "owner.added", after, now)
        return _owner_view(row, 0)

    async def list_owners(self) -> list[OwnerView]:
        async with self.db.read() as s:
            counts = (
                select(Identity.owner_id, func.count().label("n"))
                .where(Identity.status != "retired").group_by(Identity.owner_id).subquery()
            )
            rows = await s.execute(
                select(Owner, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.owner_id == Owner.id).order_by(Owner.email)
            )
            return [_owner_view(o, n) for o, n in rows.all()]

    async def offboard_owner(
        self, email: str, reassign_to: str | None = None, *, actor: str
    ) -> OffboardReport:
        email = _check_email(email)
        now = self.clock()
        async with self.db.transaction() as s:
            owner = await self._owner(s, email)
            if owner.status == OwnerStatus.DEPARTED:
                raise Conflict(f"owner {email} has already departed")
            target = None
            if reassign_to:
                target = await self._active_owner(s, _check_email(reassign_to))
                if target.id == owner.id:
                    raise InvalidInput("cannot reassign an owner's identities to the same owner")
            live = (await s.scalars(
                select(Identity).where(Identity.owner_id == owner.id, Identity.status != "retired")
                .order_by(Identity.kind, Identity.name)
            )).all()
            refs = tuple(f"{i.kind}/{i.name}" for i in live)
            owner.status, owner.departed_at = OwnerStatus.DEPARTED.value, now
            await audit.append(s, actor=actor, action="owner.offboard", target=f"owner/{email}",
                               before={"status": "active"},
                               after={"status": "departed", "reassign_to": reassign_to,
                                      "identities": list(refs)}, now=now)
            if target is not None:
                for ident in live:
                    ident.owner_id = target.id
                    await audit.append(s, actor=actor, action="identity.reassign",
                                       target=f"{ident.kind}/{ident.name}",
                                       before={"owner": email}, after={"owner": target.email},
                                       now=now)
            orphaned = [] if target else list(refs)
            add_event(s, "owner.departed", {"email": email, "orphaned": orphaned,
                                            "reassigned_to": reassign_to}, now)
        if target is not None:
            return OffboardReport(email, (), target.email, refs)
        return OffboardReport(email, refs, None, ())

    # -- identities -------------------------------------------------------------

    async def add_identity(self, new: NewIdentity, *, actor: str) -> IdentityView:
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._insert_identity(s, new, now, actor)
            add_event(s, "identity.created", {"identity": f"{row.kind}/{row.name}",
                                              "owner": new.owner, "scope": row.scope}, now)
        return await self.get_identity(IdentityRef(new.kind, new.name))

    async def _insert_identity(
        self, s: AsyncSession, new: NewIdentity, now: dt.datetime, actor: str
    ) -> Identity:
        owner = await self._active_owner(s, new.owner)
        exists_id = await s.scalar(
            select(Identity.id).where(Identity.kind == new.kind.value, Identity.name == new.name)
        )
        if exists_id is not None:
            raise Conflict(f"identity {new.kind.value}/{new.name} already exists")
        parent_id = None
        if new.parent is not None:
            parent = await self._identity(s, new.parent)
            check_child(await parent_facts(s, parent), owner.email, new.scope)
            parent_id = parent.id
        for mac in new.macs:
            holder = await s.scalar(
                select(Identity).join(IdentityMac, IdentityMac.identity_id == Identity.id)
                .where(IdentityMac.mac == mac)
            )
            if holder is not None:
                raise Conflict(f"MAC {mac} already belongs to {holder.kind}/{holder.name}")
        row = Identity(
            kind=new.kind.value, name=new.name, owner_id=owner.id, status="active",
            scope=new.scope, parent_id=parent_id, allow_mab=new.allow_mab,
            description=new.description, created_at=now, expires_at=new.expires_at,
        )
        s.add(row)
        await s.flush()
        s.add_all(IdentityLabel(identity_id=row.id, key=k, value=v) for k, v in new.scope.items())
        s.add_all(IdentityMac(mac=m, identity_id=row.id) for m in new.macs)
        after = _identity_snapshot(row, owner.email, new.macs)
        if new.parent is not None:
            after["parent"] = str(new.parent)
        await audit.append(s, actor=actor, action="identity.add",
                           target=f"{row.kind}/{row.name}", before=None, after=after, now=now)
        return row

    async def get_identity(self, ref: IdentityRef) -> IdentityView:
        return await self.db.run_read(lambda s: queries.identity_by_ref(s, ref))

    async def find_by_mac(self, mac: str) -> IdentityView | None:
        mac = normalize_mac(mac)
        return await self.db.run_read(lambda s: queries.identity_by_mac(s, mac))

    async def find_by_fingerprint(self, fingerprint: str) -> IdentityView | None:
        fp = fingerprint.lower()
        return await self.db.run_read(lambda s: queries.identity_by_fingerprint(s, fp))

    async def list_identities(
        self,
        kind: str | None = None,
        scope: Mapping[str, str] | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[IdentityView]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"limit must be 1-{MAX_LIST_LIMIT}")
        if offset < 0:
            raise InvalidInput("offset must not be negative")
        k = parse_kind(kind).value if kind else None
        st = _check_status(status) if status else None
        em = _check_email(owner) if owner else None
        sc = check_scope(scope or {})
        return await self.db.run_read(
            lambda s: queries.list_identities(s, k, sc, st, em, limit, offset))

    async def set_status(self, ref: IdentityRef, status: str, *, actor: str) -> IdentityView:
        """Suspend, reactivate or retire an identity; retired is terminal."""
        new = IdentityStatus(_check_status(status))
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            old = row.status
            if old == IdentityStatus.RETIRED:
                raise Conflict(f"{ref} is retired; retirement is final")
            if old == new:
                raise Conflict(f"{ref} is already {new.value}")
            if new == IdentityStatus.ACTIVE:
                owner = await s.get(Owner, row.owner_id)
                if owner is None or owner.status != OwnerStatus.ACTIVE:
                    raise InvalidInput(f"{ref} cannot be reactivated: its owner is not active")
            await self._change_status(s, row, new, now, actor, cause=None)
            if new != IdentityStatus.ACTIVE:
                # Suspending or retiring a parent cascades to every descendant, in this
                # same transaction: no child of a stopped agent keeps working.
                for child in await descendants(s, row.id):
                    if child.status == IdentityStatus.RETIRED or child.status == new:
                        continue
                    await self._change_status(s, child, new, now, actor, cause=str(ref))
        return await self.get_identity(ref)

    async def quarantine(self, ref: IdentityRef, reason: str, *, actor: str) -> list[str]:
        """Put an identity and its descendants in quarantine; returns who was affected."""
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            if row.status == IdentityStatus.RETIRED:
                raise Conflict(f"{ref} is retired")
            return await quarantine_identity(s, row, reason, actor=actor, now=now)

    async def release(self, ref: IdentityRef, *, actor: str) -> list[str]:
        """Lift the quarantine of an identity and its descendants (the owner's call)."""
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            if row.quarantined_at is None:
                raise Conflict(f"{ref} is not quarantined")
            released = []
            for r in [row, *await descendants(s, row.id)]:
                if r.quarantined_at is None:
                    continue
                before = {"quarantined_at": r.quarantined_at.isoformat(),
                          "reason": r.quarantine_reason}
                r.quarantined_at, r.quarantine_reason = None, None
                target = f"{r.kind}/{r.name}"
                released.append(target)
                await audit.append(s, actor=actor, action="identity.released", target=target,
                                   before=before, after={"quarantined": False}, now=now)
                add_event(s, "identity.released", {"identity": target}, now)
            return released

    async def revoke_certificates(self, ref: IdentityRef, reason: str, *,
                                  actor: str) -> list[str]:
        """Revoke every active certificate of ``ref`` and of all its descendants, in one
        transaction (the caller re-signs the CRL; the events disconnect sessions)."""
        try:
            flag = pki.parse_reason(reason)
        except pki.PkiError as exc:
            raise InvalidInput(str(exc)) from None
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            return await revoke_identity_certificates(s, row, flag.value, actor=actor,
                                                      now=now)

    async def release_certificates(self, ref: IdentityRef, *, actor: str) -> list[str]:
        """Take every held (``certificateHold``) certificate of ``ref`` and of its
        descendants off hold, in one transaction: what ``revoke_certificates`` with that
        reason put on hold. Certificates past their notAfter, and those of a retired
        descendant, stay as they are; a retired ``ref`` is refused. Returns the serials
        (the caller re-signs the CRL; the events let RADIUS admit them again)."""
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            if row.status == IdentityStatus.RETIRED:
                raise Conflict(f"{ref} is retired: its certificates stay revoked")
            live = {r.id: f"{r.kind}/{r.name}" for r in [row, *await descendants(s, row.id)]
                    if r.status != IdentityStatus.RETIRED}
            creds = (await s.scalars(select(Credential).where(
                Credential.identity_id.in_(list(live)), Credential.type == "certificate",
                Credential.status == "revoked",
                Credential.revocation_reason == ReasonFlags.certificate_hold.value,
                queries.unexpired(now)).order_by(Credential.id))).all()
            root = live[row.id]
            for cred in creds:
                owner_ref = live[cred.identity_id]
                await release_credential(s, cred, identity=owner_ref, actor=actor, now=now,
                                         cause=None if owner_ref == root else root)
            return [cred.serial or "" for cred in creds]

    async def quarantine_state(self, ref: IdentityRef) -> tuple[dt.datetime | None, str | None]:
        async with self.db.read() as s:
            row = await self._identity(s, ref)
            return row.quarantined_at, row.quarantine_reason

    async def _change_status(self, s: AsyncSession, row: Identity, new: IdentityStatus,
                             now: dt.datetime, actor: str, cause: str | None) -> None:
        old, ref = row.status, f"{row.kind}/{row.name}"
        row.status = new.value
        if new == IdentityStatus.RETIRED:
            row.retired_at = now
            # Credentials of a retired identity are dead; the CA publishes the revocation.
            # One on hold is made permanent (it can no longer be released) and keeps the
            # date of its hold, as pki.reason_may_change allows.
            for cred in (await s.scalars(select(Credential).where(
                    Credential.identity_id == row.id, or_(
                        Credential.status == "active",
                        (Credential.status == "revoked") & (
                            Credential.revocation_reason
                            == ReasonFlags.certificate_hold.value))))).all():
                if cred.status == "active":
                    cred.status, cred.revoked_at = "revoked", now
                cred.revocation_reason = ReasonFlags.cessation_of_operation.value
        after: dict[str, Any] = {"status": new.value}
        if cause:
            after["cascade_from"] = cause
        await audit.append(s, actor=actor, action=f"identity.{_verb(new)}", target=ref,
                           before={"status": old}, after=after, now=now)
        add_event(s, f"identity.{_verb(new)}", {"identity": ref, "from": old,
                                                 "to": new.value, "cascade_from": cause}, now)

    async def add_credential(
        self,
        ref: IdentityRef,
        *,
        type_: str,
        fingerprint: str,
        serial: str | None = None,
        profile: str = "",
        not_before: dt.datetime | None = None,
        expires_at: dt.datetime | None = None,
        pem: str | None = None,
        actor: str,
    ) -> CredentialView:
        """Record a credential's metadata (the secret itself is never stored)."""
        if type_ not in ("certificate", "api_key", "token"):
            raise InvalidInput("credential type must be certificate, api_key or token")
        fp = fingerprint.lower()
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise InvalidInput("fingerprint must be a SHA-256 hex digest")
        now = self.clock()
        async with self.db.transaction() as s:
            row = await self._identity(s, ref)
            if row.status != IdentityStatus.ACTIVE:
                raise InvalidInput(f"{ref} is {row.status}; it cannot receive credentials")
            if await s.scalar(select(Credential.id).where(Credential.fingerprint == fp)):
                raise Conflict(f"a credential with fingerprint {fp} is already recorded")
            cred = Credential(
                identity_id=row.id, type=type_, serial=serial, fingerprint=fp, profile=profile,
                status="active", created_at=now, last_rotated_at=None, not_before=not_before,
                expires_at=expires_at, pem=pem,
            )
            s.add(cred)
            row.last_rotated_at = now
            await audit.append(s, actor=actor, action="credential.add", target=str(ref),
                               before=None, after={"type": type_, "fingerprint": fp,
                                                   "serial": serial}, now=now)
            add_event(s, "credential.added", {"identity": str(ref), "type": type_,
                                              "fingerprint": fp}, now)
        return queries.credential_view(cred)

    async def family(self, ref: IdentityRef) -> list[tuple[int, IdentityView]]:
        """The identity and all its descendants as (depth, view), depth-first."""
        async with self.db.read() as s:
            root = await self._identity(s, ref)
            rows = [root, *await descendants(s, root.id)]
        by_parent: dict[int | None, list[Identity]] = {}
        for r in rows:
            by_parent.setdefault(r.parent_id, []).append(r)
        out: list[tuple[int, IdentityView]] = []

        async def walk(node: Identity, depth: int) -> None:
            out.append((depth, await self.get_identity(IdentityRef(IdentityKind(node.kind),
                                                                   node.name))))
            for child in by_parent.get(node.id, []):
                await walk(child, depth + 1)

        await walk(root, 0)
        return out

    # -- NAS clients ------------------------------------------------------------

    async def add_nas(
        self,
        name: str,
        address: str,
        secret: str,
        vendor: str = "generic",
        site: str = "",
        require_message_authenticator: bool = True,
        *,
        actor: str,
    ) -> NasView:
        check_name(name)
        try:
            net = ipaddress.ip_network(address, strict=True)
        except ValueError as exc:
            raise InvalidInput(f"NAS address {address!r}: {exc}") from None
        if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
            raise InvalidInput(
                f"shared secret must be {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH} characters "
                "(short secrets make RADIUS authenticators guessable)"
            )
        if vendor not in NAS_VENDORS:
            raise InvalidInput(f"unknown NAS vendor {vendor!r} (one of: {', '.join(NAS_VENDORS)})")
        now = self.clock()
        async with self.db.transaction() as s:
            if await s.scalar(select(NasClient.id).where(NasClient.name == name)):
                raise Conflict(f"NAS {name} already exists")
            if await s.scalar(select(NasClient.name).where(NasClient.address == str(net))):
                raise Conflict(f"a NAS with address {net} already exists")
            row = NasClient(name=name, address=str(net), secret=secret, vendor=vendor, site=site,
                            require_message_authenticator=require_message_authenticator,
                            created_at=now)
            s.add(row)
            after = {"name": name, "address": str(net), "vendor": vendor, "site": site,
                     "require_message_authenticator": require_message_authenticator}
            await audit.append(s, actor=actor, action="nas.add", target=f"nas/{name}",
                               before=None, after=after, now=now)
            add_event(s, "nas.added", after, now)
        return _nas_view(row)

    async def list_nas(self) -> list[NasView]:
        async with self.db.read() as s:
            return [_nas_view(r) for r in (await s.scalars(
                select(NasClient).order_by(NasClient.name))).all()]

    async def remove_nas(self, name: str, *, actor: str) -> None:
        now = self.clock()
        async with self.db.transaction() as s:
            row = await s.scalar(select(NasClient).where(NasClient.name == name))
            if row is None:
                raise NotFound(f"no NAS named {name}")
            await s.delete(row)
            await audit.append(s, actor=actor, action="nas.remove", target=f"nas/{name}",
                               before={"address": row.address}, after=None, now=now)
            add_event(s, "nas.removed", {"name": name}, now)

    # -- audit ---------------------------------------------------------------------

    async def verify_audit(self) -> audit.ChainVerdict:
        async with self.db.read() as s:
            return await audit.verify_chain(s)

    async def audit_entries(self, limit: int = 50, target: str | None = None) -> list[AuditEntry]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"limit must be 1-{MAX_LIST_LIMIT}")
        q = select(AuditRecord)
        if target:
            q = q.where(AuditRecord.target == target)
        q = q.order_by(AuditRecord.seq.desc()).limit(limit)
        async with self.db.read() as s:
            rows = (await s.scalars(q)).all()
        return [AuditEntry(r.seq, r.at, r.actor, r.action, r.target, r.before, r.after, r.hash)
                for r in reversed(rows)]

    # -- helpers ---------------------------------------------------------------------

    async def _owner(self, s: AsyncSession, email: str) -> Owner:
        owner = await s.scalar(select(Owner).where(Owner.email == email))
        if owner is None:
            raise NotFound(f"unknown owner {email}")
        return owner

    async def _active_owner(self, s: AsyncSession, email: str) -> Owner:
        owner = await s.scalar(select(Owner).where(Owner.email == email))
        if owner is None:
            raise InvalidInput(f"unknown owner {email}: add the owner first (nhi-nac owner add)")
        if owner.status != OwnerStatus.ACTIVE:
            raise InvalidInput(f"owner {email} has departed and cannot own identities")
        return owner

    async def _identity(self, s: AsyncSession, ref: IdentityRef) -> Identity:
        row = await s.scalar(
            select(Identity).where(Identity.kind == ref.kind.value, Identity.name == ref.name)
        )
        if row is None:
            raise NotFound(f"no identity {ref}")
        return row


async def parent_facts(s: AsyncSession, parent: Identity) -> ParentFacts:
    owner = await s.get(Owner, parent.owner_id)
    depth, cursor = 0, parent.parent_id
    while cursor is not None and depth <= MAX_LINEAGE_DEPTH:
        depth += 1
        cursor = await s.scalar(select(Identity.parent_id).where(Identity.id == cursor))
    children = await s.scalar(select(func.count()).select_from(Identity).where(
        Identity.parent_id == parent.id, Identity.status != "retired"))
    return ParentFacts(f"{parent.kind}/{parent.name}", parent.status,
                       owner.email if owner else "", dict(parent.scope), depth,
                       int(children or 0))


async def descendants(s: AsyncSession, root_id: int) -> list[Identity]:
    """Every identity below ``root_id``, parents before children (bounded by depth)."""
    found: list[Identity] = []
    frontier = [root_id]
    for _ in range(MAX_LINEAGE_DEPTH + 1):
        if not frontier:
            break
        level = (await s.scalars(select(Identity).where(Identity.parent_id.in_(frontier))
                                 .order_by(Identity.id))).all()
        found.extend(level)
        frontier = [c.id for c in level]
    return found


def _check_status(status: str) -> str:
    if status not in {s.value for s in IdentityStatus}:
        raise InvalidInput(f"unknown status {status!r} (active, suspended or retired)")
    return status


def _verb(status: IdentityStatus) -> str:
    return {"active": "reactivated", "suspended": "suspended", "retired": "retired"}[status.value]


def _owner_view(o: Owner, identities: int) -> OwnerView:
    return OwnerView(o.email, o.name, o.team, o.status, o.created_at, o.departed_at, identities)


def _nas_view(r: NasClient) -> NasView:
    return NasView(r.name, r.address, r.vendor, r.site, r.require_message_authenticator,
                   r.created_at)


async def quarantine_identity(s: AsyncSession, row: Identity, reason: str, *, actor: str,
                              now: dt.datetime) -> list[str]:
    """Quarantine ``row`` and its live descendants in the caller's transaction.

    A quarantined identity is admitted only to the segment map's fallback (or refused,
    when the fallback is reject); the ``identity.quarantined`` event makes the enforcer
    re-authenticate its live sessions so the change takes effect now.
    """
    reason = reason.strip()[:300] or "quarantined"
    done = []
    root = f"{row.kind}/{row.name}"
    for r in [row, *await descendants(s, row.id)]:
        if r.quarantined_at is not None or r.status == IdentityStatus.RETIRED:
            continue
        r.quarantined_at, r.quarantine_reason = now, reason
        target = f"{r.kind}/{r.name}"
        done.append(target)
        cause = None if r is row else root
        await audit.append(s, actor=actor, action="identity.quarantined", target=target,
                           before={"quarantined": False},
                           after={"quarantined": True, "reason": reason,
                                  "cascade_from": cause}, now=now)
        add_event(s, "identity.quarantined", {"identity": target, "reason": reason,
                                              "cascade_from": cause}, now)
    return done


async def revoke_identity_certificates(s: AsyncSession, row: Identity, reason: str, *,
                                       actor: str, now: dt.datetime,
                                       cascade: bool = True) -> list[str]:
    """Revoke the valid certificates of ``row`` (and, by default, of every descendant)
    in the caller's transaction; returns the serials. Each revocation is audited and
    raises ``certificate.revoked``, which re-signs the CRL and disconnects sessions.
    ``reason`` is an RFC 5280 name; a valid certificate already revoked takes it where
    ``pki.reason_may_change`` allows (keyCompromise over another reason, a hold made
    permanent) and is left as it is otherwise."""
    rows = [row, *(await descendants(s, row.id) if cascade else [])]
    refs = {r.id: f"{r.kind}/{r.name}" for r in rows}
    flag = ReasonFlags(reason)
    creds = (await s.scalars(select(Credential).where(
        Credential.identity_id.in_(list(refs)), Credential.type == "certificate",
        Credential.status.in_(("active", "revoked")), queries.unexpired(now)).order_by(
        Credential.id))).all()
    root = refs[row.id]
    serials = []
    for cred in creds:
        if cred.status == "revoked" and not pki.reason_may_change(cred.revocation_reason, flag):
            continue
        owner_ref = refs[cred.identity_id]
        await revoke_credential(s, cred, flag, identity=owner_ref, actor=actor, now=now,
                                cause=None if owner_ref == root else root)
        serials.append(cred.serial or "")
    return serials


async def release_credential(s: AsyncSession, cred: Credential, *, identity: str,
                             actor: str, now: dt.datetime, cause: str | None = None) -> None:
    """Take one held certificate off hold in the caller's transaction (the caller has
    checked that it is on hold, unexpired, and not a retired identity's), audited, with a
    ``certificate.released`` event."""
    before = {"status": "revoked", "reason": cred.revocation_reason,
              "revoked_at": cred.revoked_at.isoformat() if cred.revoked_at else None}
    cred.status, cred.revoked_at, cred.revocation_reason = "active", None, None
    after: dict[str, Any] = {"status": "active"}
    payload: dict[str, Any] = {"serial": cred.serial, "identity": identity}
    if cause is not None:
        after["cascade_from"] = payload["cascade_from"] = cause
    await audit.append(s, actor=actor, action="certificate.release",
                       target=f"certificate/{cred.serial}", before=before, after=after, now=now)
    add_event(s, "certificate.released", payload, now)


async def revoke_credential(s: AsyncSession, cred: Credential, reason: ReasonFlags, *,
                            identity: str | None, actor: str, now: dt.datetime,
                            cause: str | None = None) -> None:
    """Revoke one certificate in the caller's transaction, audited, with a
    ``certificate.revoked`` event. One already revoked (the caller has checked
    ``pki.reason_may_change``) keeps its revocation date and takes the new reason; its
    audit record and event carry the reason it replaces."""
    before: dict[str, Any] = {"status": cred.status}
    payload: dict[str, Any] = {"serial": cred.serial, "identity": identity,
                               "reason": reason.value, "cascade_from": cause}
    if cred.status == "revoked":
        before["reason"] = payload["previous_reason"] = cred.revocation_reason or "unspecified"
    else:
        cred.status, cred.revoked_at = "revoked", now
    cred.revocation_reason = reason.value
    after = {"status": "revoked", "reason": reason.value, "cascade_from": cause}
    await audit.append(s, actor=actor, action="certificate.revoke",
                       target=f"certificate/{cred.serial}", before=before, after=after, now=now)
    add_event(s, "certificate.revoked", payload, now)
