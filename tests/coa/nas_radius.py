"""Run the project's RADIUS core on 127.0.0.1 inside a test namespace (hostapd interop).

Usage: python -m tests.coa.nas_radius CERT_DIR SECRET
CERT_DIR holds ca.pem, server.pem, server.key. Prints READY once bound; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nhi_nac.domain import IdentityKind, IdentityRef
from nhi_nac.radius.directory import AdmissionIdentity, MemoryDirectory, NasClient
from nhi_nac.radius.eaptls import EapTlsServerConfig, build_server_context
from nhi_nac.radius.server import RadiusServer
from nhi_nac.radius.udp import RadiusUdpService


async def main(cert_dir: Path, secret: bytes) -> None:
    ca = x509.load_pem_x509_certificate((cert_dir / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((cert_dir / "server.pem").read_bytes())
    key = serialization.load_pem_private_key((cert_dir / "server.key").read_bytes(), None)
    config = EapTlsServerConfig(cert, key, (ca,))  # type: ignore[arg-type]
    directory = MemoryDirectory(
        nas_clients=[NasClient("hostapd", ipaddress.ip_network("127.0.0.0/8"), secret)],
        identities=[AdmissionIdentity(IdentityRef(IdentityKind.DEVICE, "x"), owner="alice")],
        trust_domain="nhi.example",
        default_vlans={IdentityKind.DEVICE: 100},
    )
    service = RadiusUdpService(
        RadiusServer(directory, tls_context=build_server_context(config)), directory
    )
    await service.start(["127.0.0.1"], 1812, 1813)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await service.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2].encode()))
