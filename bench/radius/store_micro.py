#!/usr/bin/env python3
"""Admission write cost: InventoryDirectory.flush() of N MAB decisions into SQLite.

Usage: store_micro.py [N]   (a throwaway database in a temporary directory; prints the
process CPU per decision, the aiosqlite worker thread included)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from nhi_nac.admission_store import InventoryDirectory
from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.logs import configure_logging
from nhi_nac.radius.decision import AdmissionDecision, AuthMethod, Verdict
from nhi_nac.storage.db import Database


def decisions(n: int) -> list[AdmissionDecision]:
    now = time.time()
    out = []
    for i in range(n):
        m = i % 1000 + 1
        mac = f"aa:bb:cc:00:{m >> 8 & 255:02x}:{m & 255:02x}"
        out.append(AdmissionDecision(
            Verdict.ACCEPT, AuthMethod.MAB,
            (f"MAC {mac} from User-Name", "PAP password is the MAC",
             f"MAC registered to device/mab-{m:04d}", f"identity device/mab-{m:04d} is active",
             "owner bench@example.com is active", "segment VLAN 200"),
            "bench", "127.0.0.1", now + i * 1e-4, identity=IdentityRef(IdentityKind.DEVICE,
                                                                    f"mab-{m:04d}"),
            vlan=200, session_timeout=3600, mac=mac, nas_port="7"))
    return out


async def main(n: int) -> None:
    configure_logging("json", "warning")  # as bench/radius.sh runs the server
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'nhi.db'}")
        await db.upgrade()
        directory = InventoryDirectory(db, None, "bench.example")  # type: ignore[arg-type]
        batch = decisions(n)
        for chunk in range(0, n, 2000):  # one flush per ~0.2 s at 10k decisions/s
            for d in batch[chunk:chunk + 2000]:
                directory.record_admission(d)
            t0 = time.process_time()
            await directory.flush()
            spent = time.process_time() - t0
            if chunk == 0:
                first = spent
            else:
                total = locals().get("total", 0.0) + spent
        print(f"flush: {total / (n - 2000) * 1e6:.1f} us CPU per decision "
              f"(first batch {first / 2000 * 1e6:.1f})")
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
