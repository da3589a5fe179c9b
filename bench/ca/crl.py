"""bench/ca helper: CRL build time with ENTRIES revoked certificates, in-process.

Usage (same NHI_NAC_* environment as the server; run with the server stopped):
    .venv/bin/python bench/ca/crl.py [ENTRIES=100000] [REPS=3] [REVOKE_SERIAL]

1. with the service's own issuing CA (P-256) on ENTRIES entries (random 128-bit serials,
   reasons: 1 in 10 keyCompromise, else unspecified), REPS times each: ``pki.build_crl``
   (every entry encoded, then signed: the first CRL a process signs), and
   ``CrlSigner.sign`` on the entries already encoded (every later CRL: the service keeps
   each entry's DER);
2. the service path: ENTRIES revoked certificate rows are bulk-inserted into the
   database, then ``CaService.revoke(serial=REVOKE_SERIAL)`` (what ``nhi-nac cert revoke``
   and the API run: mark revoked, then re-sign the CRL from the database) and
   ``CaService.publish_crl()`` are timed, with the longest stall of the event loop during
   each (a 1 ms ticker; what requests served meanwhile would wait at most);
3. a burst: BURST more certificates revoked at once (``asyncio.gather`` of ``revoke``),
   its time and how many CRLs it signed (callers that ask while one is being signed share
   the next).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import statistics
import sys
import time

from cryptography import x509
from sqlalchemy import insert, select

from nhi_nac.app import build
from nhi_nac.config import load_config
from nhi_nac.storage.models import Credential, Identity
from pki import CrlSigner, RevokedEntry, build_crl, encode_entry

REASONS = [x509.ReasonFlags.key_compromise] + [x509.ReasonFlags.unspecified] * 9
#: Certificates revoked at once in the burst measurement.
BURST = 50


class StallMeter:
    """The longest gap between 1 ms ticks of the event loop while running."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    def __enter__(self) -> StallMeter:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def main(entries: int, reps: int, serial: str | None) -> None:
    config = load_config(None)
    s = build(config)
    try:
        await s.db.check_schema()
        ca = s.ca.issuing_ca()
        now = dt.datetime.now(dt.UTC)
        revoked = [RevokedEntry(secrets.randbits(127) | 1 << 126,
                                now - dt.timedelta(seconds=i), REASONS[i % 10])
                   for i in range(entries)]
        times = []
        for rep in range(reps):
            t = time.perf_counter()
            crl = build_crl(ca, revoked, number=rep + 1, now=now)
            times.append(time.perf_counter() - t)
        signer = CrlSigner(ca)
        encoded = [encode_entry(e.serial, e.revoked_at, e.reason) for e in revoked]
        kept = []
        for rep in range(reps):
            t = time.perf_counter()
            signer.sign(encoded, number=reps + rep + 1, now=now)
            kept.append(time.perf_counter() - t)
        print(f"crl_build_inprocess entries={crl.entries} "
              f"median={statistics.median(times):.2f}s "
              f"runs={'/'.join(f'{x:.2f}' for x in times)}s der={len(crl.der) / 1e6:.1f}MB "
              f"pem={len(crl.pem) / 1e6:.1f}MB; re-signed from kept entries "
              f"median={statistics.median(kept):.3f}s (template={signer.uses_template})")
        if serial is None:
            return
        async with s.inventory.db.transaction() as ses:
            ident_id = await ses.scalar(select(Identity.id).limit(1))
            t = time.perf_counter()
            rows = [dict(identity_id=ident_id, type="certificate", serial=format(e.serial, "x"),
                         fingerprint=secrets.token_hex(32), key_fingerprint=secrets.token_hex(32),
                         profile="workload", status="revoked", created_at=now,
                         last_rotated_at=None, not_before=now, expires_at=now,
                         revoked_at=e.revoked_at, revocation_reason=e.reason.value, pem=None)
                    for e in revoked]
            for i in range(0, len(rows), 5000):
                await ses.execute(insert(Credential), rows[i:i + 5000])
        ins = time.perf_counter() - t
        t = time.perf_counter()
        with StallMeter() as m1:
            done = await s.ca.revoke(serial=serial, reason="keyCompromise", actor="bench/ca")
            rev = time.perf_counter() - t
        t = time.perf_counter()
        with StallMeter() as m2:
            crl = await s.ca.publish_crl()
            pub = time.perf_counter() - t
        print(f"crl_service (rows inserted in {ins:.1f}s): revoke 1 cert with {entries} already "
              f"revoked (re-signs CRL) {rev:.2f}s (event loop stalled <= {m1.worst * 1e3:.0f} ms); "
              f"publish_crl {pub:.2f}s (stalled <= {m2.worst * 1e3:.0f} ms) "
              f"entries={crl.entries} der={len(crl.der) / 1e6:.1f}MB revoked={done}")
        # A burst: BURST active certificates revoked at once (API calls, a script).
        async with s.inventory.db.transaction() as ses:
            burst = [format(secrets.randbits(127) | 1 << 126, "x") for _ in range(BURST)]
            await ses.execute(insert(Credential), [
                dict(identity_id=ident_id, type="certificate", serial=sn,
                     fingerprint=secrets.token_hex(32), key_fingerprint=secrets.token_hex(32),
                     profile="workload", status="active", created_at=now, last_rotated_at=None,
                     not_before=now, expires_at=now + dt.timedelta(days=1), revoked_at=None,
                     revocation_reason=None, pem=None) for sn in burst])
        first = crl.number
        t = time.perf_counter()
        with StallMeter() as m3:
            await asyncio.gather(*(s.ca.revoke(serial=sn, reason="superseded", actor="bench/ca")
                                   for sn in burst))
            took = time.perf_counter() - t
        assert s.ca.crl is not None
        print(f"crl_burst: {BURST} certs revoked at once with {entries} already revoked "
              f"{took:.2f}s, {s.ca.crl.number - first} CRLs signed (event loop stalled <= "
              f"{m3.worst * 1e3:.0f} ms)")
    finally:
        await s.close()


if __name__ == "__main__":
    argv = sys.argv[1:]
    asyncio.run(main(int(argv[0]) if argv else 100_000, int(argv[1]) if len(argv) > 1 else 3,
                     argv[2] if len(argv) > 2 else None))
