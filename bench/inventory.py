"""Inventory benchmark on SQLite: import rate and lookup latency at fleet scale.

Prints figures; asserts nothing. Usage::

    .venv/bin/python bench/inventory.py [--count 1000000] [--lookups 20000]

Identities are imported through the same all-or-nothing importer the CLI uses (so the
rate includes validation, the audit chain and label/MAC rows). Certificate
fingerprints are then bulk-inserted straight into the credentials table, one per
identity, to measure lookup by fingerprint.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import insert

from nhi_nac.domain import IdentityRef
from nhi_nac.importer import NewOwner, import_identities
from nhi_nac.inventory import Inventory, NewIdentity, utcnow
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import Credential

KINDS = ("device", "workload", "service_account", "api_key", "ai_agent")
TEAMS = tuple(f"team{i}" for i in range(50))


def mac_of(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0, *(i.to_bytes(4, "big"))))


def fp_of(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "big")).hexdigest()


def make_rows(n: int) -> list[tuple[str, NewIdentity]]:
    rows = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        rows.append((f"row {i}", NewIdentity(
            kind=NewIdentity.build(kind, "x", "o@example.com").kind, name=f"id-{i:07d}",
            owner=f"owner{i % 100}@example.com",
            scope={"env": ("prod", "dev", "staging")[i % 3], "team": TEAMS[i % len(TEAMS)]},
            macs=(mac_of(i),) if kind == "device" else (),
        )))
    return rows


async def percentiles(fn: Callable[[int], Awaitable[object]], samples: list[int]) -> str:
    times = []
    for i in samples:
        t = time.perf_counter()
        await fn(i)
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    return f"p50 {p50:7.0f} µs   p99 {p99:7.0f} µs   ({len(times)} lookups)"


async def main(count: int, lookups: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await db.upgrade()
        inv = Inventory(db)
        owners = [NewOwner(f"owner{i}@example.com", f"Owner {i}", TEAMS[i % len(TEAMS)])
                  for i in range(100)]
        t = time.perf_counter()
        rows = make_rows(count)
        build = time.perf_counter() - t
        t = time.perf_counter()
        report = await import_identities(inv, owners, rows, actor="bench", source="bench")
        elapsed = time.perf_counter() - t
        print(f"identities                 {count:,}")
        print(f"import (validate+insert+audit)  {elapsed:7.1f} s   "
              f"{report.created / elapsed:9,.0f} identities/s   (rows built in {build:.1f} s)")

        t = time.perf_counter()
        now = utcnow()
        async with db.transaction() as s:
            for start in range(0, count, 20000):
                await s.execute(insert(Credential), [
                    {"identity_id": i + 1, "type": "certificate", "fingerprint": fp_of(i),
                     "serial": f"{i:x}", "status": "active", "created_at": now}
                    for i in range(start, min(count, start + 20000))])
        print(f"credentials bulk insert    {time.perf_counter() - t:7.1f} s")

        rnd = random.Random(7)  # noqa: S311 - sample choice, not security
        sample = [rnd.randrange(count) for _ in range(lookups)]
        devices = [i for i in sample if KINDS[i % len(KINDS)] == "device"]

        async def by_name(i: int) -> object:
            return await inv.get_identity(IdentityRef.parse(f"{KINDS[i % 5]}/id-{i:07d}"))

        async def by_mac(i: int) -> object:
            return await inv.find_by_mac(mac_of(i))

        async def by_fp(i: int) -> object:
            return await inv.find_by_fingerprint(fp_of(i))

        print(f"lookup KIND/NAME           {await percentiles(by_name, sample)}")
        print(f"lookup MAC                 {await percentiles(by_mac, devices)}")
        print(f"lookup fingerprint         {await percentiles(by_fp, sample)}")

        async def by_label(i: int) -> object:
            return await inv.list_identities(scope={"team": TEAMS[i % 50], "env": "prod"},
                                             limit=100)

        print(f"scope filter (2 labels, first 100)  "
              f"{await percentiles(by_label, sample[:500])}")
        t = time.perf_counter()
        total = 0
        offset = 0
        while True:
            page = await inv.list_identities(scope={"team": "team7"}, limit=10_000,
                                             offset=offset)
            total += len(page)
            if len(page) < 10_000:
                break
            offset += 10_000
        print(f"scope filter team=team7, all pages: {total:,} identities in "
              f"{time.perf_counter() - t:.2f} s")
        size = (Path(tmp) / "bench.db").stat().st_size
        print(f"database size              {size / 1e6:7.0f} MB")
        await db.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=20_000)
    a = ap.parse_args()
    asyncio.run(main(a.count, a.lookups))
