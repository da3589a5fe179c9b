"""bench/agents: machine-speed credentials and grant decisions for AI agents.

    .venv/bin/python bench/agents.py            (about a minute on 2 vCPUs)

A real ``nhi-nac serve`` process (temporary data dir, SQLite, P-256 CA, loopback) and a
closed-loop aiohttp client at concurrency C. Everything the client signs (CSRs, renewal
proofs, agent request proofs) is prepared before each timed phase, so the phase measures
the server. Phases:

1. enroll: AGENTS ai_agent identities enroll with bootstrap tokens (POST /pki/v1/enroll);
2. renew: each renews with a proof signed by its current key (POST /pki/v1/renew);
3. spawn: each spawns SPAWN sub-agents with their CSRs (POST /agent/v1/spawn);
4. grants: each asks for GRANTS labels inside its owner-approved ceiling (auto-approved)
   at concurrency C, one more one at a time (the bare decision latency), and one outside
   it (pending) (POST /agent/v1/grants); the latency of each decision.

Printed per phase: operations/s, p50/p99 latency, server CPU per operation
(utime+stime of the server PID from /proc over the phase).

Env knobs (defaults): AGENTS=300 SPAWN=2 GRANTS=3 C=8 KEEP=1 keeps the work dir.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

import pki
from nhi_nac.agent_auth import sign_request

REPO = Path(__file__).resolve().parent.parent
NHI = [sys.executable, "-m", "nhi_nac.cli"]
AGENTS = int(os.environ.get("AGENTS", "300"))
SPAWN = int(os.environ.get("SPAWN", "2"))
GRANTS = int(os.environ.get("GRANTS", "3"))
C = int(os.environ.get("C", "8"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    p = subprocess.run([*NHI, *args], env=env, input=stdin, capture_output=True, text=True,
                       timeout=600, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit(f"nhi-nac {' '.join(args)}: {p.stderr}")
    return p.stdout


Request = tuple[str, str, bytes, dict[str, str]]


async def phase(name: str, pid: int, base: str, requests: list[Request],
                concurrency: int = C) -> list[Any]:
    """Send ``requests`` at ``concurrency``; print rate, latency and server CPU."""
    answers: list[Any] = [None] * len(requests)
    latencies: list[float] = []
    queue = list(enumerate(requests))
    queue.reverse()
    failures: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i, (method, path, body, headers) = queue.pop()
            start = time.perf_counter()
            async with session.request(method, base + path, data=body or None,
                                       headers=headers) as r:
                data = await r.json()
                latencies.append(time.perf_counter() - start)
                if r.status >= 300:
                    failures.append(f"{r.status} {data.get('detail')}")
                answers[i] = data

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    if failures:
        raise SystemExit(f"{name}: {len(failures)} failed, e.g. {failures[0]}")
    q = statistics.quantiles(latencies, n=100)
    print(f"{name:<22} n={len(requests):<5} rate={len(requests) / wall:7.0f}/s  "
          f"p50={q[49] * 1000:6.2f}ms p99={q[98] * 1000:6.2f}ms  "
          f"server_cpu_us_per_op={cpu / len(requests) * 1e6:7.0f}", flush=True)
    return answers


def post(path: str, body: dict[str, Any], auth: tuple[pki.PrivateKey, x509.Certificate]
         | None = None) -> Request:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = sign_request(auth[0], auth[1], "POST", path, raw)
    return ("POST", path, raw, headers)


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nhi-agents-bench."))
    api = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NHI_NAC_")}
    env.update({"NHI_NAC_DATA_DIR": str(work / "data"), "NHI_NAC_LOG_LEVEL": "warning",
                "NHI_NAC_API_LISTEN": f"127.0.0.1:{api}", "NHI_NAC_RADIUS_LISTEN": '["127.0.0.1"]',
                "NHI_NAC_RADIUS_AUTH_PORT": str(free_port()),
                "NHI_NAC_RADIUS_ACCT_PORT": str(free_port()),
                "NHI_NAC_RADIUS_COA_ENABLED": "false",
                # The bench drives agents at machine speed on purpose: not a burst to flag.
                "NHI_NAC_AGENTS_BURST_REQUESTS": "100000",
                "NHI_NAC_AGENTS_FAN_OUT_CHILDREN": "100000"})
    proc: subprocess.Popen[str] | None = None
    try:
        cli(env, "init")
        cli(env, "owner", "add", "ops@example.com", "--name", "Ops")
        names = [f"agent-{i:05d}" for i in range(AGENTS)]
        (work / "agents.json").write_text(json.dumps({"identities": [
            {"kind": "ai_agent", "name": n, "owner": "ops@example.com",
             "scope": {"env": "prod"}} for n in names]}))
        cli(env, "import", str(work / "agents.json"))
        ceiling_values = [f"v{j}" for j in range(GRANTS + 1)]
        script = (
            "import asyncio, sys\n"
            "from nhi_nac.app import build\n"
            "from nhi_nac.config import load_config\n"
            "from nhi_nac.domain import IdentityRef\n"
            "from nhi_nac.storage.models import Identity\n"
            "from sqlalchemy import update\n"
            "async def go():\n"
            "    s = build(load_config())\n"
            "    async with s.db.transaction() as t:\n"
            f"        await t.execute(update(Identity).where(Identity.kind == 'ai_agent')"
            f".values(ceiling={{'task': {ceiling_values!r}}}))\n"
            "    await s.close()\n"
            "asyncio.run(go())\n")
        subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=REPO)
        script = (
            "import asyncio, json, sys\n"
            "from nhi_nac.app import build\n"
            "from nhi_nac.bootstrap_tokens import create_bootstrap_tokens\n"
            "from nhi_nac.config import load_config\n"
            "from nhi_nac.domain import IdentityRef\n"
            "import datetime as dt\n"
            "async def go():\n"
            "    s = build(load_config())\n"
            "    refs = [IdentityRef.parse(f'ai_agent/{n}') for n in json.load(sys.stdin)]\n"
            "    out = await create_bootstrap_tokens(s.inventory, refs, dt.timedelta(hours=1),"
            " actor='bench')\n"
            "    print(json.dumps([t for t, _ in out]))\n"
            "    await s.close()\n"
            "asyncio.run(go())\n")
        p = subprocess.run([sys.executable, "-c", script], env=env, input=json.dumps(names),
                           capture_output=True, text=True, check=True, cwd=REPO)
        tokens = json.loads(p.stdout)
        proc = subprocess.Popen([*NHI, "serve"], env=env, cwd=REPO, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{api}"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("service did not become ready")
        print(f"# bench/agents {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}: {os.cpu_count()} "
              f"CPUs; AGENTS={AGENTS} SPAWN={SPAWN} GRANTS={GRANTS} C={C}; nhi-nac serve on "
              f"SQLite, P-256, loopback", flush=True)

        enrollments = [pki.new_enrollment("p256") for _ in names]
        answers = await phase("enroll (token)", proc.pid, base, [
            post("/pki/v1/enroll", {"token": t, "csr": e.csr_pem.decode()})
            for t, e in zip(tokens, enrollments, strict=True)])
        creds = [(e.key, x509.load_pem_x509_certificate(a["certificate_pem"].encode()))
                 for e, a in zip(enrollments, answers, strict=True)]

        now = dt.datetime.now(dt.UTC)
        renewals = [pki.new_enrollment("p256") for _ in names]
        answers = await phase("renew (proof)", proc.pid, base, [
            post("/pki/v1/renew", {"proof": pki.build_renewal_proof(
                k, c, e.csr_pem, now).decode()})
            for (k, c), e in zip(creds, renewals, strict=True)])
        creds = [(e.key, x509.load_pem_x509_certificate(a["certificate_pem"].encode()))
                 for e, a in zip(renewals, answers, strict=True)]

        children = [pki.new_enrollment("p256") for _ in range(len(names) * SPAWN)]
        requests = []
        for i, (n, cred) in enumerate(zip(names, creds, strict=True)):
            for j in range(SPAWN):
                e = children[i * SPAWN + j]
                requests.append(post("/agent/v1/spawn", {
                    "name": f"{n}-c{j}", "scope": {"env": "prod"}, "csr": e.csr_pem.decode(),
                    "lifetime": "15m"}, cred))
        await phase("spawn (sub-agent+cert)", proc.pid, base, requests)

        granted = await phase("grant inside ceiling", proc.pid, base, [
            post("/agent/v1/grants", {"label": f"task={v}", "duration": "10m"}, cred)
            for v in ceiling_values[:GRANTS] for cred in creds])
        assert {g["status"] for g in granted} == {"active"}
        granted = await phase("grant inside, C=1", proc.pid, base, [
            post("/agent/v1/grants", {"label": f"task={ceiling_values[-1]}",
                                      "duration": "10m"}, cred) for cred in creds], 1)
        assert {g["status"] for g in granted} == {"active"}
        pending = await phase("grant outside ceiling", proc.pid, base, [
            post("/agent/v1/grants", {"label": "zone=db", "duration": "10m"}, cred)
            for cred in creds])
        assert {g["status"] for g in pending} == {"pending"}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.environ.get("KEEP") == "1":
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
