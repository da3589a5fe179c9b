"""A real `nhi-nac serve` process for end-to-end tests (SQLite, loopback, free ports)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.interop import require_tool

NHI = [sys.executable, "-m", "nhi_nac.cli"]
SECRET = "correct-horse-battery-staple"
MA = "Message-Authenticator = 0x00"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``nhi-nac`` with its own data directory: ``cli()`` runs commands, ``start()`` serves."""

    def __init__(self, env: dict[str, str], data: Path) -> None:
        self.env, self.data = env, data
        self.auth, self.acct, self.api = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        self.env.update({"NHI_NAC_RADIUS_AUTH_PORT": str(self.auth),
                         "NHI_NAC_RADIUS_ACCT_PORT": str(self.acct),
                         "NHI_NAC_RADIUS_LISTEN": '["127.0.0.1"]',
                         "NHI_NAC_API_LISTEN": f"127.0.0.1:{self.api}"})
        self.proc: subprocess.Popen[str] | None = None
        self.radclient = require_tool("radclient", "freeradius-utils")

    def cli(self, *args: str) -> str:
        p = subprocess.run([*NHI, *args], env=self.env, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    @property
    def base(self) -> str:
        """The API's base URL: https:// when the service serves its own certificate."""
        tls = "NHI_NAC_API_TLS_NAMES" in self.env
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.api}"

    def start(self) -> None:
        self.proc = subprocess.Popen([*NHI, "serve"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        context = (ssl.create_default_context(cafile=str(self.data / "ca" / "root.pem"))
                   if self.base.startswith("https") else None)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2, context=context):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(err) from None
                time.sleep(0.1)
        raise AssertionError("service did not become ready")

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return err

    def radclient_run(self, body: str, kind: str = "auth", secret: str = SECRET) -> str:
        port = self.acct if kind == "acct" else self.auth
        p = subprocess.run([self.radclient, "-x", "-r", "1", "-t", "2", f"127.0.0.1:{port}",
                            kind, secret], input=body, capture_output=True, text=True,
                           timeout=30)
        return p.stdout + p.stderr

    def mab(self, mac: str) -> str:
        return self.radclient_run(f'User-Name = "{mac}", User-Password = "{mac}", '
                                  f'Calling-Station-Id = "{mac}", NAS-Port-Id = "Gi1/0/7", {MA}')

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "nhi-nac.db")




def service_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NHI_NAC_")}
    env.update({"NHI_NAC_DATA_DIR": str(tmp_path / "data"), "NHI_NAC_LOG_FORMAT": "json",
                # Tests run `governance scan` themselves and read what it opened; the
                # service's own rescan on change is tested on its own.
                "NHI_NAC_GOVERNANCE_RESCAN_SECONDS": "0"})
    return env
