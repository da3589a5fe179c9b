"""Shared fixtures: the storage backends (SQLite and PostgreSQL in the same run)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from nhi_nac.inventory import Inventory
from nhi_nac.storage.db import Database
from tests.interop import missing

PG_URL = os.environ.get("NHI_TEST_PG_URL", "postgresql://postgres@127.0.0.1/test")
_RUN = uuid.uuid4().hex[:8]


def _pg_dsn(database: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Any) -> Any:
    """Run a coroutine to completion on a private loop (fixtures may be inside a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this test run, dropped at the end."""
    name = f"nhi_tmpl_{_RUN}"
    try:
        _run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL not reachable at {PG_URL}: {exc}")

    async def migrate() -> None:
        db = Database(_pg_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1))
        await db.upgrade()
        await db.close()

    _run(migrate())
    yield name
    _run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, migrated database of each backend for one test."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await db.upgrade()
        yield db
        await db.close()
        return
    template = request.getfixturevalue("pg_template")
    name = f"nhi_t_{_RUN}_{uuid.uuid4().hex[:8]}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    db = Database(_pg_dsn(name).replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        yield db
    finally:
        await db.close()
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def assert_chain_verifies(db: Database) -> None:
    """The audit chain ``db`` holds verifies end to end; ``db`` is closed after."""
    from nhi_nac import audit

    try:
        async with db.read() as s:
            verdict = await audit.verify_chain(s)
    finally:
        await db.close()
    assert verdict.ok, verdict.describe()


@pytest.fixture
async def inventory(database: Database) -> Inventory:
    return Inventory(database)
