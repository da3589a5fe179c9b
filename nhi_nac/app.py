"""The one wiring place: builds every component from a Config.

Nothing else reads configuration; components receive what they need as arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from nhi_nac.agents import AgentService
from nhi_nac.api import shared_metrics
from nhi_nac.api.server import make_app
from nhi_nac.ca_metrics import CaMetrics, issuing_ca_warning
from nhi_nac.ca_service import API_TLS_DIR, CaService
from nhi_nac.coa.sender import CoaSender
from nhi_nac.config import Config
from nhi_nac.enforcement import Enforcer, coa_sender
from nhi_nac.errors import ConfigError, InternalError
from nhi_nac.events import EventRelay
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory, utcnow
from nhi_nac.mqtt import MqttPublisher
from nhi_nac.radius_service import RadiusMetrics, RadiusNode, tls_paths
from nhi_nac.sdnotify import notify
from nhi_nac.segment_service import SegmentService, starter_map_text
from nhi_nac.storage.db import Database

log = structlog.get_logger("nhi_nac")


@dataclass
class Services:
    config: Config
    db: Database
    inventory: Inventory
    relay: EventRelay
    governance: Governance
    segments: SegmentService
    ca: CaService
    agents: AgentService

    async def close(self) -> None:
        await self.db.close()


def build(config: Config) -> Services:
    db = Database(config.effective_database_url)
    inventory = Inventory(db, utcnow)
    segments = SegmentService(inventory)
    ca = CaService(inventory, config)
    return Services(config, db, inventory, EventRelay(db, utcnow),
                    Governance(inventory, config.governance, segments.vlan_of, config.agents),
                    segments, ca, AgentService(inventory, ca, config.agents))


def ensure_data_dir(config: Config) -> None:
    path = config.data_path
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


async def initialise(config: Config, with_ca: bool = True) -> list[str]:
    """Create what a fresh install needs; safe to run again. Returns what it did.
    ``with_ca=False`` (``ca init``, ``ca import``): everything but the CA, and only what
    was missing."""
    done: list[str] = []
    ensure_data_dir(config)
    services = build(config)
    try:
        before = await services.db.current_revision()
        await services.db.upgrade()
        after = await services.db.current_revision()
        if with_ca or before != after:
            done.append(f"database at migration {after}" + (
                f" (was {before})" if before and before != after else ""))
        if await services.segments.current_text() is None:
            info = await services.segments.apply(starter_map_text(), "starter.yaml",
                                                 author="nhi-nac init",
                                                 comment="starter segment map")
            done.append(f"starter segment map applied as version {info.version}")
        if not with_ca:
            return done
        now = services.inventory.clock()
        done += services.ca.init_hierarchy(now)
        done += services.ca.issue_service_certificates(now)
        if services.ca.crl is None:
            crl = await services.ca.publish_crl()
            done.append(f"CRL {crl.number} published ({crl.entries} entries)")
    finally:
        await services.close()
    return done


#: Seconds between checks for a segment map applied by another node (or the CLI).
SEGMENT_REFRESH_SECONDS = 1.0


async def _keep_segments_fresh(service: SegmentService, radius: RadiusNode | None) -> None:
    while True:
        await asyncio.sleep(SEGMENT_REFRESH_SECONDS)
        try:
            changed = await service.refresh()
            if changed:
                log.info("segments.reloaded", version=service.version)
            if (await service.refresh_overlays() or changed) and radius is not None:
                radius.on_segments_changed()
        except Exception:  # noqa: BLE001 - the current map stays in force
            log.warning("segments.refresh_failed", exc_info=True)


#: Seconds between CRL checks (re-signed on revocations anywhere and before nextUpdate).
CA_REFRESH_SECONDS = 2.0


async def _keep_ca_fresh(ca: CaService, tls: ssl.SSLContext | None = None,
                         radius: RadiusNode | None = None, reissue: bool = False) -> None:
    """Follow revocations made elsewhere; hourly, re-issue the service's own certificates
    that are due (the main process, ``reissue``: OCSP responder, RADIUS server, HTTPS);
    and let every process use, within seconds and without a restart, the ones that
    changed on disk and the issuing CA once renewed (``ca renew``). A 7-day OCSP responder
    certificate would otherwise expire under a server that runs for weeks."""
    loop = asyncio.get_running_loop()
    checked = loop.time()
    # Re-issuing loads the new OCSP responder itself; other processes load it on change.
    watched = _ServiceCertificates(ca, tls, radius, ocsp=not reissue)
    while True:
        await asyncio.sleep(CA_REFRESH_SECONDS)
        try:
            await ca.refresh()
        except Exception:  # noqa: BLE001 - the published CRL stays until the next try
            log.warning("ca.refresh_failed", exc_info=True)
        try:
            if loop.time() - checked >= SERVICE_CERT_CHECK_SECONDS:
                checked = loop.time()
                if reissue:
                    for line in ca.issue_service_certificates(utcnow()):
                        log.info("ca.service_certificate", issued=line)
                    warn_if_issuing_ca_ends(ca)
            watched.reload_changed()  # a few stat calls
        except Exception:  # noqa: BLE001 - the current certificates stay until the next try
            log.warning("ca.service_certificates_failed", exc_info=True)


#: Seconds between checks whether the service's own certificates are due or changed.
SERVICE_CERT_CHECK_SECONDS = 3600.0


def warn_if_issuing_ca_ends(ca: CaService) -> None:
    """At start and hourly: one warning while the issuing CA has less life left than the
    profiles may grant (``ca_metrics.issuing_ca_warning``)."""
    message = issuing_ca_warning(ca.issuing_ca(), utcnow())
    if message is not None:
        log.warning("ca.issuing_ca_ending", detail=message)


class _ServiceCertificates:
    """The files of the service's own certificates, and what to reload when one changes."""

    def __init__(self, ca: CaService, tls: ssl.SSLContext | None,
                 radius: RadiusNode | None, ocsp: bool) -> None:
        # The issuing CA itself, renewed (``ca renew``) by another process: its key is
        # the same, its notAfter later.
        self.watch: list[tuple[str, Callable[[], object]]] = [(str(ca.dir / "issuing.pem"),
                                                               ca.load)]
        if ocsp:
            self.watch.append((str(ca.dir / "ocsp.pem"), ca.load))
        if tls is not None:
            self.watch.append((_api_certificate_files(ca.config)[0],
                               lambda: _load_api_certificate(tls, ca.config)))
        if radius is not None:
            self.watch.append((str(tls_paths(ca.config.data_path)["server.pem"]),
                               radius.reload_tls))
        self.seen = {path: _mtime(path) for path, _ in self.watch}

    def reload_changed(self) -> None:
        for path, reload in self.watch:
            mtime = _mtime(path)
            if mtime != self.seen[path]:
                # Seen first: a file that does not load is logged once, not every loop.
                self.seen[path] = mtime
                reload()
                log.info("ca.service_certificate_reloaded", file=path)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def api_tls_context(config: Config) -> ssl.SSLContext | None:
    """The API's HTTPS server context (TLS 1.2 or newer), or None for plain HTTP."""
    if not config.api_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_api_certificate(context, config)
    return context


