"""The asyncio UDP shell around :class:`~nhi_nac.radius.server.RadiusServer`.

Plumbing only: it owns the sockets (IPv4 and IPv6, auth and accounting; no
SO_REUSEPORT, so a second instance fails to bind instead of silently sharing the
port), feeds datagrams and the clock to the engine, sends what the engine returns, and
awaits the directory's sinks. Accounting-Responses go out only after
``record_accounting`` returned; if it raises, the NAS hears nothing and retransmits.
Admission and unmanaged records are written after the reply is sent (the sink should
be a quick enqueue; its failures are logged and counted, never turned into an Accept).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog

from nhi_nac.radius.directory import AdmissionDirectory
from nhi_nac.radius.limits import MAX_PACKET_SIZE
from nhi_nac.radius.server import PendingAccounting, RadiusServer, Service

log = structlog.get_logger("nhi_nac.radius")

#: How often idle EAP conversations and old duplicate entries are purged (seconds).
EXPIRY_INTERVAL = 1.0
#: Sink writes in flight at most; beyond this new ones are dropped and counted.
MAX_PENDING_SINK_WRITES = 10_000


#: Upper bounds (seconds) of the request-latency histogram buckets.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class LatencyHistogram:
    """Time from a datagram's arrival to its reply being handed to the socket."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds


@dataclass(frozen=True, slots=True)
class BoundSocket:
    service: Service
    host: str
    port: int


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, shell: RadiusUdpService, service: Service) -> None:
        self.shell = shell
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is not None:
            self.shell.handle(data, addr, self.service, self.transport)

    def error_received(self, exc: Exception) -> None:
        log.warning("radius.socket_error", service=self.service.value, error=str(exc))


class RadiusUdpService:
    """Serve a :class:`RadiusServer` on UDP. ``clock`` gives UNIX seconds."""

    def __init__(
        self,
        server: RadiusServer,
        directory: AdmissionDirectory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.directory = directory
        self.clock = clock
        self.bound: list[BoundSocket] = []
        self.latency = LatencyHistogram()
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None

    async def start(self, listen: Sequence[str], auth_port: int, acct_port: int) -> None:
        """Bind ``auth_port`` and ``acct_port`` on every address in ``listen``
        (port 0 picks an ephemeral port; see :attr:`bound`)."""
        loop = asyncio.get_running_loop()
        for host in listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            for service, port in ((Service.AUTH, auth_port), (Service.ACCT, acct_port)):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda service=service: _Endpoint(self, service),  # type: ignore[misc]
                    local_addr=(host, port),
                    family=family,
                )
                self._transports.append(transport)
                sockname = transport.get_extra_info("sockname")
                self.bound.append(BoundSocket(service, host, sockname[1]))
                log.info("radius.listening", service=service.value, host=host, port=sockname[1])
        self._expiry = asyncio.create_task(self._expire_loop())

    def port(self, service: Service) -> int:
        return next(b.port for b in self.bound if b.service is service)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def handle(
        self,
        data: bytes,
        addr: tuple[Any, ...],
        service: Service,
        transport: asyncio.DatagramTransport,
    ) -> None:
        if len(data) > MAX_PACKET_SIZE:
            self.server.counters["drop.oversize"] += 1
            return
        started = time.perf_counter()
        try:
            out = self.server.receive(data, (str(addr[0]), int(addr[1])), service, self.clock())
        except Exception:  # noqa: BLE001 - a bug must cost one packet, not the server
            self.server.counters["drop.internal_error"] += 1
            log.exception("radius.internal_error", service=service.value)
            return
        for dgram in out.datagrams:
            transport.sendto(dgram.data, addr)
        if out.datagrams:
            self.latency.observe(time.perf_counter() - started)
        if out.decision is not None:
            self._spawn("admission", self.directory.record_admission(out.decision))
            if out.decision.unmanaged is not None:
                self._spawn("unmanaged", self.directory.record_unmanaged(out.decision.unmanaged))
        pending = out.accounting
        if pending is not None and not self._spawn(
            "accounting", self._store_accounting(pending, transport, addr)
        ):
            self.server.accounting_failed(pending)

    async def _store_accounting(
        self,
        pending: PendingAccounting,
        transport: asyncio.DatagramTransport,
        addr: tuple[Any, ...],
    ) -> None:
        try:
            await self.directory.record_accounting(pending.record)
        except Exception as exc:  # noqa: BLE001 - fail closed: no response, NAS retries
            self.server.accounting_failed(pending)
            log.warning("radius.accounting_not_stored", error=repr(exc))
            return
        for dgram in self.server.accounting_stored(pending, self.clock()).datagrams:
            transport.sendto(dgram.data, addr)

    def _spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> bool:
        if len(self._tasks) >= MAX_PENDING_SINK_WRITES:
            coro.close()
            self.server.counters[f"sink_overflow.{what}"] += 1
            return False
        task = asyncio.create_task(self._guard(what, coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _guard(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - a sink failure must not kill the server
            self.server.counters[f"sink_error.{what}"] += 1
            log.warning("radius.sink_error", sink=what, error=repr(exc))

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            self.server.expire(self.clock())
