"""Engine, sessions and schema migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; its writers are
serialized in-process by :meth:`Database.transaction`, because SQLite allows one writer
and a deferred transaction that upgrades to a write can deadlock with another.
PostgreSQL needs no such lock: the audit head row is locked ``FOR UPDATE`` instead.

Short writes on a request path (``run_write(fn, inline=True)``: the enrollment batch)
run on the event loop itself on SQLite, when SQLite's write lock is free at once:
``BEGIN IMMEDIATE`` with no busy wait, so the loop never waits for another process (a
CLI command, a backup). If the lock is held they run in a worker thread, which waits for
it. The loop's write connection never checkpoints the WAL itself (a checkpoint copies
pages and syncs the disk); every ``INLINE_CHECKPOINT_EVERY`` of its commits, a worker
thread runs one (:meth:`Database.checkpoint`). ``bench/ca_enroll.py --compare thread``:
569 against 603 µs of CPU per certificate, 1,811 against 1,501 certificates/s, for the thread
crossing and the GIL hand-overs it saves.

A PostgreSQL connection taken from the pool is checked to be alive first, so that a
database restart, a fail-over or a firewall that dropped an idle connection costs a
reconnect, not a failed request. SQLAlchemy's ``pool_pre_ping`` does that for asyncpg in
three round trips (BEGIN, an empty statement, ROLLBACK); :func:`_asyncpg_alive` does it
in one, ``SELECT 1`` in the simple query protocol (no prepared statement, so it also
holds behind PgBouncer in transaction mode). With eight concurrent enrollments that
was 15–20% of the CPU of a certificate on PostgreSQL, all of it with no ping at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_

from nhi_nac.errors import InternalError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

T = TypeVar("T")
log = structlog.get_logger("nhi_nac.storage")

#: Milliseconds a SQLite connection waits for the write lock held by another process.
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: Bytes the WAL file is cut back to when it starts over after a complete checkpoint,
#: so a burst (a large import) does not keep its disk space.
SQLITE_WAL_SIZE_LIMIT = 64 * 1024 * 1024


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT}")
    cur.close()


#: Commits of the loop's write connection between two checkpoints in a worker thread.
INLINE_CHECKPOINT_EVERY = 64


def _sqlite_inline_pragmas(dbapi_conn: Any, record: Any) -> None:
    """The loop's write connection: fails at once instead of waiting for the write lock,
    never checkpoints on commit, and leaves BEGIN to :meth:`Database.run_write`."""
    _sqlite_pragmas(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=0")
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()
    dbapi_conn.isolation_level = None


#: What a dead or dying PostgreSQL connection raises: the socket is gone, the client
#: closed it, or the server is shutting the session down (SQLSTATE class 08 and 57).
_GONE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
         asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)


def _asyncpg_alive(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """On every checkout from the pool: ``SELECT 1`` on the asyncpg connection (inside
    SQLAlchemy's greenlet, as ``pool_pre_ping`` runs). A dead connection raises
    ``DisconnectionError``: the pool drops it and checks out another, or a new one.
    Any other error is a bug and propagates as itself."""
    try:
        await_(dbapi_conn.driver_connection.execute("SELECT 1"))
    except _GONE as exc:
        raise DisconnectionError(f"pooled connection is gone: {exc!r}") from exc


class _WriteLockHeld(Exception):
    """Another connection holds SQLite's write lock."""


def alembic_config() -> AlembicConfig:
    # Alembic is imported when migrations are touched, not on every CLI start.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("nhi_nac") / "migrations"))
    return cfg


class Database:
    """One engine and session factory; the only owner of connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        on_asyncpg = url.startswith("postgresql+asyncpg")
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=not on_asyncpg)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if on_asyncpg:
            event.listen(self.engine.sync_engine, "checkout", _asyncpg_alive)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sync_engine: Engine | None = None
        self._inline_engine: Engine | None = None
        if self.is_sqlite:
            # Reads on SQLite run synchronously in the loop thread (see storage.queries).
            self._sync_engine = create_engine(self.engine.url.set(drivername="sqlite"))
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
            # One connection, used only on the loop thread (run_write's inline path).
            self._inline_engine = create_engine(self.engine.url.set(drivername="sqlite"),
                                                poolclass=StaticPool)
            event.listen(self._inline_engine, "connect", _sqlite_inline_pragmas)
        self._write_lock = asyncio.Lock()
        self._inline_commits = 0
        self._checkpoint: asyncio.Task[None] | None = None
        #: Inline writes that found the write lock held and went to a worker thread.
        self.inline_deferred = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction: committed on success, rolled back on any error."""
        if self.is_sqlite:
            async with self._write_lock, self.sessions.begin() as session:
                yield session
        else:
            async with self.sessions.begin() as session:
                yield session

    async def run_read(self, fn: Callable[[Connection], T], *,
                       transaction: bool = True) -> T:
        """Run a synchronous read function on this backend's fastest read path.

        ``transaction=False`` (for a read whose statements need not share one snapshot:
        a single statement, or reads a later write checks again): on PostgreSQL the
        statements run outside a transaction, which saves the BEGIN and ROLLBACK round
        trips. SQLite's reads are the same either way.
        """
        if self._sync_engine is not None:
            with self._sync_engine.connect() as conn:
                return fn(conn)
        async with self.engine.connect() as aconn:
            if not transaction:
                await aconn.execution_options(isolation_level="AUTOCOMMIT")
            return await aconn.run_sync(fn)

    async def run_write(self, fn: Callable[[Connection], T], *, inline: bool = False) -> T:
        """Run ``fn`` (Core statements on a synchronous connection) in one write
        transaction: committed if it returns, rolled back if it raises.

        On SQLite it runs in one worker thread under the same lock as
        :meth:`transaction` — one thread crossing for the whole transaction instead of
        aiosqlite's several per statement (~450 µs each on a small VM). With ``inline``
        (for short, bounded transactions only) it runs on the event loop instead when
        SQLite's write lock is free at once (see the module docstring). On PostgreSQL it
        runs through ``run_sync`` on the async driver.
        """
        sync_engine = self._sync_engine
        if sync_engine is None:
            async with self.engine.begin() as aconn:
                return await aconn.run_sync(fn)

        def in_thread() -> T:
            with sync_engine.begin() as conn:
                return fn(conn)

        async with self._write_lock:
            if inline:
                try:
                    result = self._write_inline(fn)
                except _WriteLockHeld:
                    self.inline_deferred += 1
                else:
                    self._inline_committed()
                    return result
            return await asyncio.to_thread(in_thread)

    def _write_inline(self, fn: Callable[[Connection], T]) -> T:
        assert self._inline_engine is not None
        with self._inline_engine.connect() as conn:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as exc:
                if isinstance(exc.orig, sqlite3.OperationalError) and \
                        exc.orig.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                    conn.rollback()
                    raise _WriteLockHeld from None
                raise
            try:
                result = fn(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
            return result

    def _inline_committed(self) -> None:
        self._inline_commits += 1
        if self._inline_commits >= INLINE_CHECKPOINT_EVERY and (
                self._checkpoint is None or self._checkpoint.done()):
            self._inline_commits = 0
            self._checkpoint = asyncio.create_task(self.checkpoint())

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file, in a worker thread, in two passive
        checkpoints (they never wait for readers).

        The first runs while this process's writers go on. Only a checkpoint that
        leaves no frame behind lets the next writer start the WAL from its beginning;
        under steady writes the first one never does (commits land while it copies),
        and the WAL grew without bound: 400 MB after 12,000 enrollments, each commit
        slower than the last. So a second one runs under the write lock and copies only
        the commits made meanwhile (about 5 ms after 64 enrollment batches)."""
        sync_engine = self._sync_engine
        if sync_engine is None:
            return

        def in_thread() -> None:
            with sync_engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()

        try:
            await asyncio.to_thread(in_thread)
            async with self._write_lock:
                await asyncio.to_thread(in_thread)
        except SQLAlchemyError as exc:
            log.warning("db.checkpoint_failed", error=str(exc))

    async def run_read_off_loop(self, fn: Callable[[Connection], T]) -> T:
        """:meth:`run_read` for big reads: on SQLite in a worker thread, so that a large
        result does not stop the event loop."""
        sync_engine = self._sync_engine
        if sync_engine is None:
            return await self.run_read(fn)

        def in_thread() -> T:
            with sync_engine.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(in_thread)

    async def read_in_parts(self, statement: Executable, params: Mapping[str, Any],
                            size: int) -> AsyncIterator[Sequence[Row[Any]]]:
        """The rows of a large read, ``size`` at a time, from a server-side cursor: the
        event loop runs between parts instead of waiting while every row is built."""
        async with self.engine.connect() as conn:
            result = await conn.stream(statement, params)
            async for part in result.partitions(size):
                yield part

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._inline_engine is not None:
            self._inline_engine.dispose()

    async def analyze(self, *tables: str) -> None:
        """Refresh the query planner's statistics of ``tables`` after bulk changes.
        ``tables`` are this schema's own names, never user input."""
        if not tables:
            raise ValueError("name the tables to analyze")
        async with self.engine.begin() as conn:
            if self.is_sqlite:  # one table per statement
                for table in tables:
                    await conn.execute(text(f"ANALYZE {table}"))
            else:
                await conn.execute(text(f"ANALYZE {', '.join(tables)}"))

    # -- migrations -------------------------------------------------------------

    async def upgrade(self) -> None:
        """Apply every pending Alembic migration (``nhi-nac init``)."""

        from alembic import command

        def run(conn: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        def run(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(run)

    async def check_schema(self) -> None:
        """Refuse to serve on a database that is not at the latest migration."""
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        path = Path(self.engine.url.database or "")
        if self.is_sqlite and not path.exists():  # noqa: ASYNC240 - one stat at start-up
            raise InternalError(f"no database at {path}: run 'nhi-nac init'")
        try:
            current = await self.current_revision()
        except (SQLAlchemyError, OSError) as exc:
            raise InternalError(f"database unreachable ({self.safe_url}): "
                                f"{getattr(exc, 'orig', None) or exc}") from None
        if current != head:
            raise InternalError(
                f"database schema is at {current or 'nothing'}, expected {head}: "
                "run 'nhi-nac init' to migrate"
            )
