"""The RADIUS engine: datagrams in, datagrams and records out. No I/O, no clock.

Theory of operation
-------------------
:meth:`RadiusServer.receive` takes one datagram, its source and ``now`` (UNIX
seconds) and returns a :class:`ServerOutput`. Each datagram goes through, in order::

    decode ─ code fits the port? ─ NAS known? ─ authenticators valid? ─ MA policy
      ─ Status-Server? (answer, never cached) ─ duplicate? ─ Accounting / Access

* Anything failing before the duplicate cache is dropped and counted under
  ``drop.<reason>``: an invalid packet never touches the cache, never gets an answer.
* Message-Authenticator is required on Status-Server, on every Access-Request carrying
  EAP-Message or Proxy-State, and on every other Access-Request unless the NAS has
  ``require_message_authenticator = False`` (Blast-RADIUS, CVE-2024-3596).
* Duplicates (RFC 5080 §2.2.2): a completed request's reply is resent byte for byte;
  one in progress (accounting being stored) is dropped.
* Access-Request with EAP-Message: the EAP conversation is found by its State (random
  16 octets we chose) and must come from the NAS that started it; a new one starts
  only under the per-NAS and total caps. Challenges carry State; the final answer ends
  the conversation. Without EAP-Message and with a MAC as User-Name: MAB.
* Accounting-Request: the engine returns a :class:`PendingAccounting`; the shell
  stores the record and calls :meth:`RadiusServer.accounting_stored` for the
  Accounting-Response (RFC 2866 §4.1: answer only once recorded), or
  :meth:`RadiusServer.accounting_failed` to stay silent so the NAS retransmits.
* A directory lookup that raises fails closed: Reject or silence per
  ``on_backend_error``, never Accept.
* Every response has Message-Authenticator first and a correct Response Authenticator.
"""

from __future__ import annotations

import functools
import os
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from cryptography import x509
from OpenSSL import SSL

from nhi_nac.domain import IdentityRef
from nhi_nac.radius import codec
from nhi_nac.radius.codec import Attr, Attribute, Code, RadiusPacket
from nhi_nac.radius.decision import (
    AdmissionDecision,
    AdmissionPolicy,
    AuthMethod,
    RequestFacts,
    Verdict,
    backend_failure,
    check_certificate,
    decide_mab,
    reject,
)
from nhi_nac.radius.dedup import DuplicateCache, DuplicateKey, EntryState
from nhi_nac.radius.directory import (
    AccountingRecord,
    AcctStatus,
    AdmissionDirectory,
    NasClient,
)
from nhi_nac.radius.eap import EapCode, EapOutcome, EapPacket, EapServer, EapStep
from nhi_nac.radius.eaptls import EapTlsMethod
from nhi_nac.radius.errors import RadiusProtocolError
from nhi_nac.radius.limits import RadiusLimits
from nhi_nac.radius.macs import station_mac

Address = tuple[str, int]

_ACCT_STATUS = {
    1: AcctStatus.START,
    2: AcctStatus.STOP,
    3: AcctStatus.INTERIM,
    7: AcctStatus.ACCOUNTING_ON,
    8: AcctStatus.ACCOUNTING_OFF,
}
#: RFC 2865 §5.29 Termination-Action = RADIUS-Request: re-authenticate at Session-Timeout.
_TERMINATION_RADIUS_REQUEST = 1


class Service(Enum):
    """Which socket a datagram arrived on."""

    AUTH = "auth"
    ACCT = "acct"


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class PendingAccounting:
    """An Accounting-Request waiting for its record to be stored."""

    record: AccountingRecord
    key: DuplicateKey
    addr: Address
    identifier: int
    authenticator: bytes
    secret: bytes = field(repr=False)
    proxy_states: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerOutput:
    """What one input produced. The shell sends ``datagrams`` and feeds the sinks."""

    datagrams: tuple[Datagram, ...] = ()
    decision: AdmissionDecision | None = None
    accounting: PendingAccounting | None = None
    dropped: str | None = None


_NOTHING = ServerOutput()


