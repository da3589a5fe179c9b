"""In-process enrollment: ``CaService.enroll`` with C concurrent callers, no HTTP.

Prints figures; asserts nothing. Usage::

    .venv/bin/python bench/ca_enroll.py [--n 2000] [--rounds 6] [--concurrency 8]
                                        [--compare thread] [--database-url URL]

Sets up a temporary data dir (``nhi-nac init``, one owner, ``n * rounds * variants + 200``
workload identities imported, one bootstrap token and P-256 CSR each, by
``bench/ca/prepare.py``), then runs the rounds in one process and prints the process's
CPU (user + system, every thread) per certificate and the rate of each round, and the
medians. The whole path of a certificate minus HTTP: the token and key-holder reads, the
CSR checks, signing, and the batch's write with its audit records and events.

``--compare thread`` alternates rounds between the default and the batch's write in a
worker thread (``run_write`` without ``inline``), ABAB then BABA, so the VM's drift
falls on both alike: on a VM whose speed drifts, compare only within one run.
``--database-url postgresql://postgres@127.0.0.1`` runs on a fresh PostgreSQL database
created for the run and dropped after it (its server's CPU is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/segments.py has the name of a package nhi_nac imports: keep this directory off
# the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
NHI = Path(sys.executable).with_name("nhi-nac")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(work: Path, count: int) -> list[dict[str, str]]:
    run = {"check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([NHI, "init"], **run)  # type: ignore[call-overload]
    subprocess.run([NHI, "owner", "add", "bench@example.com", "--name", "Bench",
                    "--team", "bench"], **run)  # type: ignore[call-overload]
    ids = work / "ids.csv"
    ids.write_text("kind,name,owner\n" + "".join(
        f"workload,e-{i},bench@example.com\n" for i in range(count)))
    subprocess.run([NHI, "import", ids], **run)  # type: ignore[call-overload]
    bodies = work / "bodies.jsonl"
    subprocess.run([sys.executable, HERE / "ca" / "prepare.py", "e", str(count), bodies],
                   check=True, stderr=subprocess.DEVNULL)
    return [json.loads(line) for line in bodies.read_text().splitlines()]


async def measure(args: argparse.Namespace, bodies: list[dict[str, str]]) -> None:
    from nhi_nac import app
    from nhi_nac.config import load_config
    from nhi_nac.storage.db import Database

    variants = ["inline"] + ([args.compare] if args.compare else [])
    current = {"variant": "inline"}
    run_write = Database.run_write

    async def chosen(self: Database, fn: Any, *, inline: bool = False) -> Any:
        return await run_write(self, fn, inline=inline and current["variant"] == "inline")

    Database.run_write = chosen  # type: ignore[method-assign]
    services = app.build(load_config())
    services.ca.load()
    queue = iter(bodies)

    async def enroll(n: int) -> None:
        todo = iter(range(n))

        async def caller() -> None:
            for _ in todo:
                body = next(queue)
                await services.ca.enroll(body["token"], body["csr"].encode())

        await asyncio.gather(*(caller() for _ in range(args.concurrency)))

    try:
        await enroll(200)  # warm-up, not counted
        results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for variant in variants if r % 2 == 0 else variants[::-1]:
                current["variant"] = variant
                cpu, wall = cpu_seconds(), time.perf_counter()
                await enroll(args.n)
                cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
                results[variant].append((cpu / args.n * 1e6, args.n / wall))
                print(f"round {r + 1} {variant:<7} cpu_us_per_cert={cpu / args.n * 1e6:.0f} "
                      f"rate={args.n / wall:.0f}/s", flush=True)
    finally:
        await services.close()
    print(f"== in-process enrollment, n={args.n} x {args.rounds} rounds, "
          f"concurrency {args.concurrency}: medians ==")
    for variant, got in results.items():
        print(f"{variant:<7} {statistics.median(c for c, _ in got):6.0f} µs CPU per certificate "
              f"{statistics.median(r for _, r in got):7.0f} certificates/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--compare", choices=["thread"])
    parser.add_argument("--database-url", help="a PostgreSQL server (postgresql://…)")
    args = parser.parse_args()
    variants = 2 if args.compare else 1
    database = f"nhi_ca_enroll_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="nhi-ca-enroll.") as tmp:
        work = Path(tmp)
        os.environ.update(NHI_NAC_DATA_DIR=str(work / "data"), NHI_NAC_LOG_LEVEL="warning")
        os.environ.pop("NHI_NAC_CONFIG", None)
        os.environ.pop("NHI_NAC_DATABASE_URL", None)
        if args.database_url:
            server = args.database_url.rstrip("/")
            subprocess.run(["psql", "-q", f"{server}/postgres", "-c",
                            f"CREATE DATABASE {database}"], check=True)
            os.environ["NHI_NAC_DATABASE_URL"] = f"{server}/{database}"
        try:
            start = time.perf_counter()
            bodies = prepare(work, 200 + args.n * args.rounds * variants)
            print(f"# set-up: {len(bodies)} identities, tokens and CSRs in "
                  f"{time.perf_counter() - start:.0f} s; Python {sys.version.split()[0]}; "
                  f"{'PostgreSQL' if args.database_url else 'SQLite'}", flush=True)
            asyncio.run(measure(args, bodies))
        finally:
            if args.database_url:
                subprocess.run(["psql", "-q", f"{server}/postgres", "-c",
                                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"],
                               check=False)


if __name__ == "__main__":
    main()
