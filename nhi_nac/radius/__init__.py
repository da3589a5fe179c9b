"""RADIUS admission core: 802.1X EAP-TLS and MAC-auth-bypass, accounting, Status-Server.

Sans-I/O protocol logic (:mod:`codec`, :mod:`eap`, :mod:`eaptls`, :mod:`decision`,
:mod:`server`) with one thin asyncio shell (:mod:`udp`). The rest of the service is
reached only through :class:`~nhi_nac.radius.directory.AdmissionDirectory`.

Public surface::

    from nhi_nac.radius import (
        RadiusServer, RadiusUdpService, Service, AdmissionPolicy, RadiusLimits,
        EapTlsServerConfig, build_server_context, AdmissionDirectory, MemoryDirectory,
        NasClient, AdmissionIdentity, AdmissionDecision, AccountingRecord, ...
    )
"""

from nhi_nac.radius.decision import (
    AdmissionDecision,
    AdmissionPolicy,
    AuthMethod,
    BackendPolicy,
    Verdict,
)
from nhi_nac.radius.directory import (
    AccountingRecord,
    AcctStatus,
    AdmissionDirectory,
    AdmissionIdentity,
    MemoryDirectory,
    NasClient,
    UnmanagedSighting,
    nas_network,
)
from nhi_nac.radius.eaptls import EapTlsServerConfig, TlsVersion, build_server_context
from nhi_nac.radius.errors import (
    EapProtocolError,
    RadiusAuthenticationError,
    RadiusError,
    RadiusInternalError,
    RadiusProtocolError,
)
from nhi_nac.radius.limits import RadiusLimits
from nhi_nac.radius.server import RadiusServer, Service
from nhi_nac.radius.udp import RadiusUdpService

__all__ = [
    "AccountingRecord",
    "AcctStatus",
    "AdmissionDecision",
    "AdmissionDirectory",
    "AdmissionIdentity",
    "AdmissionPolicy",
    "AuthMethod",
    "BackendPolicy",
    "EapProtocolError",
    "EapTlsServerConfig",
    "MemoryDirectory",
    "NasClient",
    "RadiusAuthenticationError",
    "RadiusError",
    "RadiusInternalError",
    "RadiusLimits",
    "RadiusProtocolError",
    "RadiusServer",
    "RadiusUdpService",
    "Service",
    "TlsVersion",
    "UnmanagedSighting",
    "Verdict",
    "build_server_context",
    "nas_network",
]
