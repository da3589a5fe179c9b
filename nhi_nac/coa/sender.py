"""The asyncio shell that sends Disconnect-/CoA-Requests to NAS and collects answers.

Plumbing around :mod:`nhi_nac.coa.messages`: each request gets its own UDP socket (so
answers cannot be confused between requests and the NAS sees a distinct source port per
request), is retransmitted byte for byte with exponential back-off (RFC 5080 §2.2.1:
same Identifier, same Request Authenticator, same Event-Timestamp), and ends as one
:class:`~nhi_nac.coa.messages.CoaResult` — ACK, NAK (with Error-Cause), timeout, or a
local send error. A per-NAS token bucket keeps a map change from flooding a switch and a
semaphore bounds the requests in flight.

The timing policy (:func:`retransmit_timeouts`, :class:`TokenBucket`) is pure and takes
``now``; the shell takes the clock, the sleep and the random source as arguments so
tests can drive them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from nhi_nac.coa.limits import CoaLimits
from nhi_nac.coa.messages import (
    CoaAction,
    CoaCode,
    CoaOutcome,
    CoaRequest,
    CoaResponse,
    CoaResult,
    CoaTarget,
    build_request,
    decode_response,
)
from nhi_nac.radius.errors import RadiusProtocolError
from nhi_nac.radius.limits import MAX_PACKET_SIZE

log = structlog.get_logger("nhi_nac.coa")


def retransmit_timeouts(limits: CoaLimits, rand: Callable[[], float]) -> list[float]:
    """How long to wait after each transmission (RFC 5080 §2.2.1, RFC 3315 §14).

    ``1 + max_retransmissions`` values: the first is ``initial_timeout``, each next one
    doubles, capped at ``max_timeout``; each is scaled by ``1 + jitter*(2*rand()-1)``.
    """
    out: list[float] = []
    base = limits.initial_timeout
    for _ in range(limits.max_retransmissions + 1):
        out.append(base * (1 + limits.jitter * (2 * rand() - 1)))
        base = min(base * 2, limits.max_timeout)
    return out


class TokenBucket:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second (sans-I/O)."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def reserve(self, now: float) -> float:
        """Take one token, going into debt if needed; return how long to wait first.

        Reserving (rather than polling) makes waiters line up in call order, each one
        ``1/rate`` after the previous.
        """
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[Any, ...]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) are not an answer: keep retransmitting.
        log.debug("coa.socket_error", error=str(exc))


class CoaSender:
    """Send RFC 5176 requests. One instance per service: it owns the per-NAS buckets.

    ``clock`` is monotonic seconds (rate limit, RTT), ``wall_clock`` UNIX seconds
    (Event-Timestamp), ``sleep`` waits for the rate limit, ``rand`` jitters timeouts.
    """

    def __init__(
        self,
        limits: CoaLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        require_message_authenticator: bool = False,
    ) -> None:
        self.limits = limits or CoaLimits()
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.rand = rand
        self.require_message_authenticator = require_message_authenticator
        self.counters: dict[str, int] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._in_flight = asyncio.Semaphore(self.limits.max_in_flight)
        self._next_id = random.randrange(256)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _identifier(self) -> int:
        ident = self._next_id
        self._next_id = (ident + 1) % 256
        return ident

    def _bucket(self, address: str) -> TokenBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(self.limits.rate_per_nas, self.limits.burst_per_nas, self.clock())
            self._buckets[address] = bucket
            while len(self._buckets) > self.limits.max_tracked_nas:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket

    async def send_many(self, targets: Iterable[CoaTarget]) -> list[CoaResult]:
        """Send to every target concurrently (bounded); results in the targets' order."""
        return list(await asyncio.gather(*(self.send(t) for t in targets)))

    async def send(self, target: CoaTarget, action: CoaAction | None = None) -> CoaResult:
        """Send one request to ``target`` and wait for its outcome.

        Never raises for network conditions or unencodable session values: those are a
        TIMEOUT or ERROR result (an ERROR from encoding has ``attempts == 0`` and
        ``identifier == -1``). ``action`` defaults to ``target.default_action``.
        """
        action = action or target.default_action
        wait = self._bucket(target.address).reserve(self.clock())
        if wait > 0:
            self._count("rate_limited")
            await self.sleep(wait)
        async with self._in_flight:
            try:
                request = build_request(target, self._identifier(), self.wall_clock(), action)
            except ValueError as exc:  # a session value that cannot be encoded
                code = (
                    CoaCode.COA_REQUEST
                    if action is CoaAction.REAUTHENTICATE
                    else CoaCode.DISCONNECT_REQUEST
                )
                self._count("outcome.error")
                log.warning("coa.unencodable", nas=target.nas_name, error=str(exc))
                return CoaResult(target, action, code, CoaOutcome.ERROR, 0, -1, detail=str(exc))
            result = await self._exchange(target, action, request)
        self._count(f"outcome.{result.outcome.value}")
        log.info(
            "coa.result",
            nas=target.nas_name,
            address=target.address,
            code=request.code.name,
            outcome=result.outcome.value,
            error_cause=result.error_cause_name,
            attempts=result.attempts,
        )
        return result

    async def _exchange(
        self, target: CoaTarget, action: CoaAction, request: CoaRequest
    ) -> CoaResult:
        loop = asyncio.get_running_loop()
        peer = ipaddress.ip_address(target.address)
        family = socket.AF_INET6 if peer.version == 6 else socket.AF_INET
        local = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104 - client socket

        def result(outcome: CoaOutcome, attempts: int, **kw: Any) -> CoaResult:
            return CoaResult(
                target, action, request.code, outcome, attempts, request.identifier, **kw
            )

        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _Receiver, local_addr=(local, 0), family=family
            )
        except OSError as exc:
            return result(CoaOutcome.ERROR, 0, detail=f"socket: {exc}")
        started = self.clock()
        attempts = 0
        try:
            for timeout in retransmit_timeouts(self.limits, self.rand):
                try:
                    transport.sendto(request.data, (target.address, target.port))
                except OSError as exc:
                    return result(
                        CoaOutcome.ERROR, attempts, elapsed=self.clock() - started, detail=str(exc)
                    )
                attempts += 1
                if attempts > 1:
                    self._count("retransmissions")
                sent = self.clock()
                response = await self._await_answer(protocol, target, request, peer, timeout)
                if response is not None:
                    now = self.clock()
                    return result(
                        CoaOutcome.ACK if response.acked else CoaOutcome.NAK,
                        attempts,
                        error_cause=response.error_cause,
                        rtt=now - sent,
                        elapsed=now - started,
                        detail=response.error_cause_name or "",
                    )
            return result(
                CoaOutcome.TIMEOUT,
                attempts,
                elapsed=self.clock() - started,
                detail=f"no answer after {attempts} transmissions",
            )
        finally:
            transport.close()

    async def _await_answer(
        self,
        protocol: _Receiver,
        target: CoaTarget,
        request: CoaRequest,
        peer: ipaddress.IPv4Address | ipaddress.IPv6Address,
        wait: float,
    ) -> CoaResponse | None:
        """The first valid answer within ``wait`` seconds; invalid datagrams are
        dropped and counted (a forged or stale answer must not end the wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (remaining := deadline - loop.time()) > 0:
            try:
                data, addr = await asyncio.wait_for(protocol.queue.get(), remaining)
            except TimeoutError:
                return None
            if ipaddress.ip_address(addr[0]) != peer or len(data) > MAX_PACKET_SIZE:
                self._count("drop.foreign_source")
                continue
            try:
                return decode_response(
                    data,
                    request,
                    target.secret,
                    require_message_authenticator=self.require_message_authenticator,
                )
            except RadiusProtocolError as exc:
                self._count(f"drop.{exc.reason}")
                log.warning("coa.bad_answer", nas=target.nas_name, reason=exc.reason)
        return None