def _api_certificate_files(config: Config) -> tuple[str, str]:
    if config.api.tls_cert:
        return config.api.tls_cert, config.api.tls_key
    folder = config.data_path / API_TLS_DIR
    return str(folder / "server.pem"), str(folder / "server.key")


def _load_api_certificate(context: ssl.SSLContext, config: Config) -> None:
    cert, key = _api_certificate_files(config)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("api.tls_cert" if config.api.tls_cert else "api.tls_names",
                          f"cannot load the HTTPS certificate {cert}: {exc}") from None


#: Seconds between ends of expired grants, and between behavioural scans.
GRANT_EXPIRY_SECONDS = 1.0
BEHAVIOUR_SCAN_SECONDS = 2.0


async def _govern(agents: AgentService, governance: Governance, rescan_seconds: int) -> None:
    """End grants on time; run the behavioural rules every few seconds; rescan everything
    after a relevant change (at most every ``rescan_seconds``)."""
    loop = asyncio.get_running_loop()
    next_scan = next_full = loop.time()
    if rescan_seconds:
        await governance.changed()  # set the mark: what came before is the timer's
    while True:
        await asyncio.sleep(GRANT_EXPIRY_SECONDS)
        try:
            for grant in await agents.expire_due():
                log.info("agent.grant_ended", grant=grant.id, identity=grant.identity,
                         status=grant.status)
            if rescan_seconds and loop.time() >= next_full and await governance.changed():
                next_full = loop.time() + rescan_seconds
                next_scan = loop.time() + BEHAVIOUR_SCAN_SECONDS
                result = await governance.scan(wait=False)  # another node may be on it
                if result.opened or result.resolved:
                    log.info("governance.rescan", opened=list(result.opened),
                             resolved=list(result.resolved))
            if loop.time() >= next_scan:
                next_scan = loop.time() + BEHAVIOUR_SCAN_SECONDS
                result = await governance.scan(behaviour_only=True, wait=False)
                if result.opened:
                    log.warning("governance.behaviour", opened=list(result.opened))
        except Exception:  # noqa: BLE001 - try again on the next tick
            log.warning("agents.govern_failed", exc_info=True)


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run RADIUS and the API until SIGTERM/SIGINT or ``stop``."""
    services = build(config)
    await services.db.check_schema()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await services.segments.refresh()
    await services.segments.refresh_overlays()
    services.ca.load()
    services.ca.issue_service_certificates(services.inventory.clock())
    warn_if_issuing_ca_ends(services.ca)
    radius = RadiusNode(config, services.db, services.segments)
    # With API workers, this process renders /metrics for all of them (shared_metrics).
    shared = shared_metrics.start_sharing() if config.api.workers > 1 else None
    registry = CollectorRegistry()
    if shared is not None:
        shared_metrics.collect_every_process(registry, shared)
    registry.register(RadiusMetrics(radius.server, radius.directory, radius.shell))
    registry.register(CaMetrics(services.ca))
    app = make_app(services.inventory, config.api.max_body, registry=registry,
                   governance=services.governance, segment_service=services.segments,
                   ca=services.ca, agents=services.agents)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = config.api_host_port
    tls = api_tls_context(config)
    site = web.TCPSite(runner, host, port, reuse_port=config.api.workers > 1 or None,
                       ssl_context=tls)
    workers: list[BaseProcess] = []
    metrics_socket: web.AppRunner | None = None
    publisher = None
    if config.mqtt.url:
        publisher = MqttPublisher(config.mqtt.url, config.mqtt.site)
        services.relay.subscribe(publisher)
    relay_task = asyncio.create_task(services.relay.run())
    refresh_task = asyncio.create_task(_keep_segments_fresh(services.segments, radius))
    ca_task = asyncio.create_task(_keep_ca_fresh(services.ca, tls, radius, reissue=True))

    async def prepare() -> None:
        # What a re-authentication after CoA will ask must be in memory first.
        changed = await services.segments.refresh()
        if await services.segments.refresh_overlays() or changed:
            radius.on_segments_changed()
        await radius.directory.check_for_changes()

    enforcer = Enforcer(services.db, coa_sender(CoaSender(), config.radius.coa_port), utcnow,
                        prepare)
    await enforcer.start()
    agents_task = asyncio.create_task(_govern(services.agents, services.governance,
                                              config.governance.rescan_seconds))
    tasks = [relay_task, refresh_task, ca_task, agents_task]
    if config.radius.coa_enabled:
        tasks.append(asyncio.create_task(enforcer.run()))
    try:
        try:
            await radius.start()
        except OSError as exc:
            raise InternalError(f"cannot listen for RADIUS on {config.radius.listen} ports "
                                f"{config.radius.auth_port}/{config.radius.acct_port}: "
                                f"{exc.strerror}") from None
        await site.start()
        if shared is not None:
            metrics_socket = await shared_metrics.serve_on_socket(registry, shared)
            workers = _start_api_workers(config, shared)
        log.info("api.listening", address=f"{host}:{port}", processes=1 + len(workers))
        _freeze_startup_objects()
        notify("READY=1\nSTATUS=serving")
        await stop.wait()
        notify("STOPPING=1")
    finally:
        await asyncio.to_thread(_stop_api_workers, workers)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await radius.close()
        await runner.cleanup()
        if metrics_socket is not None:
            await metrics_socket.cleanup()
        if shared is not None:
            shared_metrics.stop_sharing(shared)
        if publisher is not None:
            await publisher.close()
        await services.close()
        log.info("stopped")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``event_loop`` (None: asyncio's default loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop", "uvloop is not installed "
                              "(pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


# -- extra API processes (``api.workers``) ------------------------------------------------
#
# The kernel spreads connections over every process listening on the API port with
# SO_REUSEPORT. The extra processes serve the HTTP API only: they are nodes on the same
# database as the main one (as several machines would be, see tests/test_multinode.py),
# so enrollment's single-use tokens, the audit chain and the outbox hold across them, and
# they follow revocations and segment maps from the database. RADIUS, CoA, the event
# relay and the governance timers run once, in the main process.

#: Seconds between an API worker's checks that its main process is still there.
WORKER_PARENT_CHECK_SECONDS = 1.0
#: Seconds the main process waits for its API workers to stop before killing them.
WORKER_STOP_SECONDS = 10.0


def _start_api_workers(config: Config, metrics: Path) -> list[BaseProcess]:
    """Spawn ``api.workers - 1`` API processes (fresh interpreters: nothing inherited but
    the environment, which says where their metrics go); ``metrics``: the main
    process's ``shared_metrics`` directory, where they forward ``/metrics``."""
    ctx = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = [ctx.Process(target=_api_worker,
                                              args=(config, os.getpid(), metrics),
                                          name=f"nhi-nac-api-{i}", daemon=True)
                                  for i in range(1, config.api.workers)]
    for w in workers:
        w.start()
    return workers


