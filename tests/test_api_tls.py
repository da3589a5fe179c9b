"""The API's own HTTPS certificate: issued for ``[api] tls_names``, issued again when due
or when the names change, and served to new connections by a running process without a
restart (a real TLS handshake on loopback shows which certificate is served)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from OpenSSL import SSL

from nhi_nac import app
from nhi_nac.ca_service import API_TLS_DIR, CaService
from nhi_nac.config import ApiConfig, Config
from nhi_nac.inventory import Inventory
from nhi_nac.radius_service import RadiusNode
from nhi_nac.segment_service import SegmentService


def _ca(inventory: Inventory, tmp_path: Path, names: tuple[str, ...]) -> CaService:
    config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(tls_names=names))
    (tmp_path / "data").mkdir(exist_ok=True)
    return CaService(inventory, config)


def _served(tmp_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        (tmp_path / "data" / API_TLS_DIR / "server.pem").read_bytes())


async def _handshake_serial(context: ssl.SSLContext, root: Path) -> int:
    """Serve ``context`` on loopback and return the serial of what a client is shown."""
    async def nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(nothing, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ssl.create_default_context(cafile=str(root))
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        server.close()
        await server.wait_closed()


async def test_reissued_when_due_or_renamed(inventory: Inventory, tmp_path: Path) -> None:
    ca = _ca(inventory, tmp_path, ("127.0.0.1", "nac.nhi.example"))
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ca.init_hierarchy(start)
    assert any("HTTPS" in line for line in ca.issue_service_certificates(start))
    first = _served(tmp_path)
    assert (tmp_path / "data" / API_TLS_DIR / "server.key").stat().st_mode & 0o777 == 0o600
    assert not any("HTTPS" in x for x in ca.issue_service_certificates(
        start + dt.timedelta(days=59)))
    assert _served(tmp_path).serial_number == first.serial_number
    assert any("HTTPS" in x for x in ca.issue_service_certificates(start + dt.timedelta(days=61)))
    assert _served(tmp_path).serial_number != first.serial_number
    # Other names configured: a certificate for them at the next start.
    renamed = _ca(inventory, tmp_path, ("127.0.0.1",))
    assert any("HTTPS" in x for x in renamed.issue_service_certificates(start))
    san = _served(tmp_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == []


def _file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def _ocsp_signer_serial(ca: CaService) -> int:
    """The serial of the responder certificate in an OCSP answer, as a client sees it."""
    issuing = x509.load_pem_x509_certificate((ca.dir / "issuing.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((ca.dir / "ocsp.pem").read_bytes())
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
    answer = ocsp.load_der_ocsp_response(
        await ca.ocsp_response(request.public_bytes(serialization.Encoding.DER)))
    return answer.certificates[0].serial_number


async def test_running_processes_use_the_reissued_certificates(
        inventory: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started 61 days ago: the HTTPS (90 d), RADIUS (90 d) and OCSP responder (7 d)
    certificates are all due. The main process re-issues them; it and an extra API
    process each serve the new ones to new connections, without a restart."""
    ca = _ca(inventory, tmp_path, ("127.0.0.1",))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=61)
    ca.init_hierarchy(long_ago)
    ca.issue_service_certificates(long_ago)
    data = tmp_path / "data"
    root = data / "ca" / "root.pem"
    radius = RadiusNode(ca.config, inventory.db, SegmentService(inventory))
    worker = _ca(inventory, tmp_path, ("127.0.0.1",))  # an api.workers process: no re-issue
    contexts = [app.api_tls_context(ca.config), app.api_tls_context(worker.config)]
    assert contexts[0] is not None and contexts[1] is not None
    old = _served(tmp_path).serial_number
    old_ocsp = await _ocsp_signer_serial(worker)
    monkeypatch.setattr(app, "CA_REFRESH_SECONDS", 0.01)
    monkeypatch.setattr(app, "SERVICE_CERT_CHECK_SECONDS", 0.0)
    tasks = [asyncio.create_task(app._keep_ca_fresh(ca, contexts[0], radius, reissue=True)),
             asyncio.create_task(app._keep_ca_fresh(worker, contexts[1]))]
    try:
        for _ in range(300):
            await asyncio.sleep(0.02)
            if _served(tmp_path).serial_number != old:
                break
        new = _served(tmp_path).serial_number
        assert new != old
        await asyncio.sleep(0.2)  # a few more passes: every process reloads
        for context in contexts:
            assert await _handshake_serial(context, root) == new
        new_ocsp = _file_serial(data / "ca" / "ocsp.pem")
        assert new_ocsp != old_ocsp
        assert await _ocsp_signer_serial(ca) == new_ocsp
        assert await _ocsp_signer_serial(worker) == new_ocsp
        served = SSL.Connection(radius.server.tls_context, None).get_certificate()
        assert served is not None
        assert served.get_serial_number() == _file_serial(data / "radius" / "server.pem")
    finally:
        for task in tasks:
            task.cancel()
