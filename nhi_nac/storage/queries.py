"""Read queries written once, as plain synchronous functions over a ``Connection``.

:meth:`Database.run_read` runs them either on a synchronous SQLite connection in the
event-loop thread (an indexed SQLite read takes tens of microseconds; the two thread
hops of an async driver cost far more) or, on PostgreSQL, through
``AsyncConnection.run_sync`` on the async driver. One implementation, both backends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

import pki
from nhi_nac.domain import IdentityRef
from nhi_nac.errors import NotFound
from nhi_nac.storage.models import (
    Credential,
    Identity,
    IdentityLabel,
    IdentityMac,
    OutboxEvent,
    Owner,
)
from nhi_nac.views import CredentialView, IdentityView

#: Ids per IN (...) list.
IN_CHUNK = 500

def unexpired(now: dt.datetime) -> ColumnElement[bool]:
    """Credentials not past their expiry at ``now`` (or with none). What revoking an
    identity revokes: an expired certificate admits nobody and leaves the CRL soon
    after (``pki.KEEP_AFTER_EXPIRY``), and a workload renewed daily has one a day."""
    return or_(Credential.expires_at.is_(None), Credential.expires_at > now)


_NEWER = aliased(Credential)
#: A certificate credential that a later active certificate of the same identity has
#: superseded (a renewal, or a new enrollment). It stays valid, and "active", until its
#: notAfter, but the identity has rotated: it is history to governance (not expired,
#: stale or due) and to "expiring within". Correlated with ``Credential``.
SUPERSEDED_CERTIFICATE = and_(
    Credential.type == "certificate",
    exists().where(_NEWER.identity_id == Credential.identity_id,
                   _NEWER.type == "certificate", _NEWER.status == "active",
                   _NEWER.id > Credential.id))


def certificate_history(now: dt.datetime) -> ColumnElement[bool]:
    """A superseded certificate that has also expired by ``now``: history, not a live
    credential (governance does not read it; reports do not count it)."""
    return and_(SUPERSEDED_CERTIFICATE, ~unexpired(now))

#: The revoked certificates a CRL made at ``now`` lists (bind
#: :func:`listed_revoked_params`): all but those that expired more than
#: ``pki.KEEP_AFTER_EXPIRY`` before it. The CRL and RADIUS's revoked set hold these.
LISTED_REVOKED = and_(
    Credential.type == "certificate", Credential.status == "revoked",
    or_(Credential.expires_at.is_(None), Credential.expires_at > bindparam("kept_after")))


def listed_revoked_params(now: dt.datetime) -> dict[str, Any]:
    return {"kept_after": now - pki.KEEP_AFTER_EXPIRY}


def credential_view(c: Any) -> CredentialView:
    """From a Credential row or ORM object (same attribute names)."""
    return CredentialView(c.type, c.fingerprint, c.serial, c.profile, c.status, c.created_at,
                          c.last_rotated_at, c.expires_at, c.revoked_at, c.revocation_reason)


def macs_of(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
    result: dict[int, list[str]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        for mac, ident in conn.execute(_MACS_OF, {"ids": list(chunk)}).all():
            result.setdefault(ident, []).append(mac)
    return {k: tuple(v) for k, v in result.items()}


def parent_refs(conn: Connection, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = sorted({i for i in ids if i is not None})
    found: dict[int, str] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        rows = conn.execute(_REFS_OF, {"ids": wanted[start : start + IN_CHUNK]})
        found.update({i: f"{k}/{n}" for i, k, n in rows.all()})
    return found


# Core column selects: no ORM identity map or entity loading on the lookup path.
_WITH_OWNER = select(
    Identity.id, Identity.kind, Identity.name, Identity.status, Identity.scope,
    Identity.parent_id, Identity.allow_mab, Identity.description, Identity.created_at,
    Identity.last_rotated_at, Identity.expires_at, Identity.last_seen_at, Identity.retired_at,
    Owner.email.label("owner"), Owner.status.label("owner_status"),
).join(Owner, Owner.id == Identity.owner_id)
# Statements are built once with bind parameters: building one per call costs SQLAlchemy
# far more (cache-key generation, coercion) than SQLite spends answering it.
_CREDENTIALS = select(
    Credential.type, Credential.fingerprint, Credential.serial, Credential.profile,
    Credential.status, Credential.created_at, Credential.last_rotated_at, Credential.expires_at,
    Credential.revoked_at, Credential.revocation_reason,
).where(Credential.identity_id == bindparam("id")).order_by(Credential.created_at, Credential.id)
_MACS_OF = select(IdentityMac.mac, IdentityMac.identity_id).where(
    IdentityMac.identity_id.in_(bindparam("ids", expanding=True))).order_by(IdentityMac.mac)
_REFS_OF = select(Identity.id, Identity.kind, Identity.name).where(
    Identity.id.in_(bindparam("ids", expanding=True)))
_BY_REF = _WITH_OWNER.where(Identity.kind == bindparam("kind"),
                            Identity.name == bindparam("name"))
_BY_MAC = _WITH_OWNER.join(IdentityMac, IdentityMac.identity_id == Identity.id).where(
    IdentityMac.mac == bindparam("mac"))
_BY_FINGERPRINT = _WITH_OWNER.join(Credential, Credential.identity_id == Identity.id).where(
    Credential.fingerprint == bindparam("fp"))


def _views(conn: Connection, rows: Sequence[Any],
           with_credentials: bool = False) -> list[IdentityView]:
    macs = macs_of(conn, [r.id for r in rows])
    parents = parent_refs(conn, [r.parent_id for r in rows])
    views = []
    for r in rows:
        creds: tuple[CredentialView, ...] = ()
        if with_credentials:
            creds = tuple(credential_view(c) for c in conn.execute(_CREDENTIALS, {"id": r.id}))
        views.append(IdentityView(
            kind=r.kind, name=r.name, owner=r.owner, owner_status=r.owner_status,
            status=r.status, scope=dict(r.scope), macs=macs.get(r.id, ()),
            parent=parents.get(r.parent_id) if r.parent_id is not None else None,
            allow_mab=r.allow_mab, description=r.description, created_at=r.created_at,
            last_rotated_at=r.last_rotated_at, expires_at=r.expires_at,
            last_seen_at=r.last_seen_at, retired_at=r.retired_at, credentials=creds,
        ))
    return views


def identity_by_ref(conn: Connection, ref: IdentityRef) -> IdentityView:
    row = conn.execute(_BY_REF, {"kind": ref.kind.value, "name": ref.name}).first()
    if row is None:
        raise NotFound(f"no identity {ref}")
    return _views(conn, [row], with_credentials=True)[0]


def identity_by_mac(conn: Connection, mac: str) -> IdentityView | None:
    row = conn.execute(_BY_MAC, {"mac": mac}).first()
    return None if row is None else _views(conn, [row])[0]


def identity_by_fingerprint(conn: Connection, fingerprint: str) -> IdentityView | None:
    row = conn.execute(_BY_FINGERPRINT, {"fp": fingerprint}).first()
    return None if row is None else _views(conn, [row])[0]


#: Caps on the label rows counted to choose which label drives a filter: each round
#: counts up to the cap and stops as soon as one label is known to be the smallest.
SELECTIVITY_CAPS = (1_000, 30_000, 1_000_000)
_LABEL_COUNT = select(func.count()).select_from(
    select(IdentityLabel.identity_id).where(
        IdentityLabel.key == bindparam("key"), IdentityLabel.value == bindparam("value"))
    .limit(bindparam("cap")).subquery())


def _by_selectivity(conn: Connection, labels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Order labels so that the one matching the fewest identities comes first."""
    if len(labels) < 2:
        return labels
    for cap in SELECTIVITY_CAPS:
        counts = [int(conn.execute(_LABEL_COUNT, {"key": k, "value": v, "cap": cap})
                      .scalar_one()) for k, v in labels]
        if min(counts) < cap:
            break
    ranked = sorted(zip(counts, labels, strict=True), key=lambda cl: cl[0])
    return [label for _, label in ranked]


