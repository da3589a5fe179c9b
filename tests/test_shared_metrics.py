"""The API workers' /metrics hand-off to the main process (``nhi_nac.api.shared_metrics``);
the whole node, with two real processes, is tested in tests/test_multinode.py."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from nhi_nac.api import shared_metrics


async def test_a_worker_forwards_metrics_to_the_main_process(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("nhi_test_things", "things", registry=registry).inc(3)
    runner = await shared_metrics.serve_on_socket(registry, tmp_path)
    try:
        reply = await shared_metrics.from_main_process(tmp_path)
    finally:
        await runner.cleanup()
    assert reply.status == 200 and reply.content_type == "text/plain"
    assert reply.body is not None and b"nhi_test_things_total 3.0" in bytes(reply.body)  # type: ignore[arg-type]


async def test_without_the_main_process_a_worker_says_so(tmp_path: Path) -> None:
    reply = await shared_metrics.from_main_process(tmp_path)
    assert reply.status == 503
    body = json.loads(bytes(reply.body))  # type: ignore[arg-type]
    assert "the main process did not answer" in body["detail"]


def test_sharing_starts_in_a_private_directory_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    directory = shared_metrics.start_sharing()
    try:
        assert shared_metrics.sharing_directory() == directory
        assert directory.parent == tmp_path and directory.stat().st_mode & 0o777 == 0o700
        Counter("nhi_test_shared", "shared", registry=None).inc()
        assert list(directory.glob("counter_*.db")), "values are kept in files"
    finally:
        shared_metrics.stop_sharing(directory)
    assert shared_metrics.sharing_directory() is None and not directory.exists()
