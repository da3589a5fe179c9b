"""Engine, sessions and schema migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; its writers are
serialized in-process by :meth:`Database.transaction`, because SQLite allows one writer
and a deferred transaction that upgrades to a write can deadlock with another.
PostgreSQL needs no such lock: the audit head row is locked ``FOR UPDATE`` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from nhi_nac.errors import InternalError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

T = TypeVar("T")

#: Milliseconds a SQLite connection waits for the write lock held by another process.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.close()


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
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sync_engine: Engine | None = None
        if self.is_sqlite:
            # Reads on SQLite run synchronously in the loop thread (see storage.queries).
            self._sync_engine = create_engine(self.engine.url.set(drivername="sqlite"))
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A read-write transaction: committed on success, rolled back on any error."""
        if self.is_sqlite:
            async with self._write_lock, self.sessions.begin() as session:
                yield session
        else:
            async with self.sessions.begin() as session:
                yield session

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        """Run a synchronous read function on this backend's fastest read path."""
        if self._sync_engine is not None:
            with self._sync_engine.connect() as conn:
                return fn(conn)
        async with self.engine.connect() as aconn:
            return await aconn.run_sync(fn)

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` (Core statements on a synchronous connection) in one write
        transaction: committed if it returns, rolled back if it raises.

        On SQLite it runs in one worker thread under the same lock as
        :meth:`transaction` — one thread crossing for the whole transaction instead of
        aiosqlite's several per statement (~450 µs each on a small VM). On PostgreSQL it
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
            return await asyncio.to_thread(in_thread)

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

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    async def analyze(self) -> None:
        """Refresh the query planner's statistics (after bulk changes)."""
        async with self.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))

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
