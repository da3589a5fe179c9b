"""SQLite writes on the event loop (``Database.run_write(fn, inline=True)``): they commit
what they wrote, never hold the loop while another process has the write lock, and the
WAL they grow is checkpointed into the database file by a worker thread."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from nhi_nac.storage import db as db_module
from nhi_nac.storage.db import Database

#: Seconds the other process keeps SQLite's write lock.
HOLD_SECONDS = 0.6


async def _open(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    return db


def _put(key: str, value: str) -> Callable[[Connection], str]:
    def write(conn: Connection) -> str:
        conn.exec_driver_sql("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))
        return value
    return write


def _settings(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM settings"))


async def test_an_inline_write_commits_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "nhi.db"
    db = await _open(path)
    try:
        assert await db.run_write(_put("k1", "v1"), inline=True) == "v1"
        # Seen by another connection at once: committed, not left in a transaction.
        assert _settings(path)["k1"] == "v1"
        assert db.inline_deferred == 0
    finally:
        await db.close()


async def test_a_write_lock_held_by_another_process_does_not_stop_the_loop(
        tmp_path: Path) -> None:
    """A CLI command or a backup holding the write lock: the inline write goes to a worker
    thread that waits for it, and the event loop keeps serving meanwhile."""
    path = tmp_path / "nhi.db"
    db = await _open(path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE')\n"
         "print('locked', flush=True)\n"
         f"time.sleep({HOLD_SECONDS})\n"
         "c.execute(\"INSERT INTO settings (key, value) VALUES ('other', 'process')\")\n"
         "c.execute('COMMIT')\n"],
        stdout=subprocess.PIPE, text=True)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
        started, ticks_before = time.monotonic(), ticks
        await db.run_write(_put("mine", "written"), inline=True)
        waited = time.monotonic() - started
    finally:
        ticker.cancel()
        assert holder.wait(timeout=30) == 0
        await db.close()
    assert waited >= HOLD_SECONDS / 2  # it did wait for the other process
    assert ticks - ticks_before >= 10  # and the loop ran meanwhile
    assert db.inline_deferred == 1
    assert _settings(path) == {"other": "process", "mine": "written"}


async def test_inline_commits_are_checkpointed_into_the_database_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints itself; every INLINE_CHECKPOINT_EVERY
    commits a worker thread does, so the database file alone (without its -wal) holds
    them."""
    monkeypatch.setattr(db_module, "INLINE_CHECKPOINT_EVERY", 4)
    path = tmp_path / "nhi.db"
    db = await _open(path)

    def main_file_alone() -> dict[str, str]:
        copy = tmp_path / "copy.db"
        shutil.copy(path, copy)  # no -wal beside it: what a checkpoint has copied
        return _settings(copy)

    try:
        await db.checkpoint()  # the schema, into the file
        for i in range(3):
            await db.run_write(_put(f"k{i}", "v"), inline=True)
        assert not {"k0", "k1", "k2"} & set(main_file_alone())
        await db.run_write(_put("k3", "v"), inline=True)
        for _ in range(200):
            if {"k0", "k1", "k2", "k3"} <= set(main_file_alone()):
                break
            await asyncio.sleep(0.01)
        assert {"k0", "k1", "k2", "k3"} <= set(main_file_alone())
    finally:
        await db.close()


async def test_the_wal_starts_over_under_steady_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits that never pause for a checkpoint still let the WAL start over from its
    beginning, so its file stays the size of a few checkpoint intervals instead of
    growing with every commit ever made."""
    every = 8
    monkeypatch.setattr(db_module, "INLINE_CHECKPOINT_EVERY", every)
    path = tmp_path / "nhi.db"
    wal = tmp_path / "nhi.db-wal"
    db = await _open(path)
    value = "x" * 6000  # two pages a commit
    commits = 2000
    largest = 0
    try:
        for i in range(commits):
            await db.run_write(_put(f"k{i}", value), inline=True)
            largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0)  # a request's I/O: the checkpoint task runs meanwhile
        await db.checkpoint()
    finally:
        await db.close()
    # A WAL that never starts over holds every frame written: at least two pages a
    # commit (38 MB here). Starting over every few dozen commits keeps it far below.
    assert largest < commits * 4096 / 2, largest
    assert len(_settings(path)) == commits


async def test_the_wal_file_gives_back_the_space_of_a_burst(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One large transaction (an import) grows the WAL; once it is checkpointed and the
    WAL starts over, the file is cut back to SQLITE_WAL_SIZE_LIMIT."""
    limit = 256 * 1024
    monkeypatch.setattr(db_module, "SQLITE_WAL_SIZE_LIMIT", limit)
    path = tmp_path / "nhi.db"
    wal = tmp_path / "nhi.db-wal"
    db = await _open(path)
    try:
        def burst(conn: Connection) -> None:
            for i in range(1000):
                conn.exec_driver_sql("INSERT INTO settings (key, value) VALUES (?, ?)",
                                     (f"b{i}", "x" * 4000))

        await db.run_write(burst, inline=True)
        assert wal.stat().st_size > 10 * limit
        await db.checkpoint()
        await db.run_write(_put("after", "burst"), inline=True)
        await db.checkpoint()
        assert wal.stat().st_size <= limit
        assert len(_settings(path)) == 1001
    finally:
        await db.close()
