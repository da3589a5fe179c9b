"""Bulk import of identities from CSV or JSON, all or nothing.

Every row is checked first (syntax, then against the database: owners, duplicates,
MACs, parents); the first bad row stops the import with its row number and reason and
nothing is written. A good file is inserted in one transaction in batches.

CSV columns (header required): ``kind,name,owner`` and optionally ``scope``
(``k=v`` separated by spaces or ``;``), ``macs`` (separated by spaces or ``;``),
``parent`` (``KIND/NAME``), ``allow_mab`` (true/false), ``description``.
JSON: a list of objects with the same fields (``scope`` may be an object, ``macs`` a
list), or ``{"owners": [{"email", "name", "team"}], "identities": [...]}``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.domain import IdentityRef, parse_scope
from nhi_nac.errors import InvalidInput
from nhi_nac.inventory import Inventory, NewIdentity, _check_email, parent_facts
from nhi_nac.lineage import ParentFacts, check_child
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import Identity, IdentityLabel, IdentityMac, Owner, table_of
from nhi_nac.views import ImportReport

#: Largest import file accepted, in bytes.
MAX_IMPORT_BYTES = 512 * 1024 * 1024
#: Rows per INSERT round trip.
IMPORT_BATCH = 5000
#: Rows per IN (...) lookup while checking against the database.
LOOKUP_CHUNK = 500
#: An import this large refreshes the planner's statistics of the tables it wrote at
#: once, rather than when autovacuum gets to them (a minute later, or never where it is
#: off). Without them, PostgreSQL's planner may take a freshly loaded table for a tiny
#: one: a fleet enrolling right after its import then had each batch's token burn scan
#: every active identity (2.4 ms a batch with 1,100 of them), and label filters walk
#: identities in name order instead of starting from the most selective label.
ANALYZE_AFTER_ROWS = 1_000
#: The tables an import writes whose statistics queries depend on.
IMPORTED_TABLES = ("owners", "identities", "identity_labels", "identity_macs")
CSV_FIELDS = ("kind", "name", "owner", "scope", "macs", "parent", "allow_mab", "description")


class ImportRefused(InvalidInput):
    def __init__(self, row: str, reason: str) -> None:
        super().__init__(f"{row}: {reason} (nothing was imported)")
        self.row = row
        self.reason = reason


@dataclass(frozen=True)
class NewOwner:
    email: str
    name: str
    team: str


def _split(text: str) -> list[str]:
    return [p for p in text.replace(";", " ").split() if p]


def _bool(value: Any, row: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise ImportRefused(row, f"allow_mab {value!r} is not true/false")


def _row_identity(row: str, rec: Mapping[str, Any]) -> NewIdentity:
    try:
        scope = rec.get("scope") or {}
        if isinstance(scope, str):
            scope = parse_scope(_split(scope))
        if not isinstance(scope, Mapping):
            raise InvalidInput("scope must be an object or 'k=v k=v'")
        macs = rec.get("macs") or []
        if isinstance(macs, str):
            macs = _split(macs)
        unknown = set(rec) - set(CSV_FIELDS)
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}")
        return NewIdentity.build(
            kind=str(rec.get("kind") or ""), name=str(rec.get("name") or ""),
            owner=str(rec.get("owner") or "") or None, scope=scope, macs=macs,
            parent=str(rec.get("parent") or "") or None,
            allow_mab=_bool(rec.get("allow_mab"), row),
            description=str(rec.get("description") or ""),
        )
    except InvalidInput as exc:
        if isinstance(exc, ImportRefused):
            raise
        raise ImportRefused(row, exc.message) from None


def parse_import(
    data: bytes, filename: str
) -> tuple[list[NewOwner], list[tuple[str, NewIdentity]]]:
    """Parse a CSV or JSON file into owners and labelled identity rows (syntax checks only)."""
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidInput(f"{filename}: larger than {MAX_IMPORT_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{filename}: not UTF-8 text") from None
    if filename.lower().endswith(".json"):
        return _parse_json(text, filename)
    if filename.lower().endswith(".csv"):
        return [], list(_parse_csv(text, filename))
    raise InvalidInput(f"{filename}: import files end in .csv or .json")


def _parse_csv(text: str, filename: str) -> Iterator[tuple[str, NewIdentity]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = {"kind", "name", "owner"} - set(header)
    if missing:
        raise ImportRefused(f"{filename} line 1", f"missing column(s) {', '.join(sorted(missing))}")
    for rec in reader:
        label = f"{filename} line {reader.line_num}"
        if None in rec:
            raise ImportRefused(label, "more values than columns")
        yield label, _row_identity(label, {k: v for k, v in rec.items() if v not in (None, "")})


def _parse_json(text: str, filename: str) -> tuple[list[NewOwner], list[tuple[str, NewIdentity]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportRefused(f"{filename} line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    owners: list[NewOwner] = []
    if isinstance(doc, dict):
        for i, o in enumerate(doc.get("owners") or []):
            label = f"{filename} owners[{i}]"
            if not isinstance(o, dict) or not o.get("email") or not o.get("name"):
                raise ImportRefused(label, "an owner needs email and name")
            try:
                owners.append(NewOwner(_check_email(str(o["email"])), str(o["name"]),
                                       str(o.get("team") or "")))
            except InvalidInput as exc:
                raise ImportRefused(label, exc.message) from None
        doc = doc.get("identities") or []
    if not isinstance(doc, list):
        raise ImportRefused(filename, "expected a list of identities")
    rows = []
    for i, rec in enumerate(doc):
        label = f"{filename} identities[{i}]"
        if not isinstance(rec, dict):
            raise ImportRefused(label, "each identity is an object")
        rows.append((label, _row_identity(label, rec)))
    return owners, rows


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def import_identities(
    inv: Inventory,
    owners: Sequence[NewOwner],
    rows: Sequence[tuple[str, NewIdentity]],
    *,
    actor: str,
    source: str = "",
) -> ImportReport:
    now = inv.clock()
    async with inv.db.transaction() as s:
        owner_ids = await _import_owners(s, owners, rows, now)
        if owners:
            await audit.append_many(s, [(actor, "owner.add", f"owner/{o.email}", None,
                                        {"email": o.email, "name": o.name, "team": o.team})
                                       for o in owners], now)
        existing = await _existing_refs(s, rows)
        await _check_rows(s, rows, existing, owner_ids)
        ids: dict[tuple[str, str], int] = {}
        created: list[str] = []
        pending: list[tuple[str, NewIdentity]] = []
        for label, new in rows:
            if new.parent is not None and (new.parent.kind.value, new.parent.name) in {
                    (p.kind.value, p.name) for _, p in pending}:
                await _flush(s, pending, owner_ids, ids, existing, actor, now, created)
            pending.append((label, new))
            if len(pending) >= IMPORT_BATCH:
                await _flush(s, pending, owner_ids, ids, existing, actor, now, created)
        await _flush(s, pending, owner_ids, ids, existing, actor, now, created)
        add_event(s, "identity.imported", {"source": source, "created": len(created),
                                           "owners": len(owners)}, now)
    if len(created) >= ANALYZE_AFTER_ROWS:
        await inv.db.analyze(*IMPORTED_TABLES)
    return ImportReport(len(created), tuple(created[:1000]))


async def _import_owners(
    s: AsyncSession,
    owners: Sequence[NewOwner],
    rows: Sequence[tuple[str, NewIdentity]],
    now: dt.datetime,
) -> dict[str, tuple[int, str]]:
    emails = sorted({n.owner for _, n in rows} | {o.email for o in owners})
    known: dict[str, tuple[int, str]] = {}
    for chunk in _chunks(emails, LOOKUP_CHUNK):
        for oid, email, status in (await s.execute(
                select(Owner.id, Owner.email, Owner.status).where(Owner.email.in_(chunk)))).all():
            known[email] = (oid, status)
    for o in owners:
        if o.email in known:
            raise ImportRefused(f"owner {o.email}", "already exists")
    new = list(owners)
    if new:
        result = await s.execute(
            insert(Owner).returning(Owner.id, Owner.email, sort_by_parameter_order=True),
            [{"email": o.email, "name": o.name, "team": o.team, "status": "active",
              "created_at": now} for o in new],
        )
        for oid, email in result.all():
            known[email] = (oid, "active")
    return known


async def _existing_refs(
    s: AsyncSession, rows: Sequence[tuple[str, NewIdentity]]
) -> dict[tuple[str, str], tuple[int, str]]:
    refs = {(n.kind.value, n.name) for _, n in rows}
    refs |= {(n.parent.kind.value, n.parent.name) for _, n in rows if n.parent}
    found: dict[tuple[str, str], tuple[int, str]] = {}
    for chunk in _chunks(sorted(refs), LOOKUP_CHUNK):
        for iid, kind, name, status in (await s.execute(
                select(Identity.id, Identity.kind, Identity.name, Identity.status)
                .where(tuple_(Identity.kind, Identity.name).in_(chunk)))).all():
            found[(kind, name)] = (iid, status)
    return found


async def _check_rows(
    s: AsyncSession,
    rows: Sequence[tuple[str, NewIdentity]],
    existing: Mapping[tuple[str, str], tuple[int, str]],
    owners: Mapping[str, tuple[int, str]],
) -> None:
    macs: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    # Lineage facts of parents met so far (in the file, or loaded from the database).
    parents: dict[tuple[str, str], ParentFacts] = {}
    for label, new in rows:
        key = (new.kind.value, new.name)
        owner = owners.get(new.owner)
        if owner is None:
            raise ImportRefused(label, f"unknown owner {new.owner}")
        if owner[1] != "active":
            raise ImportRefused(label, f"owner {new.owner} has departed")
        if key in existing or key in seen:
            raise ImportRefused(label, f"identity {new.kind.value}/{new.name} already exists")
        if new.parent is not None:
            pkey = (new.parent.kind.value, new.parent.name)
            if pkey not in seen and pkey not in existing:
                raise ImportRefused(label, f"parent {new.parent} does not exist (define it first)")
            facts = parents.get(pkey)
            if facts is None:  # an identity already in the database
                row = await s.get(Identity, existing[pkey][0])
                assert row is not None
                facts = await parent_facts(s, row)
            try:
                check_child(facts, new.owner, new.scope)
            except InvalidInput as exc:
                raise ImportRefused(label, exc.message) from None
            parents[pkey] = replace(facts, live_children=facts.live_children + 1)
            parents[key] = ParentFacts(f"{key[0]}/{key[1]}", "active", new.owner, new.scope,
                                       facts.depth + 1, 0)
        else:
            parents[key] = ParentFacts(f"{key[0]}/{key[1]}", "active", new.owner, new.scope,
                                       0, 0)
        for mac in new.macs:
            if mac in macs:
                raise ImportRefused(label, f"MAC {mac} is also given at {macs[mac]}")
            macs[mac] = label
        seen.add(key)
    all_macs = sorted(macs)
    for chunk in _chunks(all_macs, LOOKUP_CHUNK):
        taken = (await s.execute(select(IdentityMac.mac).where(IdentityMac.mac.in_(chunk)))).first()
        if taken is not None:
            raise ImportRefused(macs[taken[0]], f"MAC {taken[0]} already belongs to an identity")


async def _flush(
    s: AsyncSession,
    pending: list[tuple[str, NewIdentity]],
    owners: Mapping[str, tuple[int, str]],
    ids: dict[tuple[str, str], int],
    existing: Mapping[tuple[str, str], tuple[int, str]],
    actor: str,
    now: dt.datetime,
    created: list[str],
) -> None:
    if not pending:
        return

    def parent_id(ref: IdentityRef | None) -> int | None:
        if ref is None:
            return None
        key = (ref.kind.value, ref.name)
        return ids[key] if key in ids else existing[key][0]

    params = [{
        "kind": n.kind.value, "name": n.name, "owner_id": owners[n.owner][0], "status": "active",
        "scope": n.scope, "parent_id": parent_id(n.parent), "allow_mab": n.allow_mab,
        "description": n.description, "created_at": now, "expires_at": n.expires_at,
    } for _, n in pending]
    # RETURNING without a promised order lets SQLite batch the rows; map back by name.
    table = table_of(Identity)
    result = await s.execute(
        insert(table).returning(table.c.id, table.c.kind, table.c.name), params)
    for iid, kind, name in result.all():
        ids[(kind, name)] = iid
    labels: list[dict[str, Any]] = []
    macs: list[dict[str, Any]] = []
    entries: list[tuple[str, str, str, None, dict[str, Any]]] = []
    for _, n in pending:
        iid = ids[(n.kind.value, n.name)]
        labels.extend({"identity_id": iid, "key": k, "value": v} for k, v in n.scope.items())
        macs.extend({"identity_id": iid, "mac": m} for m in n.macs)
        ref = f"{n.kind.value}/{n.name}"
        created.append(ref)
        after = {"kind": n.kind.value, "name": n.name, "owner": n.owner, "status": "active",
                 "scope": n.scope, "macs": list(n.macs), "allow_mab": n.allow_mab}
        if n.parent is not None:
            after["parent"] = str(n.parent)
        entries.append((actor, "identity.import", ref, None, after))
    if labels:
        await s.execute(insert(table_of(IdentityLabel)), labels)
    if macs:
        await s.execute(insert(table_of(IdentityMac)), macs)
    await audit.append_many(s, entries, now)
    pending.clear()
