"""Two nhi-nac processes on one PostgreSQL database stay consistent within a second.

A map applied through node A's API changes what node B's RADIUS answers, and an
identity retired on node A is refused by node B: each node follows the shared event
outbox and segment-map versions, so no restart and no broker are needed. The same holds
for the extra API processes of one node (``api.workers``).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_URL, _pg_dsn, _run
from tests.interop import missing
from tests.service_process import MA, NHI, SECRET, Service, service_env

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


def _listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:``port`` (one per API process with SO_REUSEPORT)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[1] == f"0100007F:{port:04X}" and r.split()[3] == "0A")


def _post_enroll(port: int, token: str, csr: bytes) -> int:
    body = json.dumps({"token": token, "csr": csr.decode()}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/pki/v1/enroll", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            assert b"BEGIN CERTIFICATE" in r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _two_api_processes(pg_database: str, tmp_path: Path, names: list[str]
                       ) -> tuple[Service, list[str]]:
    """A service with ``api.workers = 2`` on ``pg_database`` (not started), workload
    identities ``names`` owned by Alice, and a bootstrap token for each."""
    env = service_env(tmp_path)
    env["NHI_NAC_DATABASE_URL"] = pg_database
    env["NHI_NAC_API_WORKERS"] = "2"
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    svc = Service(env, tmp_path / "data")
    svc.cli("init")
    svc.cli("owner", "add", "alice@example.com", "--name", "Alice", "--team", "platform")
    csv = tmp_path / "ids.csv"
    csv.write_text("kind,name,owner\n" + "".join(f"workload,{n},alice@example.com\n"
                                                  for n in names))
    svc.cli("import", str(csv))
    return svc, [svc.cli("token", "create", f"workload/{n}", "--ttl", "10m").strip()
                 for n in names]


def _start_both(svc: Service) -> None:
    """Start the service; return once both API processes listen (stopped if they do
    not)."""
    svc.start()
    deadline = time.monotonic() + 30
    while _listeners(svc.api) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    if _listeners(svc.api) != 2:
        svc.stop()
        pytest.fail(f"{_listeners(svc.api)} API processes listen on {svc.api}, not 2")


def test_enrollment_across_api_worker_processes(pg_database: str, tmp_path: Path) -> None:
    """``api.workers = 2``: two processes share the API port; each token, sent twice at
    once over separate connections, is issued exactly once, and every issue has its
    credential row, audit record (chain intact) and event; stopping the service stops
    the worker too."""
    from concurrent.futures import ThreadPoolExecutor

    from pki import build_csr, generate_private_key

    names = [f"w-{i}" for i in range(8)]
    svc, tokens = _two_api_processes(pg_database, tmp_path, names)
    csrs = [build_csr(generate_private_key("p256"), f"spiffe://nhi.example/workload/{n}")
            for n in names]
    _start_both(svc)
    try:
        jobs = [(t, c) for t, c in zip(tokens, csrs, strict=True)] * 2
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda job: _post_enroll(svc.api, *job), jobs))
        per_token = [sorted(codes[i::len(tokens)]) for i in range(len(tokens))]
        assert per_token == [[201, 403]] * len(tokens), codes
        issued, events, audited = _run(_counts(pg_database))
        assert issued == (len(names), len(names)) and events == audited == len(names)
        assert svc.cli("audit", "verify").startswith("OK:")
        # /metrics is the node's, whichever process a scrape reaches: every process's
        # requests counted once, and RADIUS's figures (the main process's) every time.
        for _ in range(12):
            scraped = _scrape(svc.api)
            enrolls = {labels["status"]: value for name, labels, value in scraped
                       if name == "nhi_api_requests_total"
                       and labels["route"] == "/pki/v1/enroll"}
            assert enrolls == {"201": len(names), "403": len(names)}, enrolls
            assert any(name.startswith("nhi_radius_") for name, _, _ in scraped)
            assert any(name == "nhi_ca_certificate_expiry_timestamp_seconds"
                       for name, _, _ in scraped)
    finally:
        svc.stop()
    assert _listeners(svc.api) == 0
    assert list((tmp_path / "tmp").iterdir()) == []  # the metrics files are gone


def _scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """One scrape of /metrics over a new connection: (sample name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def test_one_key_is_bound_to_one_identity_across_api_processes(
        pg_database: str, tmp_path: Path) -> None:
    """Two identities enrolling the same public key at the same moment through two API
    processes (two nodes): one certificate, and the other is refused with the reason,
    however the two requests are spread over the processes' batches."""
    from concurrent.futures import ThreadPoolExecutor

    from pki import build_csr, generate_private_key

    pairs = 12
    names = [f"w-{i}" for i in range(2 * pairs)]
    svc, tokens = _two_api_processes(pg_database, tmp_path, names)
    keys = [generate_private_key("p256") for _ in range(pairs)]
    csrs = [build_csr(keys[i // 2], f"spiffe://nhi.example/workload/{n}")
            for i, n in enumerate(names)]
    _start_both(svc)
    try:
        with ThreadPoolExecutor(2 * pairs) as pool:
            codes = list(pool.map(lambda job: _post_enroll(svc.api, *job),
                                  zip(tokens, csrs, strict=True)))
        assert [sorted(codes[i:i + 2]) for i in range(0, len(codes), 2)] == \
            [[201, 400]] * pairs, codes
        (issued, _rows), _events, _audited = _run(_counts(pg_database))
        assert issued == pairs
    finally:
        svc.stop()


async def _counts(dsn: str) -> tuple[tuple[int, int], int, int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        row = await conn.fetchrow("SELECT count(DISTINCT serial), count(*) FROM credentials "
                                  "WHERE type = 'certificate'")
        events = await conn.fetchval("SELECT count(*) FROM event_outbox WHERE type = "
                                     "'certificate.issued'")
        audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = "
                                      "'certificate.issue'")
    finally:
        await conn.close()
    return (int(row[0]), int(row[1])), int(events), int(audited)


def test_more_than_one_api_process_needs_postgresql(tmp_path: Path) -> None:
    env = service_env(tmp_path)
    env["NHI_NAC_API_WORKERS"] = "2"
    proc = subprocess.run([*NHI, "config"], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0
    assert "api.workers" in proc.stderr and "PostgreSQL" in proc.stderr
