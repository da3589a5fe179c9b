"""The asyncio UDP shell around :class:`~nhi_nac.radius.server.RadiusServer`.

Plumbing only: it owns the sockets (IPv4 and IPv6, auth and accounting; no
SO_REUSEPORT, so a second instance fails to bind instead of silently sharing the
port), feeds datagrams and the clock to the engine, sends what the engine returns, and
awaits the directory's sinks. Accounting-Responses go out only after
``record_accounting`` returned; if it raises, the NAS hears nothing and retransmits.
Admission and unmanaged records are handed over after the reply is sent (the sinks
are quick synchronous enqueues; their failures are logged and counted, never turned
into an Accept).
"""

from __future__ import annotations

import asyncio
import bisect
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from nhi_nac.radius.decision import AdmissionDecision
from nhi_nac.radius.directory import AdmissionDirectory
from nhi_nac.radius.limits import MAX_DATAGRAMS_PER_WAKEUP, MAX_PACKET_SIZE
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
        # The first bucket whose bound is >= seconds; past the last bound: the +Inf bucket.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


@dataclass(frozen=True, slots=True)
class BoundSocket:
    service: Service
    host: str
    port: int


class _Listener:
    """One bound UDP socket, read straight from the event loop's selector.

    Each wakeup reads up to ``MAX_DATAGRAMS_PER_WAKEUP`` datagrams (asyncio's datagram
    transport reads one per loop iteration, paying a selector round per packet), and
    replies go out with one non-blocking ``sendto``: UDP keeps no send queue worth
    having, and a reply the kernel refuses is one the NAS retransmits for.
    """

    def __init__(self, shell: RadiusUdpService, service: Service, sock: socket.socket) -> None:
        self.shell = shell
        self.service = service
        self.sock = sock

    def readable(self) -> None:
        recvfrom, handle, service = self.sock.recvfrom, self.shell.handle, self.service
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                # One octet more than the largest packet, so an oversize one is seen as such.
                data, addr = recvfrom(MAX_PACKET_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error for an earlier reply
                log.debug("radius.socket_error", service=service.value, error=str(exc))
                return
            handle(data, addr, service, self)

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.shell.server.counters["drop.send_buffer_full"] += 1
        except OSError as exc:
            self.shell.server.counters["drop.send_error"] += 1
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
        self._listeners: list[_Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None

    async def start(self, listen: Sequence[str], auth_port: int, acct_port: int) -> None:
        """Bind ``auth_port`` and ``acct_port`` on every address in ``listen``
        (port 0 picks an ephemeral port; see :attr:`bound`)."""
        loop = asyncio.get_running_loop()
        for host in listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            for service, port in ((Service.AUTH, auth_port), (Service.ACCT, acct_port)):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.setblocking(False)
                    sock.bind((host, port))
                except OSError:
                    sock.close()
                    await self.close()
                    raise
                listener = _Listener(self, service, sock)
                loop.add_reader(sock.fileno(), listener.readable)
                self._listeners.append(listener)
                port_bound = sock.getsockname()[1]
                self.bound.append(BoundSocket(service, host, port_bound))
                log.info("radius.listening", service=service.value, host=host, port=port_bound)
        self._expiry = asyncio.create_task(self._expire_loop())

    def port(self, service: Service) -> int:
        return next(b.port for b in self.bound if b.service is service)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def handle(
        self,
        data: bytes,
        addr: tuple[Any, ...],
        service: Service,
        sender: _Listener,
    ) -> None:
        if len(data) > MAX_PACKET_SIZE:
            self.server.counters["drop.oversize"] += 1
            return
        started = time.perf_counter()
        try:
            out = self.server.receive(data, (addr[0], addr[1]), service, self.clock())
        except Exception:  # noqa: BLE001 - a bug must cost one packet, not the server
            self.server.counters["drop.internal_error"] += 1
            log.exception("radius.internal_error", service=service.value)
            return
        for dgram in out.datagrams:
            sender.sendto(dgram.data, addr)
        if out.datagrams:
            self.latency.observe(time.perf_counter() - started)
        if out.decision is not None:
            self._record(out.decision)
        pending = out.accounting
        if pending is not None and not self._spawn(
            "accounting", self._store_accounting(pending, sender, addr)
        ):
            self.server.accounting_failed(pending)

    def _record(self, decision: AdmissionDecision) -> None:
        """Hand the decision (and any unmanaged sighting) to the directory's queue."""
        try:
            self.directory.record_admission(decision)
            if decision.unmanaged is not None:
                self.directory.record_unmanaged(decision.unmanaged)
        except Exception as exc:  # noqa: BLE001 - a sink failure must not kill the server
            self.server.counters["sink_error.admission"] += 1
            log.warning("radius.sink_error", sink="admission", error=repr(exc))

    async def _store_accounting(
        self,
        pending: PendingAccounting,
        sender: _Listener,
        addr: tuple[Any, ...],
    ) -> None:
        try:
            await self.directory.record_accounting(pending.record)
        except Exception as exc:  # noqa: BLE001 - fail closed: no response, NAS retries
            self.server.accounting_failed(pending)
            log.warning("radius.accounting_not_stored", error=repr(exc))
            return
        for dgram in self.server.accounting_stored(pending, self.clock()).datagrams:
            sender.sendto(dgram.data, addr)

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
