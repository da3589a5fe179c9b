"""Every timer, bucket and bound of the CoA sender has a named limit, collected here."""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 5176 §1: Dynamic Authorization Servers (the NAS) listen on UDP 3799.
COA_PORT = 3799
#: First retransmission timeout (seconds). RFC 5080 §2.2.1 borrows the RFC 3315 back-off;
#: a NAS on the same campus answers in milliseconds, so one second is generous.
DEFAULT_INITIAL_TIMEOUT = 1.0
#: Retransmissions after the first transmission before the request is given up.
DEFAULT_MAX_RETRANSMISSIONS = 3
#: Upper bound of one retransmission timeout after doubling (RFC 5080 §2.2.1 MRT).
DEFAULT_MAX_TIMEOUT = 16.0
#: RFC 5080 §2.2.1 / RFC 3315 §14: each timeout is randomised by ±10 %.
DEFAULT_JITTER = 0.1
#: Requests per second sent to one NAS, sustained (token bucket rate).
DEFAULT_RATE_PER_NAS = 20.0
#: Requests that may go to one NAS back to back before the rate applies (bucket size).
DEFAULT_BURST_PER_NAS = 20
#: Requests awaiting an answer at once, all NAS together (sockets open at once).
DEFAULT_MAX_IN_FLIGHT = 64
#: Distinct NAS with a token bucket; beyond this the least recently used is forgotten.
MAX_TRACKED_NAS = 65_536


@dataclass(frozen=True, slots=True)
class CoaLimits:
    """Tunable limits of :class:`~nhi_nac.coa.sender.CoaSender`."""

    initial_timeout: float = DEFAULT_INITIAL_TIMEOUT
    max_retransmissions: int = DEFAULT_MAX_RETRANSMISSIONS
    max_timeout: float = DEFAULT_MAX_TIMEOUT
    jitter: float = DEFAULT_JITTER
    rate_per_nas: float = DEFAULT_RATE_PER_NAS
    burst_per_nas: int = DEFAULT_BURST_PER_NAS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_tracked_nas: int = MAX_TRACKED_NAS

    def __post_init__(self) -> None:
        if self.initial_timeout <= 0 or self.max_timeout < self.initial_timeout:
            raise ValueError("need 0 < initial_timeout <= max_timeout")
        if self.max_retransmissions < 0:
            raise ValueError("max_retransmissions must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.rate_per_nas <= 0 or self.burst_per_nas < 1:
            raise ValueError("rate_per_nas must be > 0 and burst_per_nas >= 1")
        if self.max_in_flight < 1 or self.max_tracked_nas < 1:
            raise ValueError("max_in_flight and max_tracked_nas must be >= 1")
