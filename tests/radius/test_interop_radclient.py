"""Interop through the UDP shell with FreeRADIUS's radclient: MAB, accounting, Status-Server."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from nhi_nac.radius.decision import AdmissionPolicy
from nhi_nac.radius.directory import AcctStatus, MemoryDirectory
from nhi_nac.radius.server import RadiusServer, Service
from nhi_nac.radius.udp import RadiusUdpService
from tests.interop import require_tool
from tests.radius.conftest import MAB_VLAN, QUARANTINE_VLAN

pytestmark = pytest.mark.interop


@dataclass
class Running:
    service: RadiusUdpService
    server: RadiusServer
    directory: MemoryDirectory
    radclient: str

    async def radclient_run(
        self, body: str, kind: str = "auth", secret: str = "testing123"
    ) -> tuple[int, str]:
        port = self.service.port(Service.ACCT if kind == "acct" else Service.AUTH)
        proc = await asyncio.create_subprocess_exec(
            self.radclient,
            "-x",
            "-r",
            "1",
            "-t",
            "1",
            f"127.0.0.1:{port}",
            kind,
            secret,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate(body.encode())
        return proc.returncode or 0, out.decode()


@pytest.fixture
async def running(directory: MemoryDirectory) -> AsyncIterator[Running]:
    radclient = require_tool("radclient", "freeradius-utils")
    server = RadiusServer(directory, AdmissionPolicy(unknown_mac_vlan=QUARANTINE_VLAN))
    service = RadiusUdpService(server, directory)
    await service.start(["127.0.0.1"], 0, 0)
    try:
        yield Running(service, server, directory, radclient)
    finally:
        await service.close()


MA = "Message-Authenticator = 0x00"


@pytest.mark.parametrize(
    "notation",
    [
        "aa:bb:cc:dd:ee:ff",
        "AA-BB-CC-DD-EE-FF",
        "aabb.ccdd.eeff",
        "aabbccddeeff",
    ],
)
async def test_mab_accept_with_vlan(running: Running, notation: str) -> None:
    rc, out = await running.radclient_run(
        f'User-Name = "{notation}", User-Password = "{notation}", '
        f'Calling-Station-Id = "{notation}", NAS-Port = 3, {MA}'
    )
    assert rc == 0, out
    assert "Received Access-Accept" in out
    assert "Tunnel-Type:1 = VLAN" in out
    assert "Tunnel-Medium-Type:1 = IEEE-802" in out
    assert f'Tunnel-Private-Group-Id:1 = "{MAB_VLAN}"' in out
    # Message-Authenticator is the first attribute of the reply
    received = out[out.index("Received Access-Accept") :].splitlines()
    assert received[1].strip().startswith("Message-Authenticator")


async def test_unknown_mac_quarantine_and_unmanaged(running: Running) -> None:
    rc, out = await running.radclient_run(
        f'User-Name = "02-00-00-00-00-01", User-Password = "02-00-00-00-00-01", {MA}'
    )
    assert rc == 0, out
    assert f'Tunnel-Private-Group-Id:1 = "{QUARANTINE_VLAN}"' in out
    await asyncio.sleep(0.05)  # sinks run after the reply
    entry = running.directory.unmanaged["02:00:00:00:00:01"]
    assert entry.count == 1 and entry.nas_name == "lo4"
    await running.radclient_run(f'User-Name = "020000000001", User-Password = "020000000001", {MA}')
    await asyncio.sleep(0.05)
    assert running.directory.unmanaged["02:00:00:00:00:01"].count == 2


async def test_no_reply_without_message_authenticator(running: Running) -> None:
    rc, out = await running.radclient_run(
        'User-Name = "aabbccddeeff", User-Password = "aabbccddeeff"'
    )
    assert rc != 0 and "No reply" in out, out
    assert running.server.counters["drop.missing_message_authenticator"] >= 1


async def test_no_reply_with_wrong_secret(running: Running) -> None:
    rc, out = await running.radclient_run(
        f'User-Name = "aabbccddeeff", User-Password = "aabbccddeeff", {MA}', secret="wrong"
    )
    assert rc != 0 and "No reply" in out, out
    assert running.server.counters["drop.bad_message_authenticator"] >= 1


async def test_reject_has_reply_message(running: Running) -> None:
    rc, out = await running.radclient_run(
        f'User-Name = "00:11:22:33:44:55", User-Password = "00:11:22:33:44:55", {MA}'
    )
    assert "Received Access-Reject" in out
    assert 'Reply-Message = "Access denied"' in out


async def test_accounting_start_stop(running: Running) -> None:
    common = 'Acct-Session-Id = "sess-1", Calling-Station-Id = "AA-BB-CC-DD-EE-FF", NAS-Port = 3'
    rc, out = await running.radclient_run(f"Acct-Status-Type = Start, {common}", "acct")
    assert rc == 0 and "Received Accounting-Response" in out, out
    rc, out = await running.radclient_run(
        f"Acct-Status-Type = Stop, {common}, Acct-Input-Octets = 1000, "
        "Acct-Output-Octets = 2000, Acct-Session-Time = 60, Acct-Terminate-Cause = User-Request",
        "acct",
    )
    assert rc == 0 and "Received Accounting-Response" in out, out
    records = list(running.directory.accounting)
    assert [r.status for r in records] == [AcctStatus.START, AcctStatus.STOP]
    stop = records[1]
    assert stop.session_id == "sess-1" and stop.mac == "aa:bb:cc:dd:ee:ff"
    assert (stop.input_octets, stop.output_octets, stop.session_time) == (1000, 2000, 60)


async def test_accounting_not_stored_means_no_response(running: Running) -> None:
    async def failing(record: object) -> None:
        raise RuntimeError("database down")

    running.directory.record_accounting = failing  # type: ignore[method-assign]
    rc, out = await running.radclient_run(
        'Acct-Status-Type = Start, Acct-Session-Id = "s2"', "acct"
    )
    assert rc != 0 and "No reply" in out, out


@pytest.mark.parametrize("kind", ["auth", "acct"])
async def test_status_server(running: Running, kind: str) -> None:
    port = running.service.port(Service.ACCT if kind == "acct" else Service.AUTH)
    proc = await asyncio.create_subprocess_exec(
        running.radclient,
        "-x",
        "-r",
        "1",
        "-t",
        "1",
        f"127.0.0.1:{port}",
        "status",
        "testing123",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate(f"{MA}\n".encode())
    text = out.decode()
    assert proc.returncode == 0, text
    expected = "Access-Accept" if kind == "auth" else "Accounting-Response"
    assert f"Received {expected}" in text


async def test_ipv6_listener(directory: MemoryDirectory) -> None:
    radclient = require_tool("radclient", "freeradius-utils")
    server = RadiusServer(directory)
    service = RadiusUdpService(server, directory)
    try:
        await service.start(["::1"], 0, 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        port = service.port(Service.AUTH)
        proc = await asyncio.create_subprocess_exec(
            radclient,
            "-6",
            "-x",
            "-r",
            "1",
            "-t",
            "1",
            f"[::1]:{port}",
            "auth",
            "testing123",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await proc.communicate(
            f'User-Name = "aabbccddeeff", User-Password = "aabbccddeeff", {MA}'.encode()
        )
        assert proc.returncode == 0 and "Received Access-Accept" in out.decode(), out.decode()
    finally:
        await service.close()


async def test_second_instance_cannot_share_port(running: Running) -> None:
    """No SO_REUSEPORT: a second server on the same port fails loudly."""
    other = RadiusUdpService(running.server, running.directory)
    with pytest.raises(OSError):
        await other.start(["127.0.0.1"], running.service.port(Service.AUTH), 0)
    await other.close()
