"""The error base of the RADIUS package.

As in h11, errors split by whose fault they are:

* :class:`RadiusProtocolError` — the peer sent something malformed or unauthentic.
  Decoders raise only this (and its subclasses); the server answers it by dropping the
  datagram (RADIUS) or by ending the conversation with EAP-Failure (EAP), and counts it
  under :attr:`RadiusProtocolError.reason`.
* :class:`RadiusInternalError` — we broke an invariant or were misconfigured.
"""

from __future__ import annotations

from nhi_nac.errors import InternalError, NhiError


class RadiusError(NhiError):
    """Base of every error raised by :mod:`nhi_nac.radius`."""


class RadiusProtocolError(RadiusError):
    """The peer sent malformed or unauthentic data.

    ``reason`` is a short stable code used for drop/reject counters and audit records.
    """

    status = 400
    title = "RADIUS protocol error"

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class RadiusAuthenticationError(RadiusProtocolError):
    """A Request/Response Authenticator or Message-Authenticator did not verify."""

    def __init__(self, message: str, reason: str = "bad_authenticator") -> None:
        super().__init__(message, reason)


class EapProtocolError(RadiusProtocolError):
    """A malformed or out-of-sequence EAP or EAP-TLS message (RFC 3748, RFC 5216)."""

    def __init__(self, message: str, reason: str = "eap_malformed") -> None:
        super().__init__(message, reason)


class RadiusInternalError(RadiusError, InternalError):
    """We did something wrong: a broken invariant or an unusable configuration."""
