"""Every buffer and table of the RADIUS core has a named limit, collected here."""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 2865 §3: a RADIUS packet is at most 4096 octets.
MAX_PACKET_SIZE = 4096
#: RFC 2865 §3: and at least the 20-octet header.
MIN_PACKET_SIZE = 20
#: RFC 2865 §5: one attribute carries at most 253 octets of value.
MAX_ATTRIBUTE_VALUE = 253
#: RFC 2865 §5.2: User-Password is 16..128 octets of ciphertext.
MAX_USER_PASSWORD = 128
#: RFC 3748 §4: EAP length field; RADIUS bounds it further by MAX_PACKET_SIZE.
MAX_EAP_PACKET_SIZE = 4096 - 20
#: RFC 5216 §2.1.5 fragments reassemble to one TLS flight; we refuse anything larger
#: than 64 KiB (FreeRADIUS FR_TLS_MAX_RECORD_SIZE has the same role).
MAX_EAP_TLS_MESSAGE_SIZE = 64 * 1024
#: Our EAP-TLS fragment size: TLS bytes per EAP-Request (hostapd 1398, FreeRADIUS 1024).
DEFAULT_EAP_TLS_FRAGMENT_SIZE = 1024
#: Smallest fragment size we allow to be configured.
MIN_EAP_TLS_FRAGMENT_SIZE = 64
#: Largest fragment size that still fits one RADIUS packet with its other attributes.
MAX_EAP_TLS_FRAGMENT_SIZE = 3000
#: An EAP conversation without a round trip for this long is forgotten (seconds).
DEFAULT_EAP_SESSION_TIMEOUT = 30.0
#: Upper bound on EAP round trips for one authentication (a TLS handshake needs ~10
#: with small fragments; a peer that never finishes is cut off here).
MAX_EAP_ROUNDS = 100
#: Encoded VLAN reply attributes kept, one entry per VLAN (IEEE 802.1Q: 4094 VLANs).
VLAN_REPLY_CACHE_SIZE = 4094
#: Calling-Station-Id / User-Name spellings whose normalized MAC is remembered; the
#: memo is emptied when full (a NAS sending random names only costs us the parsing).
MAC_MEMO_SIZE = 65_536
#: Client certificates (and their issuers) kept parsed, by DER encoding.
PARSED_CERTIFICATE_CACHE_SIZE = 16_384
#: Datagrams read from one socket per event-loop wakeup before others get a turn.
MAX_DATAGRAMS_PER_WAKEUP = 64


@dataclass(frozen=True, slots=True)
class RadiusLimits:
    """Tunable table limits of :class:`~nhi_nac.radius.server.RadiusServer`."""

    #: EAP conversations in flight, all NAS together.
    max_eap_sessions: int = 16_384
    #: EAP conversations in flight for one NAS (a misbehaving switch cannot starve the rest).
    max_eap_sessions_per_nas: int = 4_096
    #: Idle time after which an EAP conversation is dropped (seconds).
    eap_session_timeout: float = DEFAULT_EAP_SESSION_TIMEOUT
    #: RFC 5080 §2.2.2 duplicate cache: entries kept at most this long (seconds).
    duplicate_cache_age: float = 10.0
    #: ... and at most this many entries (oldest evicted first).
    duplicate_cache_size: int = 65_536
    #: Remembered (NAS, MAC) → identity/VLAN of recent accepts, for accounting records.
    admitted_cache_size: int = 65_536
    #: EAP-TLS fragment size we send (TLS bytes per EAP-Request).
    eap_tls_fragment_size: int = DEFAULT_EAP_TLS_FRAGMENT_SIZE
