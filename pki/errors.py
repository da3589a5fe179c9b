"""The one error base of the pki package.

``PkiError`` splits, as h11 and certbot's ``acme.errors`` do, into what the peer
did wrong (``PeerError``: a bad CSR, a request beyond policy, a refused
enrollment, a malformed OCSP request) and what we did wrong (``LocalError``: a
CA that is not usable, a key that will not decrypt). Every error carries a
human-readable ``reason`` that the service can put in its answer and its audit
record as is.
"""

from __future__ import annotations


class PkiError(Exception):
    """Base of every error raised by ``pki``; ``reason`` says why in one sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PeerError(PkiError):
    """The requester sent something we refuse; answer it with ``reason``."""


class CsrRejected(PeerError):
    """The CSR itself is unacceptable: bad signature, key type, or requested content."""


class PolicyViolation(PeerError):
    """The request is well formed but beyond what the profile or the CA allows."""


class EnrollmentRefused(PeerError):
    """An enrollment or renewal request failed its proof of who is asking."""


class MalformedOcspRequest(PeerError):
    """An OCSP request that cannot be decoded (RFC 6960 §2.3 ``malformedRequest``)."""


class OcspResponseInvalid(PeerError):
    """An OCSP response a client must not rely on (RFC 6960 §3.2): unsuccessful, about
    another certificate, badly signed, signed by an unauthorised responder, or stale."""


class LocalError(PkiError):
    """We are at fault: configuration, CA material, or a bug; not the peer's doing."""


class CaMaterialInvalid(LocalError):
    """CA certificates or keys that are unusable (import, chain, key mismatch)."""


class KeyStoreError(LocalError):
    """A private key that cannot be loaded: missing passphrase, wrong passphrase, bad PEM."""