def _stop_api_workers(workers: list[BaseProcess]) -> None:
    for w in workers:
        w.terminate()
    for w in workers:
        w.join(WORKER_STOP_SECONDS)
        if w.is_alive():
            w.kill()
            w.join()


def _api_worker(config: Config, parent: int, metrics: Path) -> None:
    """Entry point of one extra API process."""
    from nhi_nac.logs import configure_logging

    configure_logging(config.log.format, config.log.level)
    with asyncio.Runner(loop_factory=event_loop_factory(config.event_loop)) as runner:
        runner.run(_serve_api(config, parent, metrics))


async def _serve_api(config: Config, parent: int, metrics: Path) -> None:
    """The HTTP API alone, until SIGTERM/SIGINT or the main process is gone; its
    ``/metrics`` is the main process's, through ``metrics`` (``shared_metrics``)."""
    services = build(config)
    await services.db.check_schema()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await services.segments.refresh()
    await services.segments.refresh_overlays()
    services.ca.load()
    app = make_app(services.inventory, config.api.max_body,
                   governance=services.governance, segment_service=services.segments,
                   ca=services.ca, agents=services.agents, metrics_from_main=metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = config.api_host_port
    tls = api_tls_context(config)
    tasks = [asyncio.create_task(_keep_segments_fresh(services.segments, None)),
             asyncio.create_task(_keep_ca_fresh(services.ca, tls)),
             asyncio.create_task(_watch_parent(parent, stop))]
    try:
        await web.TCPSite(runner, host, port, reuse_port=True, ssl_context=tls).start()
        _freeze_startup_objects()
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        await services.close()


def _freeze_startup_objects() -> None:
    """Exempt what start-up built (configuration, models, routes, CA material, caches
    loaded so far) from garbage collection: they live as long as the process, and every
    full collection would walk them again. Collected first, so no garbage is kept.
    bench/ca: a certificate's CPU 421-430 -> 404-408 µs in-process."""
    gc.collect()
    gc.freeze()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop when the main process is gone (re-parented), even if it could not say so."""
    while True:
        await asyncio.sleep(WORKER_PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            stop.set()
            return
