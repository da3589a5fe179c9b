"""Interop with wpa_supplicant's eapol_test: EAP-TLS over TLS 1.2 and 1.3 through UDP."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from nhi_nac.radius.decision import Verdict
from nhi_nac.radius.directory import MemoryDirectory
from nhi_nac.radius.eaptls import EapTlsServerConfig, TlsVersion, build_server_context
from nhi_nac.radius.server import RadiusServer, Service
from nhi_nac.radius.udp import RadiusUdpService
from tests.interop import require_tool
from tests.radius.conftest import DEVICE_VLAN, Pki
from tests.radius.pkiutil import Issued

pytestmark = pytest.mark.interop

Runner = Callable[..., "asyncio.Future[tuple[int, str]]"]


async def _serve(
    directory: MemoryDirectory, tls_config: EapTlsServerConfig, version: TlsVersion
) -> tuple[RadiusUdpService, RadiusServer]:
    config = EapTlsServerConfig(
        tls_config.certificate,
        tls_config.private_key,
        tls_config.trust_anchors,
        min_version=TlsVersion.TLS1_2,
        max_version=version,
    )
    if version is TlsVersion.TLS1_3:
        config = EapTlsServerConfig(
            tls_config.certificate,
            tls_config.private_key,
            tls_config.trust_anchors,
            min_version=version,
            max_version=version,
        )
    server = RadiusServer(directory, tls_context=build_server_context(config))
    service = RadiusUdpService(server, directory)
    await service.start(["127.0.0.1"], 0, 0)
    return service, server


async def eapol_test(
    tmp: Path,
    port: int,
    pki: Pki,
    client: Issued,
    name: str,
    tls13: bool,
    fragment_size: int | None = None,
    mac: str | None = None,
) -> tuple[int, str]:
    tool = require_tool("eapol_test", "eapoltest")
    ca = tmp / "ca.pem"
    if not ca.exists():
        ca.write_bytes(pki.ca.cert.public_bytes(serialization.Encoding.PEM))
    cert, key = client.write(tmp, name)
    phase1 = 'phase1="tls_disable_tlsv1_3=0"' if tls13 else ""
    frag = f"fragment_size={fragment_size}" if fragment_size else ""
    conf = tmp / f"{name}.conf"
    conf.write_text(f"""network={{
    key_mgmt=IEEE8021X
    eap=TLS
    identity="device/{name}"
    ca_cert="{ca}"
    client_cert="{cert}"
    private_key="{key}"
    eapol_flags=0
    {phase1}
    {frag}
}}
""")
    proc = await asyncio.create_subprocess_exec(
        tool,
        "-c",
        str(conf),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-s",
        "testing123",
        "-r",
        "0",
        "-t",
        "10",
        *(["-M", mac] if mac else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture(params=[TlsVersion.TLS1_2, TlsVersion.TLS1_3], ids=["tls12", "tls13"])
async def served(
    request: pytest.FixtureRequest, directory: MemoryDirectory, tls_config: EapTlsServerConfig
) -> AsyncIterator[tuple[RadiusUdpService, RadiusServer, TlsVersion]]:
    require_tool("eapol_test", "eapoltest")
    version = request.param
    service, server = await _serve(directory, tls_config, version)
    try:
        yield service, server, version
    finally:
        await service.close()


@pytest.mark.parametrize("fragment_size", [None, 300])
async def test_eap_tls_success(
    served: tuple[RadiusUdpService, RadiusServer, TlsVersion],
    pki: Pki,
    directory: MemoryDirectory,
    tmp_path: Path,
    fragment_size: int | None,
) -> None:
    service, server, version = served
    tls13 = version is TlsVersion.TLS1_3
    rc, out = await eapol_test(
        tmp_path, service.port(Service.AUTH), pki, pki.good, "x", tls13, fragment_size
    )
    assert rc == 0 and "SUCCESS" in out, out[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in out
    assert f"Using TLS version TLSv1.{3 if tls13 else 2}" in out
    for attr in (
        "(Tunnel-Type)",
        "(Tunnel-Medium-Type)",
        "(Tunnel-Private-Group-Id)",
        "(Session-Timeout)",
    ):
        assert attr in out
    if tls13:
        assert "Commitment Message" in out
    await asyncio.sleep(0.05)
    (decision,) = directory.admissions
    assert decision.verdict is Verdict.ACCEPT and decision.vlan == DEVICE_VLAN
    assert str(decision.identity) == "device/x"


REJECTS = [
    ("revoked", "revoked"),
    ("expired", "expired"),
    ("not_yet_valid", "not_yet_valid"),
    ("foreign", "untrusted_chain"),
    ("no_client_auth", "no_client_auth_eku"),
    ("no_eku", "no_client_auth_eku"),
    ("retired", "identity_retired"),
    ("departed", "owner_departed"),
    ("unknown", "unknown_identity"),
]


async def test_eap_tls_rejects(
    served: tuple[RadiusUdpService, RadiusServer, TlsVersion],
    pki: Pki,
    directory: MemoryDirectory,
    tmp_path: Path,
) -> None:
    service, server, version = served
    port = service.port(Service.AUTH)
    tls13 = version is TlsVersion.TLS1_3
    results = await asyncio.gather(
        *(
            eapol_test(tmp_path, port, pki, getattr(pki, which), which, tls13)
            for which, _ in REJECTS
        )
    )
    for (which, failure), (rc, out) in zip(REJECTS, results, strict=True):
        assert rc != 0, f"{which} was admitted"
        assert "Access-Reject" in out or "EAP-FAILURE" in out, (which, out[-2000:])
        assert "MPPE keys OK: 1" not in out
        assert "SSL3 alert: read (remote end reported an error)" in out, (which, out[-3000:])
        assert server.counters[f"reject.{failure}"] >= 1, (which, server.counters)
    # the supplicant was told why: it received our TLS alert before the EAP-Failure
    await asyncio.sleep(0.05)
    reasons = {d.failure for d in directory.admissions}
    assert reasons == {f for _, f in REJECTS}
    assert all(d.verdict is Verdict.REJECT for d in directory.admissions)


async def test_rejected_eap_tls_is_recorded_with_port_mac_and_identity(
    served: tuple[RadiusUdpService, RadiusServer, TlsVersion],
    pki: Pki,
    directory: MemoryDirectory,
    tmp_path: Path,
) -> None:
    """An operator looking up a rejected device finds its MAC, and for a revoked
    certificate the identity it belonged to, as for an accepted one."""
    service, _, version = served
    port = service.port(Service.AUTH)
    tls13 = version is TlsVersion.TLS1_3
    cases = [("revoked", "02:00:5e:00:53:01"), ("foreign", "02:00:5e:00:53:02")]
    for which, mac in cases:
        rc, out = await eapol_test(tmp_path, port, pki, getattr(pki, which), which, tls13,
                                   mac=mac)
        assert rc != 0 and "Access-Reject" in out, out[-2000:]
    await asyncio.sleep(0.05)
    by_failure = {d.failure: d for d in directory.admissions}
    revoked = by_failure["revoked"]
    assert revoked.verdict is Verdict.REJECT
    assert revoked.mac == "02:00:5e:00:53:01"
    assert str(revoked.identity) == "device/revoked"
    assert revoked.user_name == "device/revoked"
    assert revoked.certificate_serial == pki.revoked.cert.serial_number
    foreign = by_failure["untrusted_chain"]  # no chain to our CA: nobody to name
    assert foreign.mac == "02:00:5e:00:53:02" and foreign.identity is None
