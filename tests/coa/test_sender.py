"""The asyncio CoA sender against UDP peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from nhi_nac.coa import (
    CoaAction,
    CoaLimits,
    CoaOutcome,
    CoaSender,
    CoaTarget,
    SessionIds,
    TokenBucket,
    retransmit_timeouts,
)
from nhi_nac.coa.messages import ATTR_ERROR_CAUSE, CoaCode
from nhi_nac.radius.codec import decode_packet, encode_response
from tests.coa.silent_nas import silent_nas

SECRET = b"coa-secret"
FAST = CoaLimits(initial_timeout=0.05, max_retransmissions=3, max_timeout=1.0, jitter=0.0)


def target(port: int, session: str = "S1", vendor: str = "generic") -> CoaTarget:
    return CoaTarget(
        "nas1", "127.0.0.1", SECRET, SessionIds(acct_session_id=session), vendor=vendor, port=port
    )


Answer = Callable[[bytes], "list[bytes]"]


@dataclass
class Responder(asyncio.DatagramProtocol):
    """A tiny Dynamic Authorization Server: known sessions ACK, unknown ones NAK 503."""

    sessions: set[str] = field(default_factory=lambda: {"S1"})
    delay: float = 0.0
    received: list[tuple[float, bytes]] = field(default_factory=list)
    outstanding: int = 0
    max_outstanding: int = 0
    transport: Any = None
    extra: list[bytes] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append((time.monotonic(), data))
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        asyncio.get_running_loop().call_later(self.delay, self._answer, data, addr)

    def _answer(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.outstanding -= 1
        pkt = decode_packet(data)
        session = (pkt.get(44) or b"").decode()
        ack_code = 41 if pkt.code == 40 else 44
        for junk in self.extra:  # garbage first: must be dropped, not end the wait
            self.transport.sendto(junk, addr)
        if session in self.sessions:
            reply = encode_response(ack_code, pkt.identifier, pkt.authenticator, [], SECRET)
        else:
            cause = [(ATTR_ERROR_CAUSE, struct.pack("!I", 503))]
            reply = encode_response(ack_code + 1, pkt.identifier, pkt.authenticator, cause, SECRET)
        self.transport.sendto(reply, addr)


@pytest.fixture
async def responder() -> AsyncIterator[tuple[Responder, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    try:
        yield proto, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_ack_and_nak(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.extra = [b"garbage", b"\x29" + bytes(19)]
    sender = CoaSender(FAST)
    ack, nak = await sender.send_many([target(port, "S1"), target(port, "GONE")])
    assert ack.outcome is CoaOutcome.ACK and ack.attempts == 1 and ack.error_cause is None
    assert ack.code is CoaCode.DISCONNECT_REQUEST and ack.action is CoaAction.DISCONNECT
    assert ack.rtt is not None and 0 <= ack.rtt < 1
    assert nak.outcome is CoaOutcome.NAK and nak.error_cause == 503
    assert nak.error_cause_name == "Session-Context-Not-Found"
    assert sender.counters["outcome.ack"] == 1 and sender.counters["outcome.nak"] == 1
    assert sender.counters["drop.short"] + sender.counters["drop.bad_length"] >= 2


async def test_cisco_reauthenticate_acked(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    result = await CoaSender(FAST).send(target(port, vendor="cisco"))
    assert result.outcome is CoaOutcome.ACK and result.code is CoaCode.COA_REQUEST
    assert decode_packet(proto.received[0][1]).code == 43


async def test_wrong_secret_answer_is_ignored_until_timeout(
    responder: tuple[Responder, int],
) -> None:
    _, port = responder
    bad = CoaTarget("nas1", "127.0.0.1", b"not-the-secret", SessionIds("S1"), port=port)
    result = await CoaSender(FAST).send(bad)
    assert result.outcome is CoaOutcome.TIMEOUT and result.attempts == 4


async def test_unanswered_request_is_retransmitted_identically_with_backoff() -> None:
    """A NAS address where something receives but never answers: every transmission is
    captured and must be the same bytes (RFC 5080 §2.2.1), at doubling intervals."""
    async with silent_nas() as (port, captured):
        result = await CoaSender(FAST).send(target(port))
        await asyncio.sleep(0.02)
    assert result.outcome is CoaOutcome.TIMEOUT
    assert result.attempts == 4 and result.rtt is None
    assert len(captured) == 4
    assert len({data for _, data in captured}) == 1  # byte-identical retransmissions
    gaps = [b[0] - a[0] for a, b in zip(captured, captured[1:], strict=False)]
    for gap, expected in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert expected * 0.8 <= gap <= expected + 0.1, gaps
    assert result.elapsed >= 0.05 + 0.1 + 0.2 + 0.4 - 0.01


async def test_closed_port_times_out() -> None:
    """Nothing listening at all: ICMP port-unreachable is not an answer."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sender = CoaSender(FAST)
    result = await sender.send(target(port))
    assert result.outcome is CoaOutcome.TIMEOUT and result.attempts == 4
    assert sender.counters["retransmissions"] == 3


