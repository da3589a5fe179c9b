"""Interop peers: skip with a reason when missing, fail under NHI_REQUIRE_INTEROP=1."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED = os.environ.get("NHI_REQUIRE_INTEROP") == "1"


def missing(reason: str) -> None:
    """Skip the test locally, or fail it where CI promised the peer is installed."""
    if REQUIRED:
        pytest.fail(f"interop peer missing under NHI_REQUIRE_INTEROP=1: {reason}")
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not installed (Debian package {package})")
    assert path is not None
    return path
