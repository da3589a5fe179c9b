"""Two nhi-nac processes on one PostgreSQL database stay consistent within a second.

A map applied through node A's API changes what node B's RADIUS answers, and an
identity retired on node A is refused by node B: each node follows the shared event
outbox and segment-map versions, so no restart and no broker are needed.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_URL, _pg_dsn, _run
from tests.interop import missing
from tests.service_process import MA, SECRET, Service, service_env

pytestmark = pytest.mark.interop


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"nhi_mn_{uuid.uuid4().hex[:10]}"
    try:
        _run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    yield _pg_dsn(name)
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _vlan(out: str) -> str | None:
    for line in out.splitlines():
        if "Tunnel-Private-Group-Id" in line:
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _until(check: object, seconds: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_two_nodes_share_state(pg_database: str, tmp_path: Path) -> None:
    env = service_env(tmp_path)
    env["NHI_NAC_DATABASE_URL"] = pg_database
    a = Service(dict(env), tmp_path / "data")
    b = Service(dict(env), tmp_path / "data")
    a.cli("init")
    a.cli("owner", "add", "alice@example.com", "--name", "Alice")
    a.cli("identity", "add", "device", "mfp", "--owner", "alice@example.com",
          "--scope", "function=printer", "--mac", "02:00:00:00:00:77", "--allow-mab")
    a.cli("nas", "add", "sw", "--address", "127.0.0.1", "--secret", SECRET)
    token = a.cli("api-token", "create", "ops", "--role", "admin").strip()
    a.start()
    b.start()
    try:
        mab = ('User-Name = "020000000077", User-Password = "020000000077", ' + MA)
        assert _vlan(b.radclient_run(mab)) == "120"
        text = json.loads(a.cli("--json", "segments", "show"))["text"]
        req = urllib.request.Request(
            f"http://127.0.0.1:{a.api}/api/v1/segments/apply?comment=renumber",
            data=text.replace("vlan: 120", "vlan: 121", 1).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["version"] == 2
        took = _until(lambda: _vlan(b.radclient_run(mab)) == "121")
        assert took < 1.5, took
        a.cli("identity", "retire", "device/mfp")
        took = _until(lambda: "Access-Reject" in b.radclient_run(mab))
        assert took < 1.5, took
    finally:
        b.stop()
        a.stop()
