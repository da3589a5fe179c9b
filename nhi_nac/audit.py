"""The hash-chained audit log.

Every change appends one record in the same transaction as the change itself::

    hash(n) = SHA-256( hash(n-1) || canonical_json(seq, at, actor, action, target, before, after) )

with ``hash(0)`` = 64 zeros. The single ``audit_head`` row holds the tip; appenders lock
it (``FOR UPDATE`` on PostgreSQL; SQLite serializes writers anyway), so the chain never
forks. :func:`verify_chain` recomputes every link and names the first record that was
edited, removed or reordered, and notices a truncated tail through the head row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac.storage import sqlite_raw
from nhi_nac.storage.models import AuditHead, AuditRecord, table_of

GENESIS_HASH = "0" * 64
#: Records read per round trip while verifying.
VERIFY_BATCH = 5000


def _dump(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def record_hash(
    prev_hash: str,
    seq: int,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str,
    before: str | None,
    after: str | None,
) -> str:
    body = json.dumps(
        [seq, at.astimezone(dt.UTC).isoformat(timespec="microseconds"), actor, action, target,
         before, after],
        separators=(",", ":"),
    )
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: dt.datetime,
) -> AuditRecord:
    """Append one record inside the caller's transaction."""
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        session.add(head)
    seq = head.seq + 1
    # Microsecond precision is what both backends store, so hash what will be read back.
    at = now.astimezone(dt.UTC)
    b, a = _dump(before), _dump(after)
    digest = record_hash(head.hash, seq, at, actor, action, target, b, a)
    rec = AuditRecord(
        seq=seq, at=at, actor=actor, action=action, target=target,
        before=b, after=a, prev_hash=head.hash, hash=digest,
    )
    session.add(rec)
    head.seq, head.hash = seq, digest
    return rec


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    records: int
    #: The seq of the first record that fails, or None.
    bad_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"OK: {self.records} audit records, chain intact"
        where = f"record {self.bad_seq}" if self.bad_seq is not None else "chain head"
        return f"FAILED at {where}: {self.reason}"


async def _records(session: AsyncSession) -> AsyncIterator[AuditRecord]:
    last = 0
    while True:
        batch = (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.seq > last)
                .order_by(AuditRecord.seq).limit(VERIFY_BATCH)
            )
        ).all()
        if not batch:
            return
        for rec in batch:
            yield rec
        last = batch[-1].seq


async def verify_chain(session: AsyncSession) -> ChainVerdict:
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    async for rec in _records(session):
        if rec.seq != expected_seq:
            return ChainVerdict(False, count, expected_seq,
                                f"record {expected_seq} is missing (next is {rec.seq})")
        if rec.prev_hash != prev_hash:
            return ChainVerdict(False, count, rec.seq,
                                "previous-hash link broken (record removed or reordered)")
        digest = record_hash(prev_hash, rec.seq, rec.at, rec.actor, rec.action, rec.target,
                             rec.before, rec.after)
        if digest != rec.hash:
            return ChainVerdict(False, count, rec.seq, "content does not match its hash (edited)")
        prev_hash, expected_seq, count = rec.hash, expected_seq + 1, count + 1
    head = await session.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    if (head_seq, head_hash) != (count, prev_hash):
        return ChainVerdict(False, count, count + 1 if head_seq > count else None,
                            f"head says {head_seq} records, found {count} (tail removed)")
    return ChainVerdict(True, count)


Entry = tuple[str, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None]


def _chain(seq: int, prev: str, entries: Sequence[Entry], now: dt.datetime
           ) -> tuple[list[dict[str, Any]], int, str]:
    """The rows that extend the chain from (seq, prev) by ``entries``, and the new tip."""
    at = now.astimezone(dt.UTC)
    rows: list[dict[str, Any]] = []
    for actor, action, target, before, after in entries:
        seq += 1
        b, a = _dump(before), _dump(after)
        digest = record_hash(prev, seq, at, actor, action, target, b, a)
        rows.append({"seq": seq, "at": at, "actor": actor, "action": action, "target": target,
                     "before": b, "after": a, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows, seq, prev


async def append_many(
    session: AsyncSession,
    entries: Sequence[tuple[str, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None]],
    now: dt.datetime,
) -> None:
    """Append (actor, action, target, before, after) records in bulk, one head lock."""
    if not entries:
        return
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        session.add(head)
    rows, seq, prev = _chain(head.seq, head.hash, entries, now)
    await session.execute(insert(table_of(AuditRecord)), rows)
    head.seq, head.hash = seq, prev


_HEAD = table_of(AuditHead)
_HEAD_FOR_UPDATE = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_RECORDS = insert(table_of(AuditRecord))
_INSERT_HEAD = insert(_HEAD)
_UPDATE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)


def append_many_sync(
    conn: Connection,
    entries: Sequence[tuple[str, str, str, Mapping[str, Any] | None, Mapping[str, Any] | None]],
    now: dt.datetime,
) -> None:
    """:func:`append_many` on a synchronous connection (``Database.run_write``): the same
    chain and hashes, one head lock."""
    if not entries:
        return
    cur = sqlite_raw.cursor(conn)
    if cur is not None:
        try:
            _append_many_sqlite(cur, entries, now)
        finally:
            cur.close()
        return
    head = conn.execute(_HEAD_FOR_UPDATE).first()
    seq, prev = (head[0], head[1]) if head is not None else (0, GENESIS_HASH)
    rows, seq, prev = _chain(seq, prev, entries, now)
    conn.execute(_INSERT_RECORDS, rows)
    if head is None:
        conn.execute(_INSERT_HEAD, {"id": 1, "seq": seq, "hash": prev})
    else:
        conn.execute(_UPDATE_HEAD, {"seq": seq, "hash": prev})


def lock_and_chain(conn: Connection, entries: Sequence[Entry], now: dt.datetime
                   ) -> tuple[list[dict[str, Any]], int, str]:
    """Lock the head (``FOR UPDATE``) and return the records that extend the chain by
    ``entries`` and the new tip (seq, hash), writing nothing: for a caller that writes
    the records and the new head in one statement with rows of its own (PostgreSQL's
    enrollment batch, ``ca_service._record_issued``). The head stays locked until the
    caller's transaction ends, as with :func:`append_many_sync`."""
    head = conn.execute(_HEAD_FOR_UPDATE).first()
    seq, prev = (head[0], head[1]) if head is not None else (0, GENESIS_HASH)
    return _chain(seq, prev, entries, now)


def _append_many_sqlite(cur: sqlite3.Cursor, entries: Sequence[Entry], now: dt.datetime) -> None:
    """:func:`append_many_sync` in raw SQL on SQLite's own connection (storage.sqlite_raw):
    the same rows, SQLite's single writer standing in for the head lock."""
    head = cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    seq, prev = (head[0], head[1]) if head is not None else (0, GENESIS_HASH)
    rows, seq, prev = _chain(seq, prev, entries, now)
    cur.executemany(
        'INSERT INTO audit_log (seq, at, actor, action, target, "before", "after", prev_hash, '
        "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r["seq"], sqlite_raw.db_time(r["at"]), r["actor"], r["action"], r["target"],
          r["before"], r["after"], r["prev_hash"], r["hash"]) for r in rows])
    if head is None:
        cur.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", (seq, prev))
    else:
        cur.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
