"""Raw ``sqlite3`` access for the hottest statements, beside their SQLAlchemy Core forms.

On SQLite, SQLAlchemy's fixed cost per statement (execution context, bind and result
type processing, the post-compile step of an expanding ``IN``) is several times what
SQLite itself spends on a small indexed read or a batch insert. The enrollment batch,
issuance records and the audit chain therefore run hand-written SQL on the same
DBAPI connection, inside the same transaction, when the connection is SQLite's. (On
PostgreSQL the round trip is the cost instead: there the batch's issuance records are
one statement over array parameters, ``ca_service._record_issued_pg``.)

The values written are exactly what SQLAlchemy writes for the same columns: timestamps
as naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (``UtcDateTime`` on SQLite's
``DATETIME``), JSON with ``json.dumps``' defaults. ``tests/test_sqlite_raw.py`` runs
each raw function and its Core twin on the same data and compares the rows.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from sqlalchemy.engine import Connection


def cursor(conn: Connection) -> sqlite3.Cursor | None:
    """A cursor on ``conn``'s own ``sqlite3`` connection (same transaction), or None when
    the backend is not SQLite."""
    if conn.dialect.name != "sqlite":
        return None
    raw: Any = conn.connection.driver_connection
    return raw.cursor()  # type: ignore[no-any-return]


def db_time(value: dt.datetime) -> str:
    """An aware datetime as SQLAlchemy stores it in a SQLite ``DATETIME`` column."""
    utc = value.astimezone(dt.UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S}.{utc.microsecond:06d}"


def from_db_time(text: str | None) -> dt.datetime | None:
    """A stored timestamp back as an aware UTC datetime (as ``UtcDateTime`` reads it)."""
    return None if text is None else dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def marks(n: int) -> str:
    """``n`` positional placeholders for an ``IN (...)`` list."""
    return ",".join("?" * n)
