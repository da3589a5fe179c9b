"""RADIUS in the running service: directory, engine, UDP shell, TLS material, metrics.

Built by :mod:`nhi_nac.app` from the configuration. The EAP-TLS server certificate is
read from ``<data_dir>/radius/`` (``server.pem``, ``server.key``, ``chain.pem``,
``ca.pem``), which ``nhi-nac init`` fills from the internal CA; without it the server
answers MAC-auth-bypass only and says so in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from nhi_nac.admission_store import InventoryDirectory
from nhi_nac.config import Config
from nhi_nac.radius.decision import AdmissionPolicy, BackendPolicy
from nhi_nac.radius.eaptls import EapTlsServerConfig, build_server_context
from nhi_nac.radius.server import RadiusServer
from nhi_nac.radius.udp import RadiusUdpService
from nhi_nac.segment_service import SegmentService
from nhi_nac.storage.db import Database

log = structlog.get_logger("nhi_nac.radius")

TLS_DIR = "radius"


def tls_paths(data_dir: Path) -> dict[str, Path]:
    base = data_dir / TLS_DIR
    return {name: base / f"{name}" for name in ("server.pem", "server.key", "chain.pem",
                                                 "ca.pem")}


def load_tls_context(data_dir: Path) -> SSL.Context | None:
    paths = tls_paths(data_dir)
    if not all(p.exists() for p in paths.values()):
        return None
    cert = x509.load_pem_x509_certificate(paths["server.pem"].read_bytes())
    key = load_pem_private_key(paths["server.key"].read_bytes(), password=None)
    chain = tuple(x509.load_pem_x509_certificates(paths["chain.pem"].read_bytes()))
    anchors = tuple(x509.load_pem_x509_certificates(paths["ca.pem"].read_bytes()))
    return build_server_context(EapTlsServerConfig(
        certificate=cert, private_key=key,  # type: ignore[arg-type]
        trust_anchors=anchors + chain, chain=chain))


class RadiusMetrics(Collector):
    """Exports the engine's and the directory's counters to Prometheus."""

    def __init__(self, server: RadiusServer, directory: InventoryDirectory,
                 shell: RadiusUdpService) -> None:
        self.server = server
        self.directory = directory
        self.shell = shell

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily |
                                  HistogramMetricFamily]:
        decisions = CounterMetricFamily("nhi_radius_events", "RADIUS decisions and drops",
                                        labels=["event"])
        for key, value in sorted(self.server.counters.items()):
            decisions.add_metric([key], value)
        yield decisions
        store = CounterMetricFamily("nhi_radius_store_events", "Admission store activity",
                                    labels=["event"])
        for key, value in sorted(self.directory.counters.items()):
            store.add_metric([key], value)
        yield store
        sessions = GaugeMetricFamily("nhi_radius_eap_sessions", "EAP conversations in flight")
        sessions.add_metric([], self.server.eap_sessions)
        yield sessions
        hist = self.shell.latency
        buckets, running = [], 0
        for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
            running += count
            buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
        latency = HistogramMetricFamily("nhi_radius_request_seconds",
                                        "Request arrival to reply sent")
        latency.add_metric([], buckets, sum_value=hist.total)
        yield latency


class RadiusNode:
    """Everything RADIUS needs in one running process."""

    def __init__(self, config: Config, db: Database, segments: SegmentService) -> None:
        self.config = config
        self.segments = segments
        self.directory = InventoryDirectory(db, segments, config.ca.trust_domain)
        self.tls = load_tls_context(config.data_path)
        self.server = RadiusServer(self.directory, self.policy(), tls_context=self.tls)
        self.shell = RadiusUdpService(self.server, self.directory)
        self._tasks: list[asyncio.Task[None]] = []

    def policy(self) -> AdmissionPolicy:
        """Unknown MACs get the segment map's fallback (quarantine VLAN, or reject)."""
        matcher = self.segments.matcher
        if matcher is not None:
            fallback = matcher.fallback.segment
            unknown = fallback.vlan if fallback is not None else None
        else:
            unknown = self.config.radius.fallback_vlan or None
        return AdmissionPolicy(unknown_mac_vlan=unknown,
                               on_backend_error=BackendPolicy(self.config.radius.on_backend_error))

    def reload_tls(self) -> None:
        """Serve the server certificate now on disk to new EAP-TLS conversations (those in
        flight finish with the one they began with)."""
        context = load_tls_context(self.config.data_path)
        if context is not None:
            self.tls = context
            self.server.tls_context = context
            log.info("radius.tls_reloaded")

    def on_segments_changed(self) -> None:
        self.directory.forget_vlans()
        self.server.policy = dataclasses.replace(self.server.policy,
                                                 unknown_mac_vlan=self.policy().unknown_mac_vlan)

    async def start(self) -> None:
        await self.directory.start()
        if self.tls is None:
            log.warning("radius.eap_tls_disabled",
                        reason=f"no server certificate in {self.config.data_path / TLS_DIR}")
        cfg = self.config.radius
        await self.shell.start(cfg.listen, cfg.auth_port, cfg.acct_port)
        self._tasks.append(asyncio.create_task(self.directory.watch()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.shell.close()
        with contextlib.suppress(Exception):
            await self.directory.flush()