@dataclass(slots=True)
class _EapSession:
    state: bytes
    nas_name: str
    facts: RequestFacts
    last_active: float
    decision: AdmissionDecision | None = None
    eap: EapServer = field(init=False)


class RadiusServer:
    """The sans-I/O RADIUS server. See the module docstring."""

    def __init__(
        self,
        directory: AdmissionDirectory,
        policy: AdmissionPolicy | None = None,
        tls_context: SSL.Context | None = None,
        limits: RadiusLimits | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.directory = directory
        self.policy = policy or AdmissionPolicy()
        self.limits = limits or RadiusLimits()
        self.tls_context = tls_context
        self._random = random_bytes
        self.counters: Counter[str] = Counter()
        self._dedup = DuplicateCache(
            self.limits.duplicate_cache_age, self.limits.duplicate_cache_size
        )
        self._sessions: OrderedDict[bytes, _EapSession] = OrderedDict()
        self._sessions_per_nas: Counter[str] = Counter()
        self._admitted: OrderedDict[tuple[str, str], tuple[IdentityRef | None, int | None]] = (
            OrderedDict()
        )

    # -- public surface ------------------------------------------------------------

    @property
    def eap_sessions(self) -> int:
        return len(self._sessions)

    def expire(self, now: float) -> None:
        """Forget idle EAP conversations and old duplicate-cache entries."""
        self._dedup.expire(now)
        limit = now - self.limits.eap_session_timeout
        sessions = self._sessions
        while sessions:
            session = next(iter(sessions.values()))
            if session.last_active > limit:
                break
            self._drop_session(session)
            self.counters["eap.expired"] += 1

    def receive(self, data: bytes, addr: Address, service: Service, now: float) -> ServerOutput:
        try:
            packet = codec.decode_packet(data)
        except RadiusProtocolError as exc:
            return self._drop(exc.reason)
        if service is Service.AUTH:
            if packet.code not in (Code.ACCESS_REQUEST, Code.STATUS_SERVER):
                return self._drop("unexpected_code")
        elif packet.code not in (Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER):
            return self._drop("unexpected_code")
        try:
            nas = self.directory.nas_for(addr[0])
        except Exception:  # noqa: BLE001 - any backend failure: we cannot authenticate
            return self._drop("backend_error")
        if nas is None:
            return self._drop("unknown_nas")
        try:
            codec.verify_request(packet, nas.secret)
        except RadiusProtocolError as exc:
            return self._drop(exc.reason)
        reason = self._message_authenticator_policy(packet, nas)
        if reason is not None:
            return self._drop(reason)
        if packet.code == Code.STATUS_SERVER:
            return self._status_server(packet, nas, addr, service)
        key: DuplicateKey = (addr[0], addr[1], packet.identifier, packet.authenticator)
        seen = self._dedup.lookup(key, now)
        if seen.state is EntryState.COMPLETED:
            self.counters["duplicate.replayed"] += 1
            assert seen.reply is not None
            return ServerOutput(datagrams=(Datagram(seen.reply, addr),))
        if seen.state is EntryState.IN_PROGRESS:
            return self._drop("duplicate_in_progress")
        if packet.code == Code.ACCOUNTING_REQUEST:
            return self._accounting(packet, nas, addr, key, now)
        out = self._access(packet, nas, addr, now)
        for dgram in out.datagrams:
            self._dedup.complete(key, dgram.data, now)
        if out.dropped is not None and packet.get(Attr.STATE) is not None:
            # A deliberate silence mid-EAP (on_backend_error="drop") must stay silent for
            # retransmissions too; the conversation is gone, so they would be rejected.
            self._dedup.begin(key, now)
        return out

    def accounting_stored(self, pending: PendingAccounting, now: float) -> ServerOutput:
        """The record is stored: the Accounting-Response (cached for retransmissions)."""
        reply = codec.encode_response(
            Code.ACCOUNTING_RESPONSE,
            pending.identifier,
            pending.authenticator,
            [(Attr.PROXY_STATE, p) for p in pending.proxy_states],
            pending.secret,
            ma_zero_authenticator=True,
        )
        self._dedup.complete(pending.key, reply, now)
        self.counters["accounting.stored"] += 1
        return ServerOutput(datagrams=(Datagram(reply, pending.addr),))

    def accounting_failed(self, pending: PendingAccounting) -> None:
        """Storing failed: say nothing, and let the NAS's retransmission try again."""
        self._dedup.forget(pending.key)
        self.counters["drop.accounting_not_stored"] += 1

    # -- checks --------------------------------------------------------------------

    def _drop(self, reason: str) -> ServerOutput:
        self.counters[f"drop.{reason}"] += 1
        return ServerOutput(dropped=reason)

    @staticmethod
    def _message_authenticator_policy(packet: RadiusPacket, nas: NasClient) -> str | None:
        if packet.has_message_authenticator:
            return None
        if packet.code == Code.STATUS_SERVER:
            return "missing_message_authenticator"  # RFC 5997 §3
        if packet.code != Code.ACCESS_REQUEST:
            return None
        if packet.get(Attr.PROXY_STATE) is not None:
            return "proxy_state_without_message_authenticator"
        if packet.get(Attr.EAP_MESSAGE) is not None:
            return "missing_message_authenticator"  # RFC 3579 §3.2
        if nas.require_message_authenticator:
            return "missing_message_authenticator"
        return None

    def _status_server(
        self, packet: RadiusPacket, nas: NasClient, addr: Address, service: Service
    ) -> ServerOutput:
        """RFC 5997: Access-Accept on the auth port, Accounting-Response on accounting."""
        code = Code.ACCESS_ACCEPT if service is Service.AUTH else Code.ACCOUNTING_RESPONSE
        reply = codec.encode_response(code, packet.identifier, packet.authenticator, [], nas.secret)
        self.counters["status_server"] += 1
        return ServerOutput(datagrams=(Datagram(reply, addr),))

    # -- accounting ----------------------------------------------------------------

    def _accounting(
        self, packet: RadiusPacket, nas: NasClient, addr: Address, key: DuplicateKey, now: float
    ) -> ServerOutput:
        try:
            record = self._accounting_record(packet, nas, addr, now)
        except RadiusProtocolError as exc:
            return self._drop(exc.reason)
        pending = PendingAccounting(
            record=record,
            key=key,
            addr=addr,
            identifier=packet.identifier,
            authenticator=packet.authenticator,
            secret=nas.secret,
            proxy_states=tuple(packet.get_all(Attr.PROXY_STATE)),
        )
        self._dedup.begin(key, now)
        return ServerOutput(accounting=pending)

    def _accounting_record(
        self, packet: RadiusPacket, nas: NasClient, addr: Address, now: float
    ) -> AccountingRecord:
        status_code = packet.get_int(Attr.ACCT_STATUS_TYPE)
        if status_code is None:
            raise RadiusProtocolError(
                "Accounting-Request without Acct-Status-Type", "bad_accounting"
            )
        status = _ACCT_STATUS.get(status_code)
        if status is None:
            raise RadiusProtocolError(f"Acct-Status-Type {status_code}", "unsupported_acct_status")
        session_id = packet.get_text(Attr.ACCT_SESSION_ID)
        if session_id is None and status not in (
            AcctStatus.ACCOUNTING_ON,
            AcctStatus.ACCOUNTING_OFF,
        ):
            raise RadiusProtocolError(
                "Accounting-Request without Acct-Session-Id", "bad_accounting"
            )
        station = packet.get_text(Attr.CALLING_STATION_ID)
        user_name = packet.get_text(Attr.USER_NAME)
        mac = station_mac(station) if station else None
        if mac is None and user_name:
            mac = station_mac(user_name)
        identity, vlan = self._admitted.get((nas.name, mac), (None, None)) if mac else (None, None)
        # The NAS's own word on the VLAN (RFC 2868/3580 Tunnel-Private-Group-Id in
        # accounting) beats what we last assigned: drift detection needs the truth.
        reported = reported_vlan(packet.get(Attr.TUNNEL_PRIVATE_GROUP_ID))
        if reported is not None:
            vlan = reported

        def counter(low: int, high: int) -> int | None:
            value = packet.get_int(low)
            if value is None:
                return None
            return value + ((packet.get_int(high) or 0) << 32)

        return AccountingRecord(
            status=status,
            session_id=session_id or "",
            nas_name=nas.name,
            nas_address=addr[0],
            received_at=now,
            user_name=user_name,
            mac=mac,
            nas_port=packet.get_int(Attr.NAS_PORT),
            nas_port_id=packet.get_text(Attr.NAS_PORT_ID),
            identity=identity,
            vlan=vlan,
            input_octets=counter(Attr.ACCT_INPUT_OCTETS, Attr.ACCT_INPUT_GIGAWORDS),
            output_octets=counter(Attr.ACCT_OUTPUT_OCTETS, Attr.ACCT_OUTPUT_GIGAWORDS),
            input_packets=packet.get_int(Attr.ACCT_INPUT_PACKETS),
            output_packets=packet.get_int(Attr.ACCT_OUTPUT_PACKETS),
            session_time=packet.get_int(Attr.ACCT_SESSION_TIME),
            terminate_cause=packet.get_int(Attr.ACCT_TERMINATE_CAUSE),
            delay_time=packet.get_int(Attr.ACCT_DELAY_TIME),
        )

    # -- access --------------------------------------------------------------------

    def _facts(
        self, packet: RadiusPacket, nas: NasClient, addr: Address, now: float
    ) -> RequestFacts:
        try:
            nas_port = packet.get_int(Attr.NAS_PORT)
        except RadiusProtocolError:
            nas_port = None
        return RequestFacts(
            nas=nas,
            nas_address=addr[0],
            received_at=now,
            user_name=packet.get_text(Attr.USER_NAME),
            calling_station_id=packet.get_text(Attr.CALLING_STATION_ID),
            nas_port=nas_port,
            nas_port_id=packet.get_text(Attr.NAS_PORT_ID),
        )

    def _access(
        self, packet: RadiusPacket, nas: NasClient, addr: Address, now: float
    ) -> ServerOutput:
        facts = self._facts(packet, nas, addr, now)
        eap = packet.eap_message()
        if eap is not None:
            return self._eap(packet, eap, facts, addr, now)
        mac = station_mac(facts.user_name) if facts.user_name else None
        if mac is None:
            decision = reject(
                facts, AuthMethod.NONE, "unsupported_method", "neither EAP nor a MAC as User-Name"
            )
            return self._final(packet, nas, addr, decision)
        password: bytes | None = None
        hidden = packet.get(Attr.USER_PASSWORD)
        if hidden is not None:
            try:
                password = codec.decode_user_password(hidden, nas.secret, packet.authenticator)
            except RadiusProtocolError:
                password = None
        try:
            decision = decide_mab(facts, mac, password, self.directory, self.policy)
        except Exception as exc:  # noqa: BLE001 - fail closed on any backend failure
            decision = backend_failure(facts, AuthMethod.MAB, self.policy, exc)
        return self._final(packet, nas, addr, decision)

    def _final(
        self,
        packet: RadiusPacket,
        nas: NasClient,
        addr: Address,
        decision: AdmissionDecision,
        eap_message: bytes | None = None,
        msk: bytes | None = None,
    ) -> ServerOutput:
        """The Access-Accept / Access-Reject for a decision (nothing, for DROP)."""
        if decision.verdict is Verdict.DROP:
            self.counters[f"drop.{decision.failure}"] += 1
            return ServerOutput(decision=decision, dropped=decision.failure)
        attrs: list[Attribute] = []
        if eap_message is not None:
            attrs += codec.split_eap_message(eap_message)
        fixed: tuple[Attribute, ...]
        if decision.verdict is Verdict.ACCEPT:
            code = Code.ACCESS_ACCEPT
            self.counters["accept"] += 1
            if msk is not None:
                attrs += codec.mppe_key_attributes(msk, nas.secret, packet.authenticator)
            fixed = _accept_reply(decision.vlan, decision.session_timeout)
            if decision.mac is not None:
                self._remember(nas.name, decision.mac, decision.identity, decision.vlan)
        else:
            code = Code.ACCESS_REJECT
            self.counters[f"reject.{decision.failure}"] += 1
            fixed = _reject_reply(self.policy.reject_message)
        proxy_states = packet.get_all(Attr.PROXY_STATE)
        body: list[Attribute] | bytes
        if attrs or proxy_states:
            body = [*attrs, *fixed, *((Attr.PROXY_STATE, p) for p in proxy_states)]
        else:  # MAB: only attributes that repeat, encoded once
            body = codec.encode_fixed_attributes(fixed)
        reply = codec.encode_response(code, packet.identifier, packet.authenticator, body,
                                      nas.secret)
        return ServerOutput(datagrams=(Datagram(reply, addr),), decision=decision)

    def _remember(
        self, nas_name: str, mac: str, identity: IdentityRef | None, vlan: int | None
    ) -> None:
        admitted = self._admitted
        admitted[(nas_name, mac)] = (identity, vlan)
        admitted.move_to_end((nas_name, mac))
        while len(admitted) > self.limits.admitted_cache_size:
            admitted.popitem(last=False)

    # -- EAP -----------------------------------------------------------------------

    def _eap(
        self, packet: RadiusPacket, eap: bytes, facts: RequestFacts, addr: Address, now: float
    ) -> ServerOutput:
        nas = facts.nas
        state = packet.get(Attr.STATE)
        if state is None:
            session = self._new_session(facts, now)
            if session is None:
                return self._drop("eap_sessions_full")
        else:
            found = self._sessions.get(state)
            if found is None or found.nas_name != nas.name:
                decision = reject(
                    facts, AuthMethod.EAP_TLS, "eap_session_unknown", "EAP State unknown or expired"
                )
                decision = replace(decision, mac=_station_mac(facts))
                return self._final(packet, nas, addr, decision, _failure_for(eap))
            session = found
            session.facts = replace(facts, user_name=session.facts.user_name)
            session.last_active = now
            self._sessions.move_to_end(session.state)
        try:
            step = session.eap.receive(eap, now)
        except RadiusProtocolError as exc:
            step = session.eap.fail(_identifier_of(eap), exc.reason)
        if step.outcome is EapOutcome.CONTINUE:
            self.counters["challenge"] += 1
            attrs = codec.split_eap_message(step.message)
            attrs.append((Attr.STATE, session.state))
            attrs += [(Attr.PROXY_STATE, p) for p in packet.get_all(Attr.PROXY_STATE)]
            reply = codec.encode_response(
                Code.ACCESS_CHALLENGE, packet.identifier, packet.authenticator, attrs, nas.secret
            )
            return ServerOutput(datagrams=(Datagram(reply, addr),))
        self._drop_session(session)
        return self._eap_final(packet, session, step, addr)

    def _eap_final(
        self, packet: RadiusPacket, session: _EapSession, step: EapStep, addr: Address
    ) -> ServerOutput:
        facts = replace(session.facts, received_at=session.last_active)
        method = session.eap.method
        decision = session.decision
        if step.outcome is EapOutcome.SUCCESS:
            keys = method.key_material() if method is not None else None
            if decision is None or not decision.accepted or keys is None:
                # The method succeeded without an accepting decision: never Accept.
                decision = reject(
                    facts,
                    AuthMethod.EAP_TLS,
                    "internal",
                    "EAP succeeded without an admission decision",
                )
                failure = EapPacket(EapCode.FAILURE, _identifier_of(step.message)).encode()
                return self._final(packet, facts.nas, addr, decision, failure)
            decision = replace(decision, user_name=session.eap.identity, mac=_station_mac(facts))
            return self._final(packet, facts.nas, addr, decision, step.message, keys.msk)
        if decision is None or decision.accepted:
            detail = None
            if isinstance(method, EapTlsMethod):
                detail = method.failure_detail
            reason = step.reason or "eap_failed"
            sentence = f"EAP failed: {reason}" + (f" ({detail})" if detail else "")
            decision = reject(facts, AuthMethod.EAP_TLS, reason, sentence)
        # A rejection is recorded with the port's MAC too: "which device keeps failing?"
        decision = replace(decision, user_name=session.eap.identity, mac=_station_mac(facts))
        return self._final(packet, facts.nas, addr, decision, step.message)

    def _new_session(self, facts: RequestFacts, now: float) -> _EapSession | None:
        self.expire(now)
        nas = facts.nas
        if (
            len(self._sessions) >= self.limits.max_eap_sessions
            or self._sessions_per_nas[nas.name] >= self.limits.max_eap_sessions_per_nas
        ):
            return None
        state = self._random(16)
        while state in self._sessions:
            state = self._random(16)
        session = _EapSession(state, nas.name, facts, now)
        session.eap = EapServer(functools.partial(self._make_method, session))
        self._sessions[state] = session
        self._sessions_per_nas[nas.name] += 1
        return session

    def _make_method(self, session: _EapSession, _identity: str) -> EapTlsMethod:
        if self.tls_context is None:
            raise RadiusProtocolError("EAP-TLS is not configured", "eap_not_configured")

        def peer_check(
            leaf: x509.Certificate, issuers: tuple[x509.Certificate, ...], now: float
        ) -> str | None:
            facts = replace(session.facts, received_at=now)
            try:
                decision = check_certificate(leaf, issuers, facts, self.directory, self.policy)
            except Exception as exc:  # noqa: BLE001 - fail closed on any backend failure
                decision = backend_failure(facts, AuthMethod.EAP_TLS, self.policy, exc)
            session.decision = decision
            return None if decision.accepted else decision.failure

        return EapTlsMethod(self.tls_context, peer_check, self.limits.eap_tls_fragment_size)

    def _drop_session(self, session: _EapSession) -> None:
        if self._sessions.pop(session.state, None) is not None:
            self._sessions_per_nas[session.nas_name] -= 1
            if self._sessions_per_nas[session.nas_name] <= 0:
                del self._sessions_per_nas[session.nas_name]


@functools.lru_cache(maxsize=4096)
def _accept_reply(vlan: int | None, session_timeout: int | None) -> tuple[Attribute, ...]:
    """The VLAN (RFC 3580) and Session-Timeout attributes of an Access-Accept."""
    attrs: tuple[Attribute, ...] = ()
    if vlan is not None:
        attrs += codec.vlan_reply(vlan)
    if session_timeout is not None:
        attrs += _timeout_reply(session_timeout)
    return attrs


@functools.lru_cache(maxsize=16)
def _reject_reply(message: str) -> tuple[Attribute, ...]:
    return ((Attr.REPLY_MESSAGE, message.encode()),)


@functools.lru_cache(maxsize=1024)
def _timeout_reply(seconds: int) -> tuple[Attribute, ...]:
    """Session-Timeout with Termination-Action = RADIUS-Request (RFC 2865 §5.27, §5.29);
    MAB sends one value, EAP-TLS a value per certificate expiry (hence the bound)."""
    return (
        codec.integer(Attr.SESSION_TIMEOUT, seconds),
        codec.integer(Attr.TERMINATION_ACTION, _TERMINATION_RADIUS_REQUEST),
    )


def _station_mac(facts: RequestFacts) -> str | None:
    """The normalized Calling-Station-Id (the supplicant's MAC), or None."""
    return station_mac(facts.calling_station_id) if facts.calling_station_id else None


def _identifier_of(eap: bytes) -> int:
    return eap[1] if len(eap) >= 2 else 0


def _failure_for(eap: bytes) -> bytes:
    return EapPacket(EapCode.FAILURE, _identifier_of(eap)).encode()


def reported_vlan(raw: bytes | None) -> int | None:
    """A numeric VLAN from a Tunnel-Private-Group-Id value (tag byte optional), else None."""
    if not raw:
        return None
    if raw[0] <= 0x1F:  # RFC 2868 tag
        raw = raw[1:]
    text = raw.decode("ascii", "replace").strip()
    if not text.isdigit() or len(text) > 4:
        return None
    number = int(text)
    return number if 1 <= number <= 4094 else None