def list_identities(
    conn: Connection,
    kind: str | None,
    scope: Mapping[str, str],
    status: str | None,
    owner: str | None,
    limit: int,
    offset: int,
) -> list[IdentityView]:
    q = _WITH_OWNER
    if kind:
        q = q.where(Identity.kind == kind)
    if status:
        q = q.where(Identity.status == status)
    if owner:
        q = q.where(Owner.email == owner)
    if scope:
        # Drive the query from the most selective label (a bounded count decides: SQLite's
        # statistics cannot tell env=prod from team=payments) and probe the others.
        labels = _by_selectivity(conn, sorted(scope.items()))
        (key, value), rest = labels[0], labels[1:]
        driver = select(IdentityLabel.identity_id).where(
            IdentityLabel.key == key, IdentityLabel.value == value).subquery("driver")
        q = q.join(driver, driver.c.identity_id == Identity.id)
        for k, v in rest:
            q = q.where(exists().where(IdentityLabel.identity_id == Identity.id,
                                       IdentityLabel.key == k, IdentityLabel.value == v))
    q = q.order_by(Identity.kind, Identity.name).limit(limit).offset(offset)
    return _views(conn, conn.execute(q).all())


#: Event types that change what the RADIUS directory holds in memory.
#: (``certificate.issued`` is not one: the directory keeps revoked serials only.)
INVENTORY_EVENT_PREFIXES = ("identity.", "owner.", "nas.", "credential.",
                            "certificate.revoked", "certificate.released")
NEWEST_EVENT = select(func.max(OutboxEvent.id))


def event_probe(prefixes: Sequence[str]) -> Select[Any]:
    """A prebuilt statement for :func:`changed_since`: is there an outbox event whose type
    starts with one of ``prefixes`` in (``after``, ``upto``]?"""
    return select(OutboxEvent.id).where(
        OutboxEvent.id > bindparam("after"), OutboxEvent.id <= bindparam("upto"),
        or_(*(OutboxEvent.type.startswith(p, autoescape=True) for p in prefixes)),
    ).limit(1)


_INVENTORY_EVENT_AFTER = event_probe(INVENTORY_EVENT_PREFIXES)


def newest_event(conn: Connection) -> int:
    return int(conn.execute(NEWEST_EVENT).scalar() or 0)


def changed_since(conn: Connection, after: int, probe: Select[Any]) -> tuple[int, bool]:
    """The newest outbox id, and whether an event ``probe`` (:func:`event_probe`) looks for
    came after ``after`` up to it. The newest id is read first, so an event written in
    between is seen next time; nothing newer, no second read."""
    newest = newest_event(conn)
    if newest <= after:
        return newest, False
    hit = conn.execute(probe, {"after": after, "upto": newest}).first()
    return newest, hit is not None


def inventory_changed_since(conn: Connection, after: int) -> tuple[int, bool]:
    """:func:`changed_since` for the events that change the RADIUS directory."""
    return changed_since(conn, after, _INVENTORY_EVENT_AFTER)
