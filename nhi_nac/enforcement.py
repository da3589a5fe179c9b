"""Continuous enforcement: push changes to live sessions with RFC 5176.

The enforcer watches the event outbox (so a change made by the CLI, the API or another
node is seen alike) and, for every event that changes what an identity may have —

- ``segments.applied`` (the identities that move),
- ``identity.suspended`` / ``identity.retired``,
- ``certificate.revoked``,
- ``owner.departed`` (the identities left orphaned),
- ``identity.quarantined`` / ``identity.released``,
- ``agent.grant.approved`` / ``agent.grant.expired`` (an agent's scope widened or
  narrowed back) —

sends each of the identity's active sessions (known from accounting) a
Disconnect-Request, or, where the NAS vendor supports it and only the segment changed,
a CoA-Request asking it to re-authenticate, so that the next authentication lands on
the right VLAN or is refused. Every request and its answer (ACK, NAK with
Error-Cause, or timeout after identical retransmissions) is stored in
``coa_requests``; ``nhi-nac coa status`` shows them. The sender owns the wire protocol,
retransmission and per-NAS rate limits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from nhi_nac import audit
from nhi_nac.coa.limits import COA_PORT
from nhi_nac.coa.messages import (
    CoaAction,
    CoaOutcome,
    CoaTarget,
    SessionIds,
)
from nhi_nac.coa.sender import CoaSender
from nhi_nac.outbox import add_event
from nhi_nac.storage import queries
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import (
    CoaRequest,
    Identity,
    NasClient,
    OutboxEvent,
    Owner,
    RadiusSession,
)

log = structlog.get_logger("nhi_nac.coa")

#: Seconds between looks at the outbox.
ENFORCE_POLL_SECONDS = 0.5
#: NAS vendors that accept a CoA-Request to re-authenticate a session (Cisco's
#: subscriber:command=reauthenticate); the others get Disconnect-Request.
REAUTH_VENDORS = frozenset({"cisco"})
#: Sessions addressed per event, at most (a map change moving more is logged).
MAX_SESSIONS_PER_EVENT = 100_000


@dataclass(frozen=True)
class SessionTarget:
    """One live session to act on, with what the sender needs to reach its NAS."""

    request_id: int
    kind: str  # "disconnect" | "coa"
    identity: str
    nas: str
    nas_address: str
    secret: bytes
    vendor: str
    acct_session_id: str
    user_name: str
    mac: str


@dataclass(frozen=True)
class SendOutcome:
    request_id: int
    status: str  # "acked" | "naked" | "timeout" | "error"
    error_cause: str | None
    attempts: int
    rtt_ms: float | None


Sender = Callable[[Sequence[SessionTarget]], Awaitable[Sequence[SendOutcome]]]


#: The event types the enforcer acts on (see :func:`affected`).
ENFORCED_EVENTS = ("segments.applied", "identity.suspended", "identity.retired",
                   "certificate.revoked", "owner.departed", "identity.quarantined",
                   "identity.released", "agent.grant.approved", "agent.grant.expired")
_ENFORCED_AFTER = (select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.payload)
                   .where(OutboxEvent.id > bindparam("after"),
                          OutboxEvent.type.in_(ENFORCED_EVENTS))
                   .order_by(OutboxEvent.id).limit(1000))


def affected(event_type: str, payload: dict[str, Any]) -> tuple[str, list[str]]:
    """(kind of request, identities) an event asks to enforce; empty if none."""
    if event_type == "segments.applied":
        return "coa", [str(i) for i in payload.get("moved", [])]
    if event_type in ("identity.suspended", "identity.retired"):
        return "disconnect", [str(payload["identity"])]
    if event_type == "certificate.revoked" and payload.get("identity"):
        return "disconnect", [str(payload["identity"])]
    if event_type == "owner.departed":
        return "disconnect", [str(i) for i in payload.get("orphaned", [])]
    if event_type in ("identity.quarantined", "identity.released", "agent.grant.approved",
                      "agent.grant.expired"):
        return "coa", [str(payload["identity"])]
    return "disconnect", []


class Enforcer:
    def __init__(self, db: Database, sender: Sender,
                 clock: Callable[[], dt.datetime],
                 prepare: Callable[[], Awaitable[object]] | None = None) -> None:
        self.db = db
        self.sender = sender
        self.clock = clock
        #: Run before acting on new events, so that what the NAS's re-authentication
        #: will ask (segment map, quarantine, grants) is already in this node's memory.
        self.prepare = prepare
        self._last_event: int | None = None

    async def start(self) -> None:
        self._last_event = await self.db.run_read(queries.newest_event)

    async def check(self) -> int:
        """Handle new outbox events; returns how many requests were sent."""
        if self._last_event is None:
            await self.start()
        last = self._last_event or 0

        def look(conn: Connection) -> tuple[int, Sequence[Any]]:
            # Asked twice a second on every node: the newest id first (by primary key),
            # the enforced events only when there is anything new.
            newest = queries.newest_event(conn)
            if newest <= last:
                return newest, ()
            return newest, conn.execute(_ENFORCED_AFTER, {"after": last}).all()

        newest, events = await self.db.run_read(look)
        sent = 0
        if events and self.prepare is not None:
            await self.prepare()
        for event_id, etype, payload in events:
            kind, identities = affected(etype, payload)
            if identities:
                sent += await self.enforce(identities, kind, f"{etype}#{event_id}")
            self._last_event = event_id
        if len(events) < 1000:
            self._last_event = max(self._last_event or 0, newest)
        return sent

    async def enforce(self, identities: Iterable[str], kind: str, trigger: str) -> int:
        now = self.clock()
        targets: list[SessionTarget] = []
        wanted = sorted(set(identities))
        async with self.db.transaction() as s:
            for start in range(0, len(wanted), 500):
                rows = (await s.execute(
                    select(RadiusSession, NasClient.secret, NasClient.vendor,
                           NasClient.address)
                    .join(NasClient, NasClient.name == RadiusSession.nas)
                    .where(RadiusSession.status == "active",
                           RadiusSession.identity.in_(wanted[start : start + 500])))).all()
                for sess, secret, vendor, nas_net in rows:
                    if len(targets) >= MAX_SESSIONS_PER_EVENT:
                        log.warning("coa.too_many_sessions", trigger=trigger)
                        break
                    how = "coa" if kind == "coa" and vendor in REAUTH_VENDORS else "disconnect"
                    address = sess.nas_address or nas_net.split("/")[0]
                    req = CoaRequest(created_at=now, trigger=trigger, identity=sess.identity,
                                     nas=sess.nas, nas_address=address,
                                     acct_session_id=sess.acct_session_id, kind=how,
                                     status="pending", attempts=0)
                    s.add(req)
                    await s.flush()
                    targets.append(SessionTarget(req.id, how, sess.identity, sess.nas, address,
                                                 secret.encode(), vendor, sess.acct_session_id,
                                                 sess.user_name, sess.mac))
            # Every enforcement is audited, traced back to the identity's human owner.
            touched: dict[str, list[str]] = {}
            for t in targets:
                touched.setdefault(t.identity, []).append(f"{t.nas}/{t.acct_session_id}")
            owners = await _owners(s, list(touched))
            for ident, sessions in sorted(touched.items()):
                await audit.append(s, actor="enforcer", action="coa.enforce", target=ident,
                                   before=None, after={"trigger": trigger, "kind": kind,
                                                       "sessions": sessions,
                                                       "owner": owners.get(ident)}, now=now)
        if not targets:
            return 0
        outcomes = await self.sender(targets)
        done = self.clock()
        async with self.db.transaction() as s:
            for o in outcomes:
                stored = await s.get(CoaRequest, o.request_id)
                if stored is None:
                    continue
                req = stored
                req.status, req.error_cause, req.attempts = o.status, o.error_cause, o.attempts
                req.rtt_ms = o.rtt_ms
                req.answered_at = done if o.status in ("acked", "naked") else None
                add_event(s, "coa.result", {"identity": req.identity, "nas": req.nas,
                                            "session": req.acct_session_id, "kind": req.kind,
                                            "status": o.status, "error_cause": o.error_cause,
                                            "trigger": trigger}, done)
        return len(targets)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ENFORCE_POLL_SECONDS)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - keep enforcing after a failure
                log.warning("coa.enforce_failed", exc_info=True)


async def _owners(s: Any, refs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(refs), 500):
        chunk = refs[start : start + 500]
        for kind, name, email in (await s.execute(
                select(Identity.kind, Identity.name, Owner.email)
                .join(Owner, Owner.id == Identity.owner_id)
                .where((Identity.kind + "/" + Identity.name).in_(chunk)))).all():
            found[f"{kind}/{name}"] = email
    return found


async def coa_status(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.scalars(select(CoaRequest).order_by(CoaRequest.id.desc())
                                .limit(limit))).all()
    return [{"id": r.id, "at": r.created_at.isoformat(timespec="seconds"),
             "trigger": r.trigger, "identity": r.identity, "nas": r.nas,
             "nas_address": r.nas_address, "session": r.acct_session_id, "kind": r.kind,
             "status": r.status, "error_cause": r.error_cause, "attempts": r.attempts,
             "rtt_ms": r.rtt_ms} for r in reversed(rows)]


def coa_sender(sender: CoaSender, port: int = COA_PORT) -> Sender:
    """Adapt the RFC 5176 sender to the enforcer: one request per session target."""
    outcome_names = {CoaOutcome.ACK: "acked", CoaOutcome.NAK: "naked",
                     CoaOutcome.TIMEOUT: "timeout", CoaOutcome.ERROR: "error"}

    async def send(targets: Sequence[SessionTarget]) -> Sequence[SendOutcome]:
        async def one(t: SessionTarget) -> SendOutcome:
            try:
                target = CoaTarget(
                    nas_name=t.nas, address=t.nas_address, secret=t.secret, vendor=t.vendor,
                    port=port, session=SessionIds(acct_session_id=t.acct_session_id or None,
                                                  user_name=t.user_name or None,
                                                  calling_station_id=t.mac or None,
                                                  nas_ip_address=ipaddress.ip_address(
                                                      t.nas_address)))
            except ValueError as exc:
                log.warning("coa.bad_target", nas=t.nas, error=str(exc))
                return SendOutcome(t.request_id, "error", str(exc)[:64], 0, None)
            action = target.default_action if t.kind == "coa" else CoaAction.DISCONNECT
            r = await sender.send(target, action)
            return SendOutcome(t.request_id, outcome_names[r.outcome], r.error_cause_name,
                               r.attempts, None if r.rtt is None else r.rtt * 1000)
        return list(await asyncio.gather(*(one(t) for t in targets)))
    return send
