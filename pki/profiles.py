"""Certificate profiles: what the CA puts in a leaf, whatever the CSR asks for.

A profile fixes the extended key usages, the default and maximum validity,
which identity kinds may hold it, and whether DNS names may appear beside the
SPIFFE ID. The CA enforces them; the client only chooses among them, and a
request beyond a profile's maximum is refused, never shortened (step-ca does
the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from types import MappingProxyType

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pki.errors import PolicyViolation


@dataclass(frozen=True, slots=True)
class Profile:
    """One issuance profile.

    ``ocsp_no_check`` adds id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1), for the
    delegated OCSP responder whose own status is not checked by OCSP.
    """

    name: str
    extended_key_usages: tuple[ObjectIdentifier, ...]
    default_validity: timedelta
    max_validity: timedelta
    allowed_kinds: frozenset[str]
    allows_dns_names: bool
    ocsp_no_check: bool = False

    def __post_init__(self) -> None:
        if not timedelta(0) < self.default_validity <= self.max_validity:
            raise ValueError(f"profile {self.name}: default validity must be in (0, max]")

    def validity_for(self, requested: timedelta | None) -> timedelta:
        """The validity to issue: ``requested`` if within policy, the default if None."""
        if requested is None:
            return self.default_validity
        if requested <= timedelta(0):
            raise PolicyViolation(f"requested validity {requested} is not positive")
        if requested > self.max_validity:
            raise PolicyViolation(
                f"requested validity {requested} exceeds the {self.name} profile's "
                f"maximum of {self.max_validity}"
            )
        return requested


_CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
_SERVER = ExtendedKeyUsageOID.SERVER_AUTH

DEVICE = Profile(
    name="device",
    extended_key_usages=(_CLIENT,),
    default_validity=timedelta(days=90),
    # The CA/Browser Forum's 397 days, so a device certificate renews at least yearly.
    max_validity=timedelta(days=397),
    allowed_kinds=frozenset({"device"}),
    allows_dns_names=False,
)
WORKLOAD = Profile(
    name="workload",
    extended_key_usages=(_CLIENT, _SERVER),
    default_validity=timedelta(hours=24),
    max_validity=timedelta(days=7),
    allowed_kinds=frozenset({"workload", "service_account", "rpa_bot"}),
    allows_dns_names=True,
)
AI_AGENT = Profile(
    name="ai_agent",
    extended_key_usages=(_CLIENT,),
    default_validity=timedelta(hours=1),
    max_validity=timedelta(hours=24),
    allowed_kinds=frozenset({"ai_agent"}),
    allows_dns_names=False,
)
RADIUS_SERVER = Profile(
    name="radius-server",
    extended_key_usages=(_SERVER,),
    default_validity=timedelta(days=90),
    max_validity=timedelta(days=397),
    allowed_kinds=frozenset({"service"}),
    allows_dns_names=True,
)
#: The service's HTTPS certificate: the RADIUS server's policy under its own name.
API_SERVER = replace(RADIUS_SERVER, name="api-server")
OCSP_RESPONDER = Profile(
    name="ocsp-responder",
    extended_key_usages=(ExtendedKeyUsageOID.OCSP_SIGNING,),
    # With ocsp-nocheck the responder cannot be revoked in practice: keep it short.
    default_validity=timedelta(days=7),
    max_validity=timedelta(days=30),
    allowed_kinds=frozenset({"service"}),
    allows_dns_names=False,
    ocsp_no_check=True,
)

PROFILES: Mapping[str, Profile] = MappingProxyType(
    {p.name: p for p in (DEVICE, WORKLOAD, AI_AGENT, RADIUS_SERVER, API_SERVER,
                         OCSP_RESPONDER)}
)


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name raises ``PolicyViolation``."""
    try:
        return PROFILES[name]
    except KeyError:
        raise PolicyViolation(
            f"unknown certificate profile {name!r} (known: {', '.join(PROFILES)})"
        ) from None
