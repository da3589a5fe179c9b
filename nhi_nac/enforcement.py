"""Continuous enforcement: push changes to live sessions with RFC 5176.

The enforcer follows the event outbox (so a change made by the CLI, the API or another
node is seen alike; one shared cursor makes each event enforced once, by one node, and
events written while no node ran are enforced when one starts) and, for every event
that changes what an identity may have —

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
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, delete, exists, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nhi_nac import audit
from nhi_nac.coa.limits import COA_PORT
from nhi_nac.coa.messages import (
    CoaAction,
    CoaOutcome,
    CoaTarget,
    SessionIds,
)
from nhi_nac.coa.sender import CoaSender
from nhi_nac.storage import queries
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import (
    CoaRequest,
    EnforcedEvent,
    Identity,
    NasClient,
    OutboxEvent,
    Owner,
    RadiusSession,
    Setting,
    table_of,
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
#: Events claimed per transaction, at most.
ENFORCE_BATCH = 1000
#: Outbox ids before the newest one seen that are looked at again for events whose
#: transaction committed after a later one's, and how often when nothing is new.
LATE_COMMIT_WINDOW = 1000
LATE_LOOK_SECONDS = 5.0
_CLAIMED = table_of(EnforcedEvent)
#: Enforced events after ``after`` that no node has claimed yet.
_ENFORCED_AFTER = (select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.payload)
                   .where(OutboxEvent.id > bindparam("after"),
                          OutboxEvent.type.in_(ENFORCED_EVENTS),
                          ~exists().where(_CLAIMED.c.event_id == OutboxEvent.id))
                   .order_by(OutboxEvent.id).limit(ENFORCE_BATCH))
_MARK_CLAIMED = insert(_CLAIMED)
_FORGET_CLAIMED = delete(_CLAIMED).where(_CLAIMED.c.event_id <= bindparam("floor"))
#: The shared cursor: every enforced event at or below it has been claimed (above it,
#: ``enforced_events`` says which have).
CURSOR_KEY = "enforcer.last_event"
_SETTINGS = table_of(Setting)
_CURSOR = select(_SETTINGS.c.value).where(_SETTINGS.c.key == CURSOR_KEY)
_CURSOR_FOR_UPDATE = _CURSOR.with_for_update()
_NEW_CURSOR = insert(_SETTINGS).values(key=CURSOR_KEY)
_MOVE_CURSOR = update(_SETTINGS).where(_SETTINGS.c.key == CURSOR_KEY).values(
    value=bindparam("value"))
_SESSIONS = table_of(RadiusSession)
_NAS = table_of(NasClient)
_REQUESTS = table_of(CoaRequest)
_LIVE_SESSIONS = (
    select(_SESSIONS.c.identity, _SESSIONS.c.nas, _SESSIONS.c.nas_address,
           _SESSIONS.c.acct_session_id, _SESSIONS.c.user_name, _SESSIONS.c.mac,
           _NAS.c.secret, _NAS.c.vendor, _NAS.c.address.label("nas_net"))
    .join(_NAS, _NAS.c.name == _SESSIONS.c.nas)
    .where(_SESSIONS.c.status == "active",
           _SESSIONS.c.identity.in_(bindparam("refs", expanding=True)))
    .order_by(_SESSIONS.c.id))
_INSERT_REQUESTS = insert(_REQUESTS).returning(_REQUESTS.c.id, sort_by_parameter_order=True)
_ANSWERED = update(_REQUESTS).where(_REQUESTS.c.id == bindparam("rid")).values(
    status=bindparam("status"), error_cause=bindparam("error_cause"),
    attempts=bindparam("attempts"), rtt_ms=bindparam("rtt_ms"),
    answered_at=bindparam("answered_at"))
_INSERT_EVENT = insert(table_of(OutboxEvent))
_IDENTITIES = table_of(Identity)
_OWNERS_OF = (select(_IDENTITIES.c.kind, _IDENTITIES.c.name, table_of(Owner).c.email)
              .join(table_of(Owner), table_of(Owner).c.id == _IDENTITIES.c.owner_id)
              .where((_IDENTITIES.c.kind + "/" + _IDENTITIES.c.name).in_(
                  bindparam("refs", expanding=True))))
#: A pending request is resumed by a starting node once it is older than this (longer
#: than a live sender's retransmissions take) and if it is younger than RESUME_WITHIN.
RESUME_AFTER = dt.timedelta(seconds=60)
RESUME_WITHIN = dt.timedelta(minutes=15)
_STRANDED = (
    select(_REQUESTS.c.id, _REQUESTS.c.trigger, _REQUESTS.c.kind, _REQUESTS.c.identity,
           _REQUESTS.c.nas, _REQUESTS.c.nas_address, _REQUESTS.c.acct_session_id,
           _SESSIONS.c.user_name, _SESSIONS.c.mac, _NAS.c.secret, _NAS.c.vendor)
    .outerjoin(_SESSIONS, (_SESSIONS.c.nas == _REQUESTS.c.nas)
               & (_SESSIONS.c.acct_session_id == _REQUESTS.c.acct_session_id)
               & (_SESSIONS.c.status == "active"))
    .outerjoin(_NAS, (_NAS.c.name == _REQUESTS.c.nas) & _SESSIONS.c.id.is_not(None))
    .where(_REQUESTS.c.status == "pending", _REQUESTS.c.created_at < bindparam("older"),
           _REQUESTS.c.created_at >= bindparam("newer"))
    .order_by(_REQUESTS.c.id).limit(ENFORCE_BATCH))
_ABANDON = update(_REQUESTS).where(_REQUESTS.c.id.in_(bindparam("ids", expanding=True)),
                                   _REQUESTS.c.status == "pending"
                                   ).values(status="abandoned")
_RESENDING = (update(_REQUESTS)
              .where(_REQUESTS.c.id.in_(bindparam("ids", expanding=True)),
                     _REQUESTS.c.status == "pending")
              .values(status="resending").returning(_REQUESTS.c.id))


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
    """Follows the outbox from a cursor every node shares (``settings``, key
    :data:`CURSOR_KEY`), so that each enforced event is acted on once, by one node, and
    an event written while no node was running is acted on when one starts.

    Claiming is one write transaction: the cursor row is locked, the unclaimed events
    after it are read and recorded as claimed (``enforced_events``), one ``pending``
    ``coa_requests`` row per live session is written with its audit record, and the
    cursor moves on, ``LATE_COMMIT_WINDOW`` ids behind. The requests are sent after the commit; a
    node that dies before their answers leaves them ``pending``, and a node starting
    later sends them again (:meth:`resume`).
    """

    def __init__(self, db: Database, sender: Sender,
                 clock: Callable[[], dt.datetime],
                 prepare: Callable[[], Awaitable[object]] | None = None) -> None:
        self.db = db
        self.sender = sender
        self.clock = clock
        #: Run before acting on new events, so that what the NAS's re-authentication
        #: will ask (segment map, quarantine, grants) is already in this node's memory.
        self.prepare = prepare
        #: The newest outbox id this node has looked past (node-local, for the cheap read).
        self._last_event: int | None = None
        self._looked_back = 0.0

    async def start(self) -> None:
        """Read the shared cursor; on a database that has none, start it at the newest
        event (history before the first start is not enforced)."""
        def open_cursor(conn: Connection) -> int:
            cursor = conn.execute(_CURSOR).scalar()
            if cursor is not None:
                return int(cursor)
            newest = queries.newest_event(conn)
            conn.execute(_NEW_CURSOR, {"value": str(newest)})
            return newest

        try:
            self._last_event = await self.db.run_write(open_cursor)
        except IntegrityError:  # another node created it at the same moment: use theirs
            self._last_event = int(await self.db.run_read(
                lambda conn: conn.execute(_CURSOR).scalar_one()))

    async def check(self) -> int:
        """Handle new outbox events; returns how many requests were sent."""
        if self._last_event is None:
            await self.start()
        last = self._last_event or 0
        now = time.monotonic()
        look_back = now - self._looked_back >= LATE_LOOK_SECONDS
        if look_back:
            self._looked_back = now

        def look(conn: Connection) -> tuple[int, bool]:
            # Asked twice a second on every node: the newest id first (by primary key),
            # the enforced events only when there is anything new. An id is taken when a
            # transaction inserts, visible when it commits: every few seconds, and with
            # anything new, a little before what this node has seen is looked at again
            # (never before the shared cursor, which is past everything claimed), so an
            # event committed after a later one is not passed over.
            newest = queries.newest_event(conn)
            if newest <= last and not look_back:
                return newest, False
            floor = int(conn.execute(_CURSOR).scalar() or 0)
            after = max(floor, last - LATE_COMMIT_WINDOW)
            return newest, conn.execute(_ENFORCED_AFTER, {"after": after}).first() is not None

        newest, due = await self.db.run_read(look)
        if not due:
            self._last_event = max(last, newest)
            return 0
        claimed, upto = await self.db.run_write(lambda conn: self._claim(conn, self.clock()))
        self._last_event = max(last, upto)
        if not claimed:
            return 0  # another node claimed them
        if self.prepare is not None:
            await self.prepare()
        sent = 0
        for trigger, targets in claimed:
            sent += await self._send(targets, trigger)
        return sent

    def _claim(self, conn: Connection, now: dt.datetime
               ) -> tuple[list[tuple[str, list[SessionTarget]]], int]:
        """Claim the enforced events above the shared cursor that no node has claimed,
        writing a pending request per live session of the identities they affect (see
        the class); then raise the cursor to ``LATE_COMMIT_WINDOW`` ids below what is
        now claimed, so that an event committed late, below that, is still found."""
        after = int(conn.execute(_CURSOR_FOR_UPDATE).scalar_one())  # made by start()
        newest = queries.newest_event(conn)
        events = conn.execute(_ENFORCED_AFTER, {"after": after}).all()
        upto = events[-1][0] if len(events) >= ENFORCE_BATCH else newest
        if events:
            conn.execute(_MARK_CLAIMED, [{"event_id": e[0], "claimed_at": now} for e in events])
        floor = max(after, upto - LATE_COMMIT_WINDOW)
        conn.execute(_FORGET_CLAIMED, {"floor": floor})
        claimed: list[tuple[str, list[SessionTarget]]] = []
        for event_id, etype, payload in events:
            kind, identities = affected(etype, payload)
            if identities:
                trigger = f"{etype}#{event_id}"
                targets = self._requests(conn, identities, kind, trigger, now)
                if targets:
                    claimed.append((trigger, targets))
        conn.execute(_MOVE_CURSOR, {"value": str(floor)})
        return claimed, upto

    def _requests(self, conn: Connection, identities: Iterable[str], kind: str, trigger: str,
                  now: dt.datetime) -> list[SessionTarget]:
        """A pending request per live session of ``identities``, audited per identity."""
        rows: list[Any] = []
        wanted = sorted(set(identities))
        for start in range(0, len(wanted), 500):
            rows.extend(conn.execute(_LIVE_SESSIONS, {"refs": wanted[start : start + 500]}))
        if len(rows) > MAX_SESSIONS_PER_EVENT:
            log.warning("coa.too_many_sessions", trigger=trigger, sessions=len(rows))
            del rows[MAX_SESSIONS_PER_EVENT:]
        planned = [("coa" if kind == "coa" and r.vendor in REAUTH_VENDORS else "disconnect",
                    r.nas_address or r.nas_net.split("/")[0], r) for r in rows]
        # One multi-row INSERT ... RETURNING, ids in the order of the parameters.
        ids = conn.execute(_INSERT_REQUESTS, [
            {"created_at": now, "trigger": trigger, "identity": r.identity, "nas": r.nas,
             "nas_address": address, "acct_session_id": r.acct_session_id, "kind": how,
             "status": "pending", "attempts": 0} for how, address, r in planned
        ]).scalars().all() if planned else []
        targets = [_target(request_id, how, address, r)
                   for request_id, (how, address, r) in zip(ids, planned, strict=True)]
        # Every enforcement is audited, traced back to the identity's human owner.
        touched: dict[str, list[str]] = {}
        for t in targets:
            touched.setdefault(t.identity, []).append(f"{t.nas}/{t.acct_session_id}")
        owners = _owners(conn, list(touched))
        audit.append_many_sync(conn, [
            ("enforcer", "coa.enforce", ident, None,
             {"trigger": trigger, "kind": kind, "sessions": sessions,
              "owner": owners.get(ident)})
            for ident, sessions in sorted(touched.items())], now)
        return targets

    async def resume(self, now: dt.datetime | None = None) -> int:
        """Send again the requests a node wrote but never saw answered (it stopped
        between the claim and the answers): ``pending`` for longer than
        :data:`RESUME_AFTER` and younger than :data:`RESUME_WITHIN`, whose session is
        still live. Requests whose session has ended meanwhile become ``abandoned``."""
        at = now or self.clock()

        def take(conn: Connection) -> list[tuple[str, SessionTarget]]:
            rows = conn.execute(_STRANDED, {"older": at - RESUME_AFTER,
                                            "newer": at - RESUME_WITHIN}).all()
            gone = [r.id for r in rows if r.secret is None]
            if gone:
                conn.execute(_ABANDON, {"ids": gone})
            # Taken only if still pending: of two nodes starting together, one sends each.
            live = {r.id: r for r in rows if r.secret is not None}
            taken = set(conn.execute(_RESENDING, {"ids": list(live)}).scalars()) if live else ()
            return [(r.trigger, _target(rid, r.kind, r.nas_address, r))
                    for rid, r in live.items() if rid in taken]

        stranded = await self.db.run_write(take)
        if not stranded:
            return 0
        log.warning("coa.resume", requests=len(stranded))
        if self.prepare is not None:
            await self.prepare()
        by_trigger: dict[str, list[SessionTarget]] = {}
        for trigger, target in stranded:
            by_trigger.setdefault(trigger, []).append(target)
        return sum([await self._send(targets, trigger)
                    for trigger, targets in by_trigger.items()])

    async def _send(self, targets: Sequence[SessionTarget], trigger: str) -> int:
        """Send, then record each answer and announce it (``coa.result``)."""
        if not targets:
            return 0
        outcomes = await self.sender(targets)
        done = self.clock()
        by_id = {t.request_id: t for t in targets}

        def record(conn: Connection) -> None:
            conn.execute(_ANSWERED, [
                {"rid": o.request_id, "status": o.status, "error_cause": o.error_cause,
                 "attempts": o.attempts, "rtt_ms": o.rtt_ms,
                 "answered_at": done if o.status in ("acked", "naked") else None}
                for o in outcomes])
            conn.execute(_INSERT_EVENT, [
                {"event_id": str(uuid.uuid4()), "type": "coa.result", "at": done,
                 "published_at": None, "payload": {
                     "identity": t.identity, "nas": t.nas, "session": t.acct_session_id,
                     "kind": t.kind, "status": o.status, "error_cause": o.error_cause,
                     "trigger": trigger}}
                for o in outcomes if (t := by_id.get(o.request_id)) is not None])

        if outcomes:
            await self.db.run_write(record)
        return len(targets)

    async def run(self) -> None:
        resumed = False
        started = time.monotonic()
        try:
            await self.resume()
        except Exception:  # noqa: BLE001 - resumed again a minute later
            log.warning("coa.resume_failed", exc_info=True)
        while True:
            await asyncio.sleep(ENFORCE_POLL_SECONDS)
            try:
                await self.check()
                # Requests that were too young to resume at start are old enough now.
                if not resumed and time.monotonic() - started > RESUME_AFTER.total_seconds():
                    resumed = True
                    await self.resume()
            except Exception:  # noqa: BLE001 - keep enforcing after a failure
                log.warning("coa.enforce_failed", exc_info=True)


def _target(request_id: int, kind: str, address: str, row: Any) -> SessionTarget:
    """A request to send, from a row with the session's and its NAS's columns."""
    return SessionTarget(request_id, kind, row.identity, row.nas, address, row.secret.encode(),
                         row.vendor, row.acct_session_id, row.user_name, row.mac)


def _owners(conn: Connection, refs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(refs), 500):
        for kind, name, email in conn.execute(_OWNERS_OF, {"refs": refs[start : start + 500]}):
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