async def test_concurrency_is_bounded(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.delay = 0.03
    proto.sessions = {f"S{i}" for i in range(8)}
    limits = CoaLimits(initial_timeout=1.0, max_in_flight=2, jitter=0.0)
    results = await CoaSender(limits).send_many([target(port, f"S{i}") for i in range(8)])
    assert [r.outcome for r in results] == [CoaOutcome.ACK] * 8
    assert proto.max_outstanding == 2


async def test_rate_limit_per_nas(responder: tuple[Responder, int]) -> None:
    proto, port = responder
    proto.sessions = {f"S{i}" for i in range(6)}
    limits = CoaLimits(initial_timeout=1.0, rate_per_nas=50.0, burst_per_nas=2, jitter=0.0)
    sender = CoaSender(limits)
    started = time.monotonic()
    results = await sender.send_many([target(port, f"S{i}") for i in range(6)])
    assert all(r.outcome is CoaOutcome.ACK for r in results)
    arrivals = [t - started for t, _ in proto.received]
    # two at once (the burst), then one per 20 ms
    assert arrivals[-1] >= 4 / 50 - 0.005, arrivals
    assert sender.counters["rate_limited"] == 4


def test_token_bucket_reserves_in_order() -> None:
    bucket = TokenBucket(rate=20.0, burst=2, now=100.0)
    waits = [bucket.reserve(100.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.05, 0.10, 0.15])
    # after a quiet second the bucket is full again, never above its size
    assert bucket.reserve(102.0) == 0.0 and bucket.tokens == pytest.approx(1.0)


def test_retransmit_schedule() -> None:
    limits = CoaLimits(initial_timeout=1.0, max_retransmissions=5, max_timeout=4.0, jitter=0.1)
    assert retransmit_timeouts(limits, lambda: 0.5) == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    low = retransmit_timeouts(limits, lambda: 0.0)
    assert low[0] == pytest.approx(0.9) and low[2] == pytest.approx(3.6)
    assert len(retransmit_timeouts(CoaLimits(), lambda: 0.5)) == 4  # 1 + 3 retransmissions
    with pytest.raises(ValueError):
        CoaLimits(initial_timeout=0)


async def test_fake_clock_and_sleep_drive_the_rate_limit(
    responder: tuple[Responder, int],
) -> None:
    _, port = responder
    now = [1000.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limits = CoaLimits(initial_timeout=1.0, rate_per_nas=10.0, burst_per_nas=1, jitter=0.0)
    sender = CoaSender(limits, clock=lambda: now[0], sleep=fake_sleep, wall_clock=lambda: 5.0)
    for _ in range(3):
        assert (await sender.send(target(port))).outcome is CoaOutcome.ACK
    assert slept == pytest.approx([0.1, 0.1])


async def test_unencodable_session_is_an_error_result() -> None:
    t = CoaTarget("nas1", "127.0.0.1", SECRET, SessionIds(user_name="u" * 300), port=9)
    result = await CoaSender(FAST).send(t)
    assert result.outcome is CoaOutcome.ERROR and result.attempts == 0
    assert "253" in result.detail
    reauth = await CoaSender(FAST).send(target(9), CoaAction.REAUTHENTICATE)
    assert reauth.outcome is CoaOutcome.ERROR and reauth.code is CoaCode.COA_REQUEST
