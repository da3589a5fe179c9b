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

from nhi_nac import app
from nhi_nac.ca_service import API_TLS_DIR, CaService
from nhi_nac.config import ApiConfig, Config
from nhi_nac.inventory import Inventory


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


async def test_running_process_serves_the_reissued_certificate(
        inventory: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = _ca(inventory, tmp_path, ("127.0.0.1",))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=61)
    ca.init_hierarchy(long_ago)
    ca.issue_service_certificates(long_ago)  # two thirds through its life: due now
    root = tmp_path / "data" / "ca" / "root.pem"
    context = app.api_tls_context(ca.config)
    assert context is not None
    old = _served(tmp_path).serial_number
    assert await _handshake_serial(context, root) == old
    monkeypatch.setattr(app, "CA_REFRESH_SECONDS", 0.01)
    monkeypatch.setattr(app, "TLS_CHECK_SECONDS", 0.0)
    task = asyncio.create_task(app._keep_ca_fresh(ca, context, reissue=True))
    try:
        for _ in range(300):
            await asyncio.sleep(0.02)
            if _served(tmp_path).serial_number != old:
                break
        new = _served(tmp_path).serial_number
        assert new != old
        for _ in range(100):  # reloaded on the next pass
            if await _handshake_serial(context, root) == new:
                break
            await asyncio.sleep(0.02)
        assert await _handshake_serial(context, root) == new
    finally:
        task.cancel()
