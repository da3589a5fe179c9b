"""The raw SQLite statements of the enrollment batch and the audit chain (storage.sqlite_raw)
read and write exactly what their SQLAlchemy Core twins do.

Each raw function and its Core twin run on copies of one SQLite database with the same
inputs; the rows they return are equal, and the tables they leave are equal column by
column as stored text (only the random event ids differ). PostgreSQL's one-statement
issuance records are compared with the same Core twin in tests/test_pg_record_issued.py;
tests/pki/test_enroll_service.py runs the whole batch on both backends.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

import pki
from nhi_nac import audit, ca_service
from nhi_nac.bootstrap_tokens import create_bootstrap_tokens, token_digest
from nhi_nac.domain import IdentityRef
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.storage import sqlite_raw
from nhi_nac.storage.db import Database
from tests.conftest import assert_chain_verifies

NOW = dt.datetime(2026, 11, 29, 10, 0, 0, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


async def _open(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    return db


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A database with tokens in every state the batch tells apart, and the token of each
    by the state's name."""
    path = tmp_path / "seed.db"
    db = await _open(path)
    clock = Clock()
    inv = Inventory(db, clock)
    await inv.add_owner("alice@example.com", "Alice", "platform", actor="t")
    await inv.add_owner("bob@example.com", "Bob", "platform", actor="t")
    specs = {"fresh": ("alice@example.com", {"dns": "api.nhi.example", "env": "prod"}),
             "used": ("alice@example.com", {}), "expired": ("alice@example.com", {}),
             "suspended": ("alice@example.com", {}), "departed": ("bob@example.com", {})}
    for name, (owner, scope) in specs.items():
        await inv.add_identity(NewIdentity.build("workload", name, owner, scope=scope),
                               actor="t")
    await inv.add_identity(NewIdentity.build("workload", "child", "alice@example.com",
                                             parent="workload/fresh"),
                           actor="t")
    # Microseconds in "now" exercise the stored text's fraction.
    clock.now = NOW.replace(microsecond=123456)
    tokens: dict[str, str] = {}
    for names, ttl in (([n for n in specs if n != "expired"] + ["child"], 300),
                       (["expired"], 30)):
        minted = await create_bootstrap_tokens(
            inv, [IdentityRef.parse(f"workload/{n}") for n in names],
            dt.timedelta(seconds=ttl), actor="t")
        tokens.update((n, t) for n, (t, _) in zip(names, minted, strict=True))
    clock.now = NOW + dt.timedelta(minutes=4)
    await db.run_write(lambda conn: ca_service._consume_tokens(
        conn, [_token_id(conn, tokens["used"])], clock.now))
    await inv.set_status(IdentityRef.parse("workload/suspended"), "suspended", actor="t")
    await inv.offboard_owner("bob@example.com", actor="t")
    await db.close()
    yield path, tokens


def _token_id(conn: Connection, token: str) -> int:
    return int(ca_service._token_rows_core(conn, [token_digest(token)])[token_digest(token)]
               .token_id)


def _dump(path: Path, table: str, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    """A table's rows as stored (text, not parsed), minus the ``skip`` columns."""
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in skip]
        quoted = ", ".join(f'"{c}"' for c in cols)
        return conn.execute(f"SELECT {quoted} FROM {table} ORDER BY 1").fetchall()


async def _twice(tmp_path: Path, seed: Path, monkeypatch: pytest.MonkeyPatch,
                 write: Callable[[Connection], Any]) -> tuple[Path, Any, Path, Any]:
    """Run ``write`` in a transaction on a raw-path copy and on a Core-path copy of
    ``seed``; returns (raw db, its result, core db, its result)."""
    results = []
    for variant in ("raw", "core"):
        path = tmp_path / f"{variant}.db"
        shutil.copy(seed, path)
        db = await _open(path)
        with monkeypatch.context() as m:
            if variant == "core":
                m.setattr(sqlite_raw, "cursor", lambda _conn: None)
            results.append((path, await db.run_write(write)))
        await db.close()
    (raw_path, raw), (core_path, core) = results
    return raw_path, raw, core_path, core


async def test_token_rows_read_the_same_as_core(seeded: tuple[Path, dict[str, str]]) -> None:
    path, tokens = seeded
    db = await _open(path)
    hashes = [token_digest(t) for t in tokens.values()] + ["0" * 64]

    def both(conn: Connection) -> tuple[Any, Any]:
        return ca_service._token_rows(conn, hashes), ca_service._token_rows_core(conn, hashes)

    try:
        raw, core = await db.run_read(both)
    finally:
        await db.close()
    assert raw == core
    by_name = {r.name: r for r in raw.values()}
    assert set(by_name) == set(tokens)
    assert by_name["fresh"].scope == {"dns": "api.nhi.example", "env": "prod"}
    assert by_name["used"].used_at == NOW + dt.timedelta(minutes=4)
    assert by_name["fresh"].expires_at == NOW.replace(microsecond=123456) + dt.timedelta(
        minutes=5)
    assert by_name["child"].parent_id == by_name["fresh"].identity_id
    assert (by_name["suspended"].status, by_name["departed"].owner_status) == (
        "suspended", "departed")


