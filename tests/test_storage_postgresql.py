"""PostgreSQL connections: a pooled connection the server has closed costs a reconnect,
not a request; a read outside a transaction leaves no connection outside one.

A database restart, a fail-over or a firewall that drops idle connections leaves dead
connections in the pool. Each is checked at checkout (``storage.db._asyncpg_alive``, one
``SELECT 1``) and replaced. Here the server itself terminates every session of the test
database (``pg_terminate_backend``), as a restart would, while the pool holds them.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from nhi_nac.inventory import Inventory
from nhi_nac.storage.db import Database
from tests.conftest import PG_URL

POOLED = 4


async def _backend_pids(db: Database) -> set[int]:
    """Open POOLED connections at once (the pool keeps them) and return their server pids."""
    async def one() -> int:
        async with db.engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.execute(text("SELECT pg_sleep(0.05)"))
            return int(pid)
    return set(await asyncio.gather(*(one() for _ in range(POOLED))))


async def _terminate(pids: set[int]) -> None:
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        ended = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ok "
            "FROM pg_stat_activity WHERE pid = ANY($1::int[])) t WHERE ok", list(pids))
    finally:
        await admin.close()
    assert ended == len(pids)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_connections_the_server_closed_are_replaced_at_checkout(database: Database) -> None:
    before = await _backend_pids(database)
    assert len(before) == POOLED
    await _terminate(before)
    await asyncio.sleep(0.2)  # the sessions are gone on the server's side

    inv = Inventory(database)
    # Every kind of checkout: a session's write, a run_read, a run_write, in turn over
    # the pool's dead connections (the pool hands them out oldest first).
    for i in range(POOLED + 2):
        await inv.add_owner(f"o{i}@example.com", f"O{i}", actor="test")
        assert (await database.run_read(
            lambda conn: conn.execute(text("SELECT count(*) FROM owners")).scalar())) == i + 1

        def touch(conn: Connection) -> int:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert await database.run_write(touch) not in before
    assert not (await _backend_pids(database)) & before


def _two_statement_times(conn: Connection) -> tuple[object, object]:
    first = conn.execute(text("SELECT now()")).scalar()
    conn.execute(text("SELECT pg_sleep(0.01)"))
    return first, conn.execute(text("SELECT now()")).scalar()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_reads_outside_a_transaction_leave_writes_atomic(database: Database) -> None:
    """``run_read(transaction=False)`` runs each statement on its own (now() moves on,
    where one transaction keeps it), and the connection goes back to the pool with its
    transactions restored: a write that fails midway on it still leaves nothing."""
    inside = await database.run_read(_two_statement_times)
    assert inside[0] == inside[1]
    outside = await asyncio.gather(*(database.run_read(_two_statement_times, transaction=False)
                                     for _ in range(POOLED)))
    assert all(a != b for a, b in outside)

    def half_then_fail(conn: Connection) -> None:
        conn.execute(text("INSERT INTO settings (key, value) VALUES ('half', 'written')"))
        raise RuntimeError("fails midway")

    for _ in range(2):  # over every connection the reads above used
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                for _ in range(POOLED):
                    tg.create_task(database.run_write(half_then_fail))
    assert await database.run_read(lambda conn: conn.execute(
        text("SELECT count(*) FROM settings WHERE key = 'half'")).scalar()) == 0
