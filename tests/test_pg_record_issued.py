"""On PostgreSQL, the enrollment batch stores what it issued in one statement after the
audit head's lock (``ca_service._record_issued_pg``); it must write exactly what the
Core statements (``_record_issued_core``) write.

Both run on copies of one seeded database (``CREATE DATABASE … TEMPLATE``) with the same
inputs, and the tables they leave are compared row by row as PostgreSQL prints them
(only the random event ids differ). The copies start with the same sequences, so the
rows' ids compare too. tests/test_sqlite_raw.py does the same for SQLite's raw path.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

import pki
from nhi_nac import ca_service
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.storage.db import Database
from tests.conftest import _pg_admin, _pg_dsn, assert_chain_verifies

NOW = dt.datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=dt.UTC)
TABLES = ("credentials", "identities", "audit_log", "audit_head", "event_outbox")
Issued = list[tuple[int, str, str, pki.IssuedCertificate, dict[str, Any]]]


def _cert(i: int, not_after: dt.datetime) -> pki.IssuedCertificate:
    return pki.IssuedCertificate(
        serial=0x7F00 + i, fingerprint_sha256=f"{i:064x}", not_before=NOW,
        not_after=not_after, pem=f"-----BEGIN CERTIFICATE-----\nM{i}==\n-----END "
        "CERTIFICATE-----\n".encode(), der=b"0\0", profile="workload",
        spiffe_id=f"spiffe://nhi.example/workload/w{i}", key_fingerprint=f"{i + 100:064x}")


async def _dump(dsn: str, table: str) -> list[tuple[Any, ...]]:
    """A table's rows as PostgreSQL prints each column, in primary-key order; the event
    ids (random uuid4s) left out."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        cols = [r[0] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "AND column_name <> 'event_id' ORDER BY ordinal_position", table)]
        listed = ", ".join(f'"{c}"::text' for c in cols)
        return [tuple(r) for r in await conn.fetch(f"SELECT {listed} FROM {table} ORDER BY 1")]
    finally:
        await conn.close()


@pytest.fixture
async def seeded(database: Database) -> AsyncIterator[tuple[str, list[int]]]:
    """A PostgreSQL database with an owner and two identities (the audit chain already
    started), closed so that it can be copied; its name and the identities' ids."""
    inv = Inventory(database, lambda: NOW)
    await inv.add_owner("alice@example.com", "Alice", "platform", actor="t")
    for n in ("a", "b"):
        await inv.add_identity(NewIdentity.build("workload", n, "alice@example.com"), actor="t")
    ids = await database.run_read(lambda conn: [r[0] for r in conn.execute(
        text("SELECT id FROM identities ORDER BY name"))])
    await database.close()
    yield database.engine.url.database or "", ids


async def _copy(name: str) -> str:
    copy = f"{name}_c{uuid.uuid4().hex[:6]}"
    await _pg_admin(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
    return copy


async def _write(name: str, fn: Any) -> Any:
    db = Database(_pg_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        return await db.run_write(fn)
    finally:
        await db.close()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("head", ["chain-started", "no-head-row"])
async def test_one_statement_writes_what_the_core_statements_write(
        seeded: tuple[str, list[int]], head: str) -> None:
    name, (a, b) = seeded
    if head == "no-head-row":  # the first records a database ever gets
        conn = await asyncpg.connect(_pg_dsn(name), timeout=5)
        try:
            await conn.execute("DELETE FROM audit_log; DELETE FROM audit_head")
        finally:
            await conn.close()
    at = NOW + dt.timedelta(seconds=1, microseconds=5)
    issued: Issued = [
        (a, "workload/a", "enroll:workload/a", _cert(0, NOW + dt.timedelta(hours=24)), {}),
        (a, "workload/a", "renew:workload/a",
         _cert(1, NOW + dt.timedelta(hours=24, microseconds=1)), {"renews": "ab"}),
        (b, "workload/b", "spawn:workload/a", _cert(2, NOW + dt.timedelta(days=7)),
         {"parent": "workload/a", "note": "quote \" and \u00e9"})]
    core = await _copy(name)
    try:
        await _write(name, lambda conn: ca_service._record_issued(conn, issued, at))
        await _write(core, lambda conn: ca_service._record_issued_core(conn, issued, at))
        for table in TABLES:
            one, twin = await _dump(_pg_dsn(name), table), await _dump(_pg_dsn(core), table)
            assert one == twin, table
        assert len(await _dump(_pg_dsn(name), "credentials")) == 3
        # The events keep the order given (the relay publishes by id).
        events = await _dump(_pg_dsn(name), "event_outbox")
        assert ['"serial": "7f00"' in e[-2] for e in events[-3:]] == [True, False, False]
        await assert_chain_verifies(
            Database(_pg_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1)))
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{core}" WITH (FORCE)')


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_refused_row_leaves_nothing_written(seeded: tuple[str, list[int]]) -> None:
    """A serial already stored (a unique index) fails the one statement: no credential,
    event or audit record of the batch is written and the audit head stays where it was."""
    name, (a, _b) = seeded
    first: Issued = [(a, "workload/a", "t", _cert(0, NOW), {})]
    await _write(name, lambda conn: ca_service._record_issued(conn, first, NOW))
    before = {t: await _dump(_pg_dsn(name), t) for t in TABLES}
    again: Issued = [(a, "workload/a", "t", _cert(5, NOW), {}),
                     (a, "workload/a", "t", _cert(0, NOW), {})]

    def write(conn: Connection) -> None:
        ca_service._record_issued(conn, again, NOW + dt.timedelta(seconds=1))

    with pytest.raises(IntegrityError, match="serial"):
        await _write(name, write)
    assert {t: await _dump(_pg_dsn(name), t) for t in TABLES} == before
