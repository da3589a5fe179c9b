"""The RADIUS core's view of the inventory, kept in memory and written back in batches.

:class:`InventoryDirectory` is the service's :class:`AdmissionDirectory`:

- **lookups** (NAS by address, identity by MAC or certificate URI, revoked serials) are
  answered from memory, loaded from the database at start and reloaded when the event
  outbox shows a change to identities, owners, NAS clients or credentials — from this
  node or any other sharing the database (:meth:`watch`);
- the **VLAN** comes from the current segment map (:class:`SegmentService`);
- **admissions** and **unmanaged sightings** are queued and written in batches off the
  packet path (bounded queue, overflow counted); **accounting** is written before the
  Accounting-Response goes out (RFC 2866 §2), as the core requires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac.domain import IdentityKind, IdentityRef, IdentityStatus, OwnerStatus
from nhi_nac.events import ADMISSIONS_EVENT
from nhi_nac.outbox import add_event
from nhi_nac.radius.decision import AdmissionDecision, Verdict
from nhi_nac.radius.directory import (
    AccountingRecord,
    AcctStatus,
    AdmissionIdentity,
    MemoryDirectory,
    NasClient,
    UnmanagedSighting,
    nas_network,
)
from nhi_nac.segment_service import SegmentService
from nhi_nac.storage import queries
from nhi_nac.storage.db import Database
from nhi_nac.storage.models import (
    Admission,
    Credential,
    DiscoveredDevice,
    Identity,
    IdentityMac,
    OutboxEvent,
    Owner,
    RadiusSession,
)
from nhi_nac.storage.models import (
    NasClient as NasRow,
)

log = structlog.get_logger("nhi_nac.admission")

#: Admissions and sightings waiting to be written; beyond this they are dropped and counted.
MAX_QUEUED_RECORDS = 50_000
#: (identity, NAS site) -> VLAN results kept between changes, at most.
MAX_VLAN_MEMO = 200_000
#: Seconds between batch writes and between checks for inventory changes.
WATCH_SECONDS = 0.5
#: Seconds between deletions of admissions older than the retention period.
PRUNE_SECONDS = 3600.0
#: Event types after which the in-memory inventory is reloaded.
RELOAD_EVENT_PREFIXES = queries.INVENTORY_EVENT_PREFIXES
#: Seconds: an identity's last_seen_at is rewritten at most this often per node.
LAST_SEEN_RESOLUTION = 60.0
#: Identities whose last write of last_seen_at is remembered; beyond this, forgotten.
MAX_LAST_SEEN_ENTRIES = 200_000

#: Decisions per ``admissions.recorded`` outbox event (nhi_nac.events.ADMISSIONS_EVENT):
#: one outbox row per batch, not per decision. On a busy NAS the event rows, their unique
#: ids and their publication marks cost more than the admissions themselves; the console
#: and MQTT still show one item per decision (nhi_nac.events.decision_events).
MAX_ADMISSIONS_PER_EVENT = 1000

# Statements built once (executemany with one parameter dict per row).
ADMISSION_INSERT = insert(Admission.__table__)  # type: ignore[arg-type]
EVENT_INSERT = insert(OutboxEvent.__table__)  # type: ignore[arg-type]
TOUCH_LAST_SEEN = (
    update(Identity.__table__)  # type: ignore[arg-type]
    .where(Identity.__table__.c.kind == bindparam("k"), Identity.__table__.c.name == bindparam("n"))
    .values(last_seen_at=bindparam("at"))
)


def _event_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, from one read of the OS CSPRNG (RFC 9562
    §5.4: version nibble 4, variant bits 10)."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80
    h = raw.hex()
    return [f"{h[j:j + 8]}-{h[j + 8:j + 12]}-{h[j + 12:j + 16]}-{h[j + 16:j + 20]}-"
            f"{h[j + 20:j + 32]}" for j in range(0, 32 * n, 32)]


_SQLITE_ADMISSION = ("INSERT INTO admissions (at, nas, port, mac, method, identity, decision, "
                     "vlan, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_EVENT = ("INSERT INTO event_outbox (event_id, type, at, payload, published_at) "
                 "VALUES (?, ?, ?, ?, NULL)")
_SQLITE_LAST_SEEN = "UPDATE identities SET last_seen_at = ? WHERE kind = ? AND name = ?"


def _sqlite_write(conn: Connection, rows: list[tuple[Any, ...]], events: list[tuple[Any, ...]],
                  seen: list[tuple[Any, ...]]) -> None:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(_SQLITE_ADMISSION, rows)
        cursor.executemany(_SQLITE_EVENT, events)
        if seen:
            cursor.executemany(_SQLITE_LAST_SEEN, seen)
    finally:
        cursor.close()


def _chunks(n: int) -> int:
    """How many ``admissions.recorded`` events carry ``n`` decisions."""
    return -(-n // MAX_ADMISSIONS_PER_EVENT)


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


@dataclass(frozen=True)
class _Loaded:
    nas: list[NasClient]
    identities: list[AdmissionIdentity]
    teams: dict[str, str]
    revoked: set[int]


async def load_inventory(s: AsyncSession) -> _Loaded:
    nas = [NasClient(r.name, nas_network(r.address), r.secret.encode(), r.site, r.vendor,
                     r.require_message_authenticator)
           for r in (await s.scalars(select(NasRow))).all()]
    macs: dict[int, set[str]] = {}
    for mac, iid in (await s.execute(select(IdentityMac.mac, IdentityMac.identity_id))).all():
        macs.setdefault(iid, set()).add(mac)
    identities: list[AdmissionIdentity] = []
    teams: dict[str, str] = {}
    for iid, kind, name, status, scope, allow_mab, email, ostatus, team in (await s.execute(
            select(Identity.id, Identity.kind, Identity.name, Identity.status, Identity.scope,
                   Identity.allow_mab, Owner.email, Owner.status, Owner.team)
            .join(Owner, Owner.id == Identity.owner_id))).all():
        # Retired identities stay in memory: their MAC or certificate must be rejected as
        # retired, not treated as an unknown device and quarantined.
        ref = IdentityRef(IdentityKind(kind), name)
        identities.append(AdmissionIdentity(
            ref=ref, status=IdentityStatus(status), owner=email,
            owner_status=OwnerStatus(ostatus), scope=tuple(sorted(scope.items())),
            macs=frozenset(macs.get(iid, ())), allow_mab=allow_mab))
        if team:
            teams[str(ref)] = team
    # As the CRL lists them: a certificate that expired before that is refused as expired
    # before revocation is looked at, so the set need not keep it.
    revoked = {int(str(serial), 16) for serial in (await s.scalars(
        select(Credential.serial).where(queries.LISTED_REVOKED, Credential.serial.is_not(None)),
        queries.listed_revoked_params(dt.datetime.now(dt.UTC)))).all()}
    return _Loaded(nas, identities, teams, revoked)


#: Distinct decision texts kept by :class:`_DecisionTexts`; beyond this, forgotten.
MAX_DECISION_TEXTS = 16384


class _DecisionTexts:
    """The stored text forms of admissions, memoised.

    ``times``: a decision time as the database text and the event's ISO form; the
    calendar part is formatted once per second. ``of``: the identity ref, method and
    verdict, the reasons column's JSON, and the decision's event item as JSON without its
    ``"at"`` and ``"port"`` values, per distinct (verdict, identity, method, NAS, MAC,
    VLAN, reasons, failure): a device keeps its MAC and decision from port to port. With
    the time and :meth:`port` the pieces join into exactly what ``json.dumps`` gives for
    the whole item.
    """

    def __init__(self) -> None:
        self._second: dt.datetime | None = None
        self._prefix = ("", "")
        self._texts: dict[tuple[Any, ...], tuple[str, str, str, str, str, str]] = {}
        self._ports: dict[str | None, str] = {}

    def times(self, seconds: float) -> tuple[str, str]:
        at = dt.datetime.fromtimestamp(seconds, dt.UTC)
        whole = at.replace(microsecond=0)
        if whole != self._second:
            self._second = whole
            self._prefix = (whole.strftime("%Y-%m-%d %H:%M:%S"), whole.isoformat())
        db_text, iso = self._prefix
        return f"{db_text}.{at.microsecond:06d}", iso

    def of(self, d: AdmissionDecision) -> tuple[str, str, str, str, str, str]:
        """(ref, method, verdict, reasons JSON, item head, item tail)."""
        ident = d.identity
        key = (d.verdict, ident.kind if ident else None, ident.name if ident else None,
               d.method, d.nas_name, d.mac, d.vlan, d.reasons, d.failure)
        found = self._texts.get(key)
        if found is None:
            ref = str(ident) if ident else ""
            reasons = list(d.reasons)
            item = json.dumps({
                "at": "", "decision": d.verdict.value, "identity": ref,
                "method": d.method.value, "nas": d.nas_name, "port": _PORT_MARK,
                "mac": d.mac, "vlan": d.vlan, "reasons": reasons, "failure": d.failure})
            head, _, tail = item[len('{"at": "", '):].partition(_PORT_MARK_JSON)
            found = (ref, d.method.value, d.verdict.value,
                     json.dumps({"reasons": reasons, "failure": d.failure}), head, tail)
            if len(self._texts) >= MAX_DECISION_TEXTS:
                self._texts.clear()
            self._texts[key] = found
        return found

    def port(self, port: str | None) -> str:
        """The JSON of a NAS port (there are few per NAS)."""
        text = self._ports.get(port)
        if text is None:
            if len(self._ports) >= MAX_DECISION_TEXTS:
                self._ports.clear()
            text = self._ports[port] = json.dumps(port)
        return text


#: Stands for the port while an event item is serialised once for many ports.
_PORT_MARK = "\x00port\x00"
_PORT_MARK_JSON = json.dumps(_PORT_MARK)


class InventoryDirectory(MemoryDirectory):
    """A :class:`MemoryDirectory` filled from the database and writing results back."""

    def __init__(self, db: Database, segments: SegmentService, trust_domain: str,
                 retention: dt.timedelta = dt.timedelta(days=30)) -> None:
        super().__init__(trust_domain=trust_domain)
        self.db = db
        self.segment_service = segments
        self.retention = retention
        self.teams: dict[str, str] = {}
        self._vlans: dict[tuple[int, str], int | None] = {}
        self._vlans_stamp: tuple[int | None, int, int] = (None, 0, 0)
        self.counters: Counter[str] = Counter()
        self._queue: list[tuple[str, Any]] = []
        self._last_event = 0
        #: identity ref → decided_at of the last_seen_at this node last wrote.
        self._last_seen: dict[str, float] = {}
        self._texts = _DecisionTexts()
        # structlog's module-level logger is a lazy proxy that binds again on every call;
        # bound once logging is configured (start), it costs nothing at warning level.
        self._log: Any = log
        self._log_decisions = True

    # -- loading ---------------------------------------------------------------------

    async def reload(self) -> None:
        async with self.db.read() as s:
            loaded = await load_inventory(s)
        self.replace_nas_clients(loaded.nas)
        self.replace_identities(loaded.identities)
        self.teams = loaded.teams
        self.revoked_serials = loaded.revoked
        self.counters["reloads"] += 1

    async def start(self) -> None:
        self._log = log.bind()
        self._log_decisions = self._log.is_enabled_for(logging.INFO)
        self._last_event = await self.db.run_read(queries.newest_event)
        await self.reload()

    async def check_for_changes(self) -> bool:
        """Reload if the outbox shows an inventory change since the last look.

        Only the newest id and whether an inventory event lies in between are read:
        admission events (most of the outbox under load) are never fetched.
        """
        last = self._last_event
        newest, changed = await self.db.run_read(
            lambda conn: queries.inventory_changed_since(conn, last))
        if newest <= last:
            return False
        self._last_event = newest
        if changed:
            await self.reload()
            return True
        return False

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                await self.check_for_changes()
                await self.flush()
                if loop.time() >= next_prune:
                    await self.prune(dt.datetime.now(dt.UTC))
                    next_prune = loop.time() + PRUNE_SECONDS
            except Exception:  # noqa: BLE001 - keep serving from what is in memory
                self.counters["watch_errors"] += 1
                log.warning("admission.watch_failed", exc_info=True)

    # -- segment ---------------------------------------------------------------------

    def vlan_for(self, identity: AdmissionIdentity, nas: NasClient) -> int | None:
        # Memoised per (identity, NAS site) for identities without an overlay; cleared
        # on every reload and segment-map or overlay change (forget_vlans).
        key = (id(identity), nas.site)  # identities live until the reload that clears it
        segments = self.segment_service
        stamp = (segments.version, id(segments.matcher), id(segments.overlays))
        if stamp != self._vlans_stamp:  # a map or overlay change this node made itself
            self._vlans, self._vlans_stamp = {}, stamp
        memo = self._vlans
        if key in memo:
            return memo[key]
        ref = str(identity.ref)
        # lookup_for: the identity's quarantine and active grants count.
        hit = segments.lookup_for(ref, identity.ref.kind.value, dict(identity.scope),
                                  self.teams.get(ref), nas.site or None)
        vlan = super().vlan_for(identity, nas) if hit is None else hit.vlan
        if ref not in segments.overlays and hit is not None:
            if len(memo) >= MAX_VLAN_MEMO:
                memo.clear()
            memo[key] = vlan
        return vlan

    def forget_vlans(self) -> None:
        self._vlans = {}

    def replace_identities(self, identities: Iterable[AdmissionIdentity]) -> None:  # noqa: D102
        super().replace_identities(identities)
        self.forget_vlans()

    # -- sinks -----------------------------------------------------------------------

    def _enqueue(self, kind: str, item: Any) -> None:
        if len(self._queue) >= MAX_QUEUED_RECORDS:
            self.counters[f"dropped.{kind}"] += 1
            return
        self._queue.append((kind, item))

    def record_admission(self, decision: AdmissionDecision) -> None:
        d = decision
        if self._log_decisions:  # the arguments alone cost microseconds per packet
            self._log.info("radius.decision", verdict=d.verdict.value, method=d.method.value,
                           identity=str(d.identity) if d.identity else None, nas=d.nas_name,
                           port=d.nas_port, mac=d.mac, vlan=d.vlan, reasons=list(d.reasons),
                           failure=d.failure)
        self._enqueue("admission", decision)

    def record_unmanaged(self, sighting: UnmanagedSighting) -> None:
        self._enqueue("unmanaged", sighting)

    async def flush(self) -> int:
        """Write queued admissions and sightings in one transaction.

        Admissions, their outbox events and the last-seen updates go in as three
        executemany statements (SQLAlchemy Core, no ORM unit of work); a sighting needs
        a read first and is rare, so it keeps the ORM path.
        """
        if not self._queue:
            return 0
        batch, self._queue = self._queue, []
        decisions = [item for kind, item in batch if kind == "admission"]
        sightings = [item for kind, item in batch if kind == "unmanaged"]
        if decisions and self.db.is_sqlite:
            # The hot path of a busy NAS: on SQLite the three executemany go to the driver
            # directly, in one worker-thread transaction (no per-row SQLAlchemy bind
            # processing, no aiosqlite hops). Same columns, same stored formats.
            params = self._sqlite_params(decisions)
            await self.db.run_write(lambda conn: _sqlite_write(conn, *params))
            self.counters["last_seen_updates"] += len(params[2])
            decisions = []
        rows, events, seen = self._admission_rows(decisions)
        if rows or sightings:
            async with self.db.transaction() as s:
                if rows:
                    conn = await s.connection()
                    await conn.execute(ADMISSION_INSERT, rows)
                    await conn.execute(EVENT_INSERT, events)
                    if seen:
                        await conn.execute(TOUCH_LAST_SEEN, seen)
                for sighting in sightings:
                    await _store_sighting(s, sighting)
        self.counters["flushed"] += len(batch)
        self.counters["last_seen_updates"] += len(seen)
        return len(batch)

    def _sqlite_params(self, decisions: list[AdmissionDecision]) -> tuple[
            list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """:meth:`_admission_rows` as driver parameters for SQLite, each value formatted
        as SQLAlchemy stores it (timestamps as text, JSON as text).

        A busy NAS repeats itself: the same devices get the same decision again and
        again. What does not change between two such decisions (the reasons column, an
        event item but for its time) is serialised once and reused
        (:class:`_DecisionTexts`); the time is formatted per second, plus microseconds.
        """
        rows: list[tuple[Any, ...]] = []
        items: list[str] = []
        touched: dict[tuple[str, str], str] = {}
        texts = self._texts
        for d in decisions:
            at_text, at_iso = texts.times(d.decided_at)
            ref, method, verdict, reasons, head, tail = texts.of(d)
            rows.append((at_text, d.nas_name, d.nas_port or "", d.mac or "", method, ref,
                         verdict, d.vlan, reasons))
            items.append('{"at": "' + at_iso + '", ' + head + texts.port(d.nas_port) + tail)
            ident = d.identity
            if (ident is not None and d.verdict is Verdict.ACCEPT
                    and self._seen_is_stale(ref, d.decided_at)):
                touched[(ident.kind.value, ident.name)] = at_text
        events = []
        for start, event_id in zip(range(0, len(rows), MAX_ADMISSIONS_PER_EVENT),
                                   _event_ids(_chunks(len(rows))), strict=True):
            end = start + MAX_ADMISSIONS_PER_EVENT
            events.append((event_id, ADMISSIONS_EVENT, rows[min(end, len(rows)) - 1][0],
                           '{"admissions": [' + ", ".join(items[start:end]) + "]}"))
        return rows, events, [(at, k, n) for (k, n), at in touched.items()]

    def _admission_rows(self, decisions: list[AdmissionDecision]) -> tuple[
            list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Parameters of the three statements: a row per decision, an
        ``admissions.recorded`` event per MAX_ADMISSIONS_PER_EVENT decisions, and the
        last-seen updates."""
        rows: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        touched: dict[tuple[str, str], dt.datetime] = {}
        for d in decisions:
            at = _ts(d.decided_at)
            ref = str(d.identity) if d.identity else ""
            reasons = list(d.reasons)
            verdict, method = d.verdict.value, d.method.value
            rows.append({"at": at, "nas": d.nas_name, "port": d.nas_port or "",
                         "mac": d.mac or "", "method": method, "identity": ref,
                         "decision": verdict, "vlan": d.vlan,
                         "reasons": {"reasons": reasons, "failure": d.failure}})
            items.append({"at": at.isoformat(timespec="seconds"), "decision": verdict,
                          "identity": ref, "method": method, "nas": d.nas_name,
                          "port": d.nas_port, "mac": d.mac, "vlan": d.vlan,
                          "reasons": reasons, "failure": d.failure})
            if d.accepted and d.identity is not None and self._seen_is_stale(ref, d.decided_at):
                touched[(d.identity.kind.value, d.identity.name)] = at
        events = [{"event_id": event_id, "type": ADMISSIONS_EVENT,
                   "at": rows[min(start + MAX_ADMISSIONS_PER_EVENT, len(rows)) - 1]["at"],
                   "published_at": None,
                   "payload": {"admissions": items[start:start + MAX_ADMISSIONS_PER_EVENT]}}
                  for start, event_id in zip(range(0, len(rows), MAX_ADMISSIONS_PER_EVENT),
                                             _event_ids(_chunks(len(rows))), strict=True)]
        seen = [{"k": k, "n": n, "at": at} for (k, n), at in touched.items()]
        return rows, events, seen

    def _seen_is_stale(self, ref: str, at: float) -> bool:
        """Whether the identity's stored last_seen_at is older than LAST_SEEN_RESOLUTION
        (as far as this node wrote it); if so, remember the new time."""
        written = self._last_seen.get(ref)
        if written is not None and at - written < LAST_SEEN_RESOLUTION:
            return False
        if len(self._last_seen) >= MAX_LAST_SEEN_ENTRIES:
            self._last_seen.clear()
        self._last_seen[ref] = at
        return True

    async def prune(self, now: dt.datetime) -> None:
        async with self.db.transaction() as s:
            await s.execute(delete(Admission).where(Admission.at < now - self.retention))

    async def record_accounting(self, record: AccountingRecord) -> None:
        async with self.db.transaction() as s:
            await _store_accounting(s, record, self)