async def test_consuming_tokens_marks_the_same_ones(
        seeded: tuple[Path, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, tokens = seeded
    # "expired" lived 30 s; the others live 5 minutes.
    at = NOW + dt.timedelta(minutes=4, seconds=30, microseconds=7)

    def consume(conn: Connection) -> set[int]:
        ids = [_token_id(conn, t) for t in tokens.values()]
        return ca_service._consume_tokens(conn, ids, at)

    raw_path, raw, core_path, core = await _twice(tmp_path, path, monkeypatch, consume)
    assert raw == core and len(raw) == 2  # fresh and child: not used, suspended, departed
    assert _dump(raw_path, "enrollment_tokens") == _dump(core_path, "enrollment_tokens")
    # An expiry in the past is refused by both as well.
    late = NOW + dt.timedelta(minutes=6)
    _, raw, _, core = await _twice(
        tmp_path, path, monkeypatch,
        lambda conn: ca_service._consume_tokens(conn, [_token_id(conn, tokens["fresh"])], late))
    assert raw == core == set()


async def test_recording_issued_certificates_writes_the_same_rows(
        seeded: tuple[Path, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = seeded
    at = NOW + dt.timedelta(seconds=1, microseconds=5)
    certs = [pki.IssuedCertificate(
        serial=0x7F00 + i, fingerprint_sha256=f"{i:064x}", not_before=NOW,
        not_after=NOW + dt.timedelta(hours=24, microseconds=i),
        pem=b"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n", der=b"0\0",
        profile="workload", spiffe_id=f"spiffe://nhi.example/workload/w{i}",
        key_fingerprint=f"{i + 100:064x}") for i in range(3)]
    issued = [(1, "workload/fresh", "enroll:workload/fresh", certs[0], {}),
              (1, "workload/fresh", "renew:workload/fresh", certs[1], {"previous": "ab"}),
              (6, "workload/child", "spawn:workload/fresh", certs[2], {"parent": "x"})]
    raw_path, _, core_path, _ = await _twice(
        tmp_path, path, monkeypatch, lambda conn: ca_service._record_issued(conn, issued, at))
    for table, skip in (("credentials", ()), ("identities", ()), ("audit_log", ()),
                        ("audit_head", ()), ("event_outbox", ("event_id",))):
        assert _dump(raw_path, table, skip) == _dump(core_path, table, skip), table
    assert len(_dump(raw_path, "credentials")) == 3
    # The chain the raw path extended verifies.
    await assert_chain_verifies(await _open(raw_path))


async def test_key_holders_read_the_same_as_core(
        seeded: tuple[Path, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = seeded
    cert = pki.IssuedCertificate(
        serial=1, fingerprint_sha256="a" * 64, not_before=NOW, not_after=NOW, pem=b"x",
        der=b"x", profile="workload", spiffe_id="", key_fingerprint="k" * 64)
    db = await _open(path)
    try:
        await db.run_write(lambda conn: ca_service._record_issued(
            conn, [(1, "workload/fresh", "t", cert, {})], NOW))
    finally:
        await db.close()
    fps = ["k" * 64, "z" * 64]
    _, raw, _, core = await _twice(
        tmp_path, path, monkeypatch, lambda conn: ca_service._key_holders(conn, fps))
    assert raw == core == {"k" * 64: {("workload", "fresh")}}


def test_stored_times_are_sqlalchemys_text() -> None:
    assert sqlite_raw.db_time(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == \
        "2026-01-02 03:04:05.000000"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert sqlite_raw.db_time(dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=plus_two)) == \
        "2026-01-02 01:04:05.000006"
    assert sqlite_raw.from_db_time("2026-01-02 01:04:05.000006") == dt.datetime(
        2026, 1, 2, 1, 4, 5, 6, tzinfo=dt.UTC)
    assert sqlite_raw.from_db_time(None) is None


@pytest.mark.parametrize("inline", [True, False], ids=["on-the-loop", "worker-thread"])
async def test_a_failure_midway_leaves_nothing_written(
        seeded: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
        inline: bool) -> None:
    """The raw statements share SQLAlchemy's transaction: when the audit append fails
    after the tokens were burned and the credential rows inserted, all of it rolls back,
    whether the write ran on the event loop or in a worker thread."""
    path, tokens = seeded
    before = {t: _dump(path, t) for t in ("enrollment_tokens", "credentials", "identities",
                                          "audit_log", "audit_head", "event_outbox")}
    cert = pki.IssuedCertificate(
        serial=0xABC, fingerprint_sha256="c" * 64, not_before=NOW, not_after=NOW, pem=b"x",
        der=b"x", profile="workload", spiffe_id="", key_fingerprint="d" * 64)

    def disk_full(*_args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(audit, "_append_many_sqlite", disk_full)
    db = await _open(path)

    def write(conn: Connection) -> None:
        token_id = _token_id(conn, tokens["fresh"])
        assert ca_service._consume_tokens(conn, [token_id], NOW + dt.timedelta(minutes=1))
        ca_service._record_issued(conn, [(1, "workload/fresh", "t", cert, {})], NOW)

    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await db.run_write(write, inline=inline)
    finally:
        await db.close()
    assert {t: _dump(path, t) for t in before} == before
