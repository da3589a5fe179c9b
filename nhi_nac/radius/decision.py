"""The admission decision: request facts + directory lookups → :class:`AdmissionDecision`.

Pure functions (the directory lookups are synchronous, in-memory reads). Every check
that ran is listed in ``reasons`` in order; a rejection names the failing check in
``failure`` (a short stable code, used for counters) and its sentence in ``reasons``.

EAP-TLS (after OpenSSL has checked the chain to our CA): clientAuth EKU, leaf not a CA,
validity of every certificate against ``now``, not revoked, exactly one URI SAN, the
identity it names exists, is active, and its owner is active, and it has a segment.

MAB: the MAC in User-Name (any common notation), consistent with Calling-Station-Id,
PAP password equal to the MAC, a device identity registered with that MAC and allowed
MAB, active, owner active, with a segment. An unknown MAC gets the fallback (a
quarantine VLAN, or reject) and is reported as an unmanaged sighting.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509

from nhi_nac.domain import (
    IdentityKind,
    IdentityRef,
    IdentityStatus,
    OwnerStatus,
    try_normalize_mac,
)
from nhi_nac.radius.directory import (
    AdmissionDirectory,
    AdmissionIdentity,
    NasClient,
    UnmanagedSighting,
)
from nhi_nac.radius.eaptls import has_client_auth_eku
from nhi_nac.radius.macs import station_mac

#: Longest Session-Timeout we ever send (seconds); certificate expiry may shorten it.
DEFAULT_MAX_SESSION_TIMEOUT = 86_400
#: Shortest useful Session-Timeout; a certificate closer to expiry is rejected instead.
MIN_SESSION_TIMEOUT = 60


class Verdict(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    #: Say nothing (backend failure with on_backend_error="drop": the NAS falls back to
    #: its critical VLAN).
    DROP = "drop"


class AuthMethod(StrEnum):
    EAP_TLS = "eap-tls"
    MAB = "mab"
    NONE = "none"


class BackendPolicy(StrEnum):
    REJECT = "reject"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Configuration of the decision (from the ``[radius]`` config section)."""

    #: VLAN for an unknown MAC (quarantine), or None to reject it.
    unknown_mac_vlan: int | None = None
    max_session_timeout: int = DEFAULT_MAX_SESSION_TIMEOUT
    #: Session-Timeout for MAB accepts (no credential expiry to bound it).
    mab_session_timeout: int | None = 3_600
    on_backend_error: BackendPolicy = BackendPolicy.REJECT
    #: Reply-Message of every Access-Reject: fixed text, so nothing leaks to the port.
    reject_message: str = "Access denied"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the Access-Request said, independent of method."""

    nas: NasClient
    nas_address: str
    received_at: float
    user_name: str | None = None
    calling_station_id: str | None = None
    nas_port: int | None = None
    nas_port_id: str | None = None


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """One admission: who asked, who it is, the checks, the segment. Logged and audited."""

    verdict: Verdict
    method: AuthMethod
    reasons: tuple[str, ...]
    nas_name: str
    nas_address: str
    decided_at: float
    failure: str | None = None
    identity: IdentityRef | None = None
    vlan: int | None = None
    session_timeout: int | None = None
    mac: str | None = None
    user_name: str | None = None
    nas_port: str | None = None
    certificate_serial: int | None = None
    unmanaged: UnmanagedSighting | None = field(default=None, compare=False)

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


def _port(facts: RequestFacts) -> str | None:
    if facts.nas_port_id is not None:
        return facts.nas_port_id
    return None if facts.nas_port is None else str(facts.nas_port)


def _decision(
    facts: RequestFacts,
    method: AuthMethod,
    reasons: list[str],
    failure: str | None,
    *,
    verdict: Verdict | None = None,
    identity: IdentityRef | None = None,
    vlan: int | None = None,
    session_timeout: int | None = None,
    mac: str | None = None,
    certificate_serial: int | None = None,
    unmanaged: UnmanagedSighting | None = None,
) -> AdmissionDecision:
    if verdict is None:
        verdict = Verdict.ACCEPT if failure is None else Verdict.REJECT
    return AdmissionDecision(
        verdict=verdict,
        method=method,
        reasons=tuple(reasons),
        failure=failure,
        nas_name=facts.nas.name,
        nas_address=facts.nas_address,
        decided_at=facts.received_at,
        user_name=facts.user_name,
        nas_port=_port(facts),
        identity=identity,
        vlan=vlan,
        session_timeout=session_timeout,
        mac=mac,
        certificate_serial=certificate_serial,
        unmanaged=unmanaged,
    )


def reject(
    facts: RequestFacts, method: AuthMethod, failure: str, sentence: str
) -> AdmissionDecision:
    """A rejection for a reason found outside the checks below (protocol, TLS, backend)."""
    return _decision(facts, method, [sentence], failure)


def backend_failure(
    facts: RequestFacts, method: AuthMethod, policy: AdmissionPolicy, error: BaseException
) -> AdmissionDecision:
    """Fail closed: reject or drop per ``on_backend_error``; never accept."""
    verdict = Verdict.DROP if policy.on_backend_error is BackendPolicy.DROP else Verdict.REJECT
    return _decision(
        facts, method, [f"backend error: {type(error).__name__}"], "backend_error", verdict=verdict
    )


# -- identity checks shared by both methods -------------------------------------------


def _check_identity(identity: AdmissionIdentity, reasons: list[str]) -> str | None:
    if identity.status is not IdentityStatus.ACTIVE:
        reasons.append(f"identity {identity.text} is {identity.status.value}")
        return f"identity_{identity.status.value}"
    reasons.append(f"identity {identity.text} is active")
    if identity.owner_status is not OwnerStatus.ACTIVE:
        reasons.append(f"owner {identity.owner or '?'} is {identity.owner_status.value}")
        return f"owner_{identity.owner_status.value}"
    reasons.append(f"owner {identity.owner or '?'} is active")
    return None


def _segment(
    identity: AdmissionIdentity, nas: NasClient, directory: AdmissionDirectory, reasons: list[str]
) -> tuple[int | None, str | None]:
    vlan = directory.vlan_for(identity, nas)
    if vlan is None or not 1 <= vlan <= 4094:
        reasons.append(f"no segment for {identity.text} at NAS {nas.name}")
        return None, "no_segment"
    reasons.append(f"segment VLAN {vlan}")
    return vlan, None


# -- EAP-TLS -------------------------------------------------------------------------


def _ts(when: dt.datetime) -> float:
    return when.timestamp()


def check_certificate(
    leaf: x509.Certificate,
    issuers: tuple[x509.Certificate, ...],
    facts: RequestFacts,
    directory: AdmissionDirectory,
    policy: AdmissionPolicy,
) -> AdmissionDecision:
    """Decide on a client certificate whose chain OpenSSL has verified to our CA."""
    now = facts.received_at
    reasons = ["certificate chains to the CA"]
    method = AuthMethod.EAP_TLS
    serial = leaf.serial_number

    def fail(code: str, sentence: str, identity: IdentityRef | None = None) -> AdmissionDecision:
        reasons.append(sentence)
        if identity is None:
            # Recorded, not trusted: a revoked or expired certificate still says whose
            # it was, which is what an operator looks for in the admissions.
            identity = _named_identity(leaf, directory)
        return _decision(facts, method, reasons, code, certificate_serial=serial, identity=identity)

    if not has_client_auth_eku(leaf):
        return fail("no_client_auth_eku", "certificate lacks the clientAuth EKU")
    reasons.append("clientAuth EKU present")
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            return fail("leaf_is_ca", "leaf certificate is a CA")
    except x509.ExtensionNotFound:
        pass
    for cert in (leaf, *issuers):
        which = "certificate" if cert is leaf else f"issuer {cert.subject.rfc4514_string()}"
        if now < _ts(cert.not_valid_before_utc):
            return fail("not_yet_valid", f"{which} is not valid yet")
        if now > _ts(cert.not_valid_after_utc):
            return fail("expired", f"{which} has expired")
    reasons.append("inside validity")
    if directory.is_revoked(serial):
        return fail("revoked", f"certificate {serial:x} is revoked")
    reasons.append("not revoked")
    uris = _uri_sans(leaf)
    if len(uris) != 1:
        return fail("uri_san_count", f"certificate has {len(uris)} URI SANs, not exactly one")
    uri = uris[0]
    identity = directory.identity_by_uri(uri)
    if identity is None:
        return fail("unknown_identity", f"no identity for {uri}")
    reasons.append(f"URI SAN {uri} names {identity.text}")
    failure = _check_identity(identity, reasons)
    if failure is not None:
        return _decision(
            facts, method, reasons, failure, identity=identity.ref, certificate_serial=serial
        )
    vlan, failure = _segment(identity, facts.nas, directory, reasons)
    if failure is not None:
        return _decision(
            facts, method, reasons, failure, identity=identity.ref, certificate_serial=serial
        )
    remaining = int(_ts(leaf.not_valid_after_utc) - now)
    if remaining < MIN_SESSION_TIMEOUT:
        return fail("expires_soon", "certificate expires within a minute", identity=identity.ref)
    timeout = min(policy.max_session_timeout, remaining)
    return _decision(
        facts,
        method,
        reasons,
        None,
        identity=identity.ref,
        vlan=vlan,
        session_timeout=timeout,
        certificate_serial=serial,
    )


def _uri_sans(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _named_identity(leaf: x509.Certificate, directory: AdmissionDirectory) -> IdentityRef | None:
    """The identity a rejected certificate names by its single URI SAN, if any."""
    try:
        uris = _uri_sans(leaf)
    except ValueError:  # a malformed extension: the record names no one
        return None
    found = directory.identity_by_uri(uris[0]) if len(uris) == 1 else None
    return found.ref if found is not None else None


# -- MAB -----------------------------------------------------------------------------


def decide_mab(
    facts: RequestFacts,
    mac: str,
    password: bytes | None,
    directory: AdmissionDirectory,
    policy: AdmissionPolicy,
) -> AdmissionDecision:
    """Decide a MAC-auth-bypass request whose User-Name normalized to ``mac``."""
    method = AuthMethod.MAB
    reasons = [f"MAC {mac} from User-Name"]
    if facts.calling_station_id is not None:
        station = station_mac(facts.calling_station_id)
        if station is not None and station != mac:
            reasons.append(f"Calling-Station-Id {station} differs from User-Name")
            return _decision(facts, method, reasons, "mac_mismatch", mac=mac)
    if password is None:
        reasons.append("no PAP password")
        return _decision(facts, method, reasons, "no_password", mac=mac)
    text = password.decode("latin-1")
    # Usually the password is the User-Name verbatim; otherwise parse it (not memoized:
    # a password is never kept in a table).
    if text != facts.user_name and try_normalize_mac(text) != mac:
        reasons.append("PAP password is not the MAC")
        return _decision(facts, method, reasons, "bad_password", mac=mac)
    reasons.append("PAP password is the MAC")
    identity = directory.identity_by_mac(mac)
    if identity is None:
        return _unknown_mac(facts, mac, policy, reasons)
    reasons.append(f"MAC registered to {identity.text}")
    if identity.ref.kind is not IdentityKind.DEVICE:
        reasons.append(f"{identity.text} is not a device")
        return _decision(facts, method, reasons, "not_a_device", mac=mac, identity=identity.ref)
    if not identity.allow_mab:
        reasons.append(f"{identity.text} is not allowed MAB")
        return _decision(facts, method, reasons, "mab_not_allowed", mac=mac, identity=identity.ref)
    failure = _check_identity(identity, reasons)
    if failure is None:
        vlan, failure = _segment(identity, facts.nas, directory, reasons)
    else:
        vlan = None
    if failure is not None:
        return _decision(facts, method, reasons, failure, mac=mac, identity=identity.ref)
    return _decision(
        facts,
        method,
        reasons,
        None,
        mac=mac,
        identity=identity.ref,
        vlan=vlan,
        session_timeout=policy.mab_session_timeout,
    )


def _unknown_mac(
    facts: RequestFacts, mac: str, policy: AdmissionPolicy, reasons: list[str]
) -> AdmissionDecision:
    sighting = UnmanagedSighting(mac, facts.nas.name, _port(facts), facts.received_at)
    reasons.append(f"MAC {mac} belongs to no identity (unmanaged)")
    if policy.unknown_mac_vlan is None:
        reasons.append("fallback: reject")
        return _decision(facts, AuthMethod.MAB, reasons, "unknown_mac", mac=mac, unmanaged=sighting)
    reasons.append(f"fallback: quarantine VLAN {policy.unknown_mac_vlan}")
    return _decision(
        facts,
        AuthMethod.MAB,
        reasons,
        None,
        mac=mac,
        vlan=policy.unknown_mac_vlan,
        session_timeout=policy.mab_session_timeout,
        unmanaged=sighting,
    )