async def _store_sighting(s: AsyncSession, u: UnmanagedSighting) -> None:
    at = _ts(u.seen_at)
    row = await s.get(DiscoveredDevice, u.mac)
    if row is None:
        s.add(DiscoveredDevice(mac=u.mac, first_seen=at, last_seen=at, nas=u.nas_name,
                               port=u.nas_port or "", count=1))
        await s.flush()
        add_event(s, "device.discovered", {"mac": u.mac, "nas": u.nas_name,
                                           "port": u.nas_port}, at)
    else:
        row.last_seen, row.nas, row.port, row.count = at, u.nas_name, u.nas_port or "", \
            row.count + 1


async def _store_accounting(s: AsyncSession, r: AccountingRecord,
                            directory: InventoryDirectory) -> None:
    at = _ts(r.received_at)
    if r.status in (AcctStatus.ACCOUNTING_ON, AcctStatus.ACCOUNTING_OFF):
        # The NAS rebooted or stops accounting: none of its sessions is live any more.
        await s.execute(update(RadiusSession).where(
            RadiusSession.nas == r.nas_name, RadiusSession.status == "active")
            .values(status="stopped", stopped_at=at, updated_at=at,
                    terminate_cause="nas-reboot"))
        return
    ident = r.identity
    if ident is None and r.mac:
        known = directory.identity_by_mac(r.mac)
        ident = known.ref if known else None
    ref = str(ident) if ident else ""
    row = await s.scalar(select(RadiusSession).where(
        RadiusSession.nas == r.nas_name, RadiusSession.acct_session_id == r.session_id))
    if row is None:
        row = RadiusSession(nas=r.nas_name, nas_address=r.nas_address,
                            acct_session_id=r.session_id, identity=ref,
                            user_name=r.user_name or "", mac=r.mac or "",
                            port=r.nas_port_id or (str(r.nas_port) if r.nas_port else ""),
                            vlan=r.vlan, status="active", started_at=at, updated_at=at)
        s.add(row)
        add_event(s, "session.started", {"nas": r.nas_name, "session": r.session_id,
                                         "identity": ref, "mac": r.mac, "vlan": r.vlan}, at)
    row.updated_at = at
    if ref and not row.identity:
        row.identity = ref
    if r.vlan is not None:
        if row.vlan is not None and row.vlan != r.vlan:
            # The NAS moved a live session (Interim-Update): drift is judged now, not at
            # the next scheduled scan (governance rescans on session.* events).
            add_event(s, "session.vlan_changed", {
                "nas": r.nas_name, "session": r.session_id, "identity": row.identity or ref,
                "mac": r.mac, "from": row.vlan, "to": r.vlan}, at)
        row.vlan = r.vlan
    if r.input_octets is not None:
        row.input_octets = r.input_octets
    if r.output_octets is not None:
        row.output_octets = r.output_octets
    if r.status is AcctStatus.STOP and row.status != "stopped":
        row.status, row.stopped_at = "stopped", at
        row.terminate_cause = str(r.terminate_cause) if r.terminate_cause else None
        add_event(s, "session.stopped", {"nas": r.nas_name, "session": r.session_id,
                                         "identity": row.identity}, at)
    if ident is not None:
        await s.execute(update(Identity).where(
            Identity.kind == ident.kind.value, Identity.name == ident.name)
            .values(last_seen_at=at))
