"""The systemd units pass systemd-analyze verify (where systemd-analyze exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.interop import require_tool

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def test_units_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    # verify checks that ExecStart exists: point the units at this checkout's command.
    exe = shutil.which("nhi-nac") or str(Path(sys.executable).parent / "nhi-nac")
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/bin/nhi-nac", exe))
    units = sorted(str(p) for p in tmp_path.iterdir())
    p = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # verify also loads the machine's own units (e.g. Debian's freeradius.service warns
    # about MemoryLimit=); only what it says about ours counts.
    ours = [line for line in p.stderr.splitlines()
            if any(line.startswith(u) or Path(u).name in line for u in units)]
    assert ours == [], p.stderr


def test_service_is_hardened() -> None:
    text = (UNITS / "nhi-nac.service").read_text()
    for directive in ("Type=notify", "User=nhi-nac", "StateDirectory=nhi-nac",
                      "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                      "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "LoadCredential="):
        assert directive in text
    assert "OnUnitActiveSec=" in (UNITS / "nhi-nac-governance.timer").read_text()


def test_boot_enrollment_waits_out_a_ca_that_is_down() -> None:
    """Both branches of the enroll unit (first enrollment and renewal) retry while the CA
    is unreachable, for less than the timer's period (tests/test_pki_service.py runs
    ``enroll --retry-for`` against a CA that comes back)."""
    unit = (UNITS / "nhi-nac-enroll@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.count("--retry-for 50m") == 2
    assert "OnUnitActiveSec=1h" in (UNITS / "nhi-nac-enroll@.timer").read_text()
