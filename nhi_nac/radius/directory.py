"""What the RADIUS core needs from the rest of the service, and nothing more.

The protocol core reads the inventory only through :class:`AdmissionDirectory`:
synchronous, in-memory lookups (the per-packet path must never wait for a database),
plus sinks for what it produces: quick synchronous enqueues for admissions and
sightings, an awaited store for accounting. The service keeps a
:class:`MemoryDirectory` (or its own implementation) filled from storage and
invalidated by events; tests fill one by hand.

A lookup that raises is a backend failure: the server fails closed
(``on_backend_error``), it never accepts.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from nhi_nac.domain import IdentityKind, IdentityRef, IdentityStatus, OwnerStatus

if TYPE_CHECKING:
    from nhi_nac.radius.decision import AdmissionDecision

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: MemoryDirectory keeps at most this many admissions / accounting records (tests, dev).
MEMORY_DIRECTORY_MAX_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class NasClient:
    """A RADIUS client (switch, AP) as the inventory knows it."""

    name: str
    network: IpNetwork
    secret: bytes
    site: str = ""
    vendor: str = "generic"
    #: Blast-RADIUS: Access-Requests without Message-Authenticator are dropped unless
    #: this is False for the NAS (off by default). EAP and Proxy-State always need it.
    require_message_authenticator: bool = True


@dataclass(frozen=True, slots=True)
class AdmissionIdentity:
    """The slice of an inventory identity that admission decisions read."""

    ref: IdentityRef
    status: IdentityStatus = IdentityStatus.ACTIVE
    owner: str = ""
    owner_status: OwnerStatus = OwnerStatus.ACTIVE
    scope: tuple[tuple[str, str], ...] = ()
    #: Normalized MACs (``aa:bb:cc:dd:ee:ff``) registered for the identity.
    macs: frozenset[str] = frozenset()
    #: May this identity be admitted by MAC-auth-bypass (no credential)?
    allow_mab: bool = False
    #: ``str(ref)``, formatted once: decisions quote it in their reasons.
    text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", str(self.ref))


class AcctStatus(StrEnum):
    """RFC 2866 §5.1 Acct-Status-Type."""

    START = "start"
    STOP = "stop"
    INTERIM = "interim-update"
    ACCOUNTING_ON = "accounting-on"
    ACCOUNTING_OFF = "accounting-off"


@dataclass(frozen=True, slots=True)
class AccountingRecord:
    """One Accounting-Request, decoded (RFC 2866)."""

    status: AcctStatus
    session_id: str
    nas_name: str
    nas_address: str
    received_at: float
    user_name: str | None = None
    mac: str | None = None
    nas_port: int | None = None
    nas_port_id: str | None = None
    identity: IdentityRef | None = None
    vlan: int | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    input_packets: int | None = None
    output_packets: int | None = None
    session_time: int | None = None
    terminate_cause: int | None = None
    delay_time: int | None = None


@dataclass(frozen=True, slots=True)
class UnmanagedSighting:
    """A MAC that asked for admission but belongs to no identity (RFC-less; ours)."""

    mac: str
    nas_name: str
    nas_port: str | None
    seen_at: float


class AdmissionDirectory(Protocol):
    """The inventory as the RADIUS core sees it.

    Lookups are synchronous and must be in-memory; sinks are awaited by the UDP shell
    (the engine itself never awaits). Any exception from a lookup is a backend failure.
    """

    def nas_for(self, address: str) -> NasClient | None:
        """The NAS whose address or CIDR contains ``address`` (longest prefix), or None."""
        ...

    def identity_by_mac(self, mac: str) -> AdmissionIdentity | None:
        """The identity registered with normalized ``mac``, or None."""
        ...

    def identity_by_uri(self, uri: str) -> AdmissionIdentity | None:
        """The identity named by a certificate URI SAN (``spiffe://…``), or None."""
        ...

    def is_revoked(self, serial: int) -> bool:
        """Whether a certificate serial number issued by our CA is revoked."""
        ...

    def vlan_for(self, identity: AdmissionIdentity, nas: NasClient) -> int | None:
        """The VLAN the identity belongs on at this NAS, or None (no segment: reject)."""
        ...

    def record_admission(self, decision: AdmissionDecision) -> None:
        """Queue the decision for storage. Called on the packet path after the reply is
        sent: it must be a quick, non-blocking enqueue."""
        ...

    async def record_accounting(self, record: AccountingRecord) -> None:
        """Store the record; the Accounting-Response is sent only after this returns."""
        ...

    def record_unmanaged(self, sighting: UnmanagedSighting) -> None:
        """Queue an unmanaged sighting (a quick, non-blocking enqueue, as above)."""
        ...


@dataclass
class UnmanagedEntry:
    mac: str
    first_seen: float
    last_seen: float
    nas_name: str
    nas_port: str | None
    count: int = 1


@dataclass
class MemoryDirectory:
    """A plain in-memory :class:`AdmissionDirectory`.

    The service fills it from its database and updates it on events; tests fill it by
    hand. Recorded results are kept in bounded deques (``MEMORY_DIRECTORY_MAX_RECORDS``).
    """

    nas_clients: list[NasClient] = field(default_factory=list)
    identities: list[AdmissionIdentity] = field(default_factory=list)
    #: identity URI SAN → identity ref string ("kind/name") is derived from trust_domain.
    trust_domain: str = "nhi.example"
    revoked_serials: set[int] = field(default_factory=set)
    #: Explicit VLAN per identity ("kind/name"), else the per-kind default, else None.
    vlans: dict[str, int] = field(default_factory=dict)
    default_vlans: dict[IdentityKind, int] = field(default_factory=dict)
    admissions: deque[AdmissionDecision] = field(
        default_factory=lambda: deque(maxlen=MEMORY_DIRECTORY_MAX_RECORDS)
    )
    accounting: deque[AccountingRecord] = field(
        default_factory=lambda: deque(maxlen=MEMORY_DIRECTORY_MAX_RECORDS)
    )
    unmanaged: dict[str, UnmanagedEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._exact: dict[str, NasClient] = {}
        self._networks: list[NasClient] = []
        self._by_mac: dict[str, AdmissionIdentity] = {}
        self._by_uri: dict[str, AdmissionIdentity] = {}
        self.replace_nas_clients(self.nas_clients)
        self.replace_identities(self.identities)

    # -- filling ---------------------------------------------------------------------

    def replace_nas_clients(self, clients: Iterable[NasClient]) -> None:
        self.nas_clients = list(clients)
        exact: dict[str, NasClient] = {}
        networks: list[NasClient] = []
        for nas in self.nas_clients:
            if nas.network.num_addresses == 1:
                exact[str(nas.network.network_address)] = nas
            else:
                networks.append(nas)
        networks.sort(key=lambda n: n.network.prefixlen, reverse=True)
        self._exact, self._networks = exact, networks

    def replace_identities(self, identities: Iterable[AdmissionIdentity]) -> None:
        self.identities = list(identities)
        by_mac: dict[str, AdmissionIdentity] = {}
        by_uri: dict[str, AdmissionIdentity] = {}
        for ident in self.identities:
            for mac in ident.macs:
                by_mac[mac] = ident
            uri = f"spiffe://{self.trust_domain}/{ident.ref.kind.value}/{ident.ref.name}"
            by_uri[uri] = ident
        self._by_mac, self._by_uri = by_mac, by_uri

    def set_vlans(self, vlans: Mapping[str, int]) -> None:
        self.vlans = dict(vlans)

    # -- lookups -------------------------------------------------------------------

    def nas_for(self, address: str) -> NasClient | None:
        nas = self._exact.get(address)
        if nas is not None or not self._networks:
            return nas
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return None
        for candidate in self._networks:
            if ip.version == candidate.network.version and ip in candidate.network:
                return candidate
        return None

    def identity_by_mac(self, mac: str) -> AdmissionIdentity | None:
        return self._by_mac.get(mac)

    def identity_by_uri(self, uri: str) -> AdmissionIdentity | None:
        return self._by_uri.get(uri)

    def is_revoked(self, serial: int) -> bool:
        return serial in self.revoked_serials

    def vlan_for(self, identity: AdmissionIdentity, nas: NasClient) -> int | None:
        vlan = self.vlans.get(str(identity.ref))
        if vlan is None:
            vlan = self.default_vlans.get(identity.ref.kind)
        return vlan

    # -- sinks ---------------------------------------------------------------------

    def record_admission(self, decision: AdmissionDecision) -> None:
        self.admissions.append(decision)

    async def record_accounting(self, record: AccountingRecord) -> None:
        self.accounting.append(record)

    def record_unmanaged(self, sighting: UnmanagedSighting) -> None:
        entry = self.unmanaged.get(sighting.mac)
        if entry is None:
            if len(self.unmanaged) >= MEMORY_DIRECTORY_MAX_RECORDS:
                return
            self.unmanaged[sighting.mac] = UnmanagedEntry(
                sighting.mac,
                sighting.seen_at,
                sighting.seen_at,
                sighting.nas_name,
                sighting.nas_port,
            )
            return
        entry.last_seen = sighting.seen_at
        entry.nas_name = sighting.nas_name
        entry.nas_port = sighting.nas_port
        entry.count += 1


def nas_network(text: str) -> IpNetwork:
    """Parse a NAS address or CIDR ("192.0.2.1", "10.0.0.0/8", "2001:db8::/32")."""
    return ipaddress.ip_network(text, strict=False)
