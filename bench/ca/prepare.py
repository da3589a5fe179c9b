"""bench/ca helper: mint bootstrap tokens in-process and write enrollment request bodies.

Usage (with the same NHI_NAC_* environment as the server, server may be stopped):
    .venv/bin/python bench/ca/prepare.py PREFIX COUNT OUT.jsonl

For identities workload/PREFIX-0 .. PREFIX-(COUNT-1) (created beforehand with
``nhi-nac import``), mints one single-use token each with
``nhi_nac.bootstrap_tokens.create_bootstrap_tokens`` (1,000 per transaction) against the
configured database,
generates a fresh P-256 key per identity and writes one JSON body per line (on
PostgreSQL it then refreshes the planner's statistics of the tokens, as autovacuum would):
{"token": T, "csr": "<PEM with SAN spiffe://<td>/workload/NAME>"}.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time

from nhi_nac.app import build
from nhi_nac.bootstrap_tokens import create_bootstrap_tokens
from nhi_nac.config import load_config
from nhi_nac.domain import IdentityRef
from pki import build_csr, generate_private_key

#: Tokens minted per transaction.
CHUNK = 1000


async def main(prefix: str, count: int, out: str) -> None:
    config = load_config(None)
    services = build(config)
    td = config.ca.trust_domain
    t0 = time.perf_counter()
    try:
        await services.db.check_schema()
        with open(out, "w") as f:
            for start in range(0, count, CHUNK):
                names = [f"{prefix}-{i}" for i in range(start, min(count, start + CHUNK))]
                minted = await create_bootstrap_tokens(
                    services.inventory, [IdentityRef.parse(f"workload/{n}") for n in names],
                    dt.timedelta(hours=1), actor="bench/ca")
                for name, (token, _) in zip(names, minted, strict=True):
                    key = generate_private_key("p256")
                    csr = build_csr(key, f"spiffe://{td}/workload/{name}").decode()
                    f.write(json.dumps({"token": token, "csr": csr}) + "\n")
        if not services.db.is_sqlite:
            # Statistics for the tokens just minted, as autovacuum would gather within a
            # minute: where it is off (as on the machine these figures come from),
            # PostgreSQL plans the enrollment reads as if the table were empty. (An import of
            # 1,000 identities or more analyzes the tables it wrote by itself.)
            await services.db.analyze("enrollment_tokens")
    finally:
        await services.close()
    took = time.perf_counter() - t0
    print(f"prepared {count} tokens+CSRs in {took:.1f}s ({took / count * 1e3:.2f} ms each)",
          file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
