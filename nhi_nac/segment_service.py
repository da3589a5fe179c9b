"""Segment maps in service: versions in the database, preview, apply, rollback, lookup.

The ``segments`` library parses, checks, compiles and diffs maps; this module stores
every applied version (author, time, comment, diff to the previous one), computes the
preview against the live inventory and the sessions known from accounting, and keeps
the compiled matcher of the current version for the RADIUS path. A node notices a
new version through :meth:`SegmentService.refresh` (driven by the
``segments.applied`` event and a periodic check), so no restart is needed.

An invalid map is refused whole with every problem (file, line, column) and the
current map stays in force.

On top of the map, per identity, two *overlays* change what the documented scope
selects, without changing the scope itself:

- **quarantine**: a quarantined identity gets the map's fallback (the quarantine
  segment, or reject when the fallback is reject), whatever its scope;
- **grants**: an agent's active, time-boxed grants add (or override) scope labels
  until they expire; an expired grant stops counting at its expiry, even before the
  database says so.

:meth:`SegmentService.refresh_overlays` reloads them (the serve loop calls it every
second); :meth:`SegmentService.lookup_for` is the lookup that honours them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

import segments
from nhi_nac import audit
from nhi_nac.errors import InvalidInput, NotFound
from nhi_nac.inventory import Inventory
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import (
    AgentGrant,
    Identity,
    Owner,
    RadiusSession,
    SegmentMapVersion,
)

#: Largest segment-map text accepted, in bytes.
MAX_MAP_BYTES = 1_048_576
STARTER_MAP = "starter.yaml"


def starter_map_text() -> str:
    return (resources.files("segments") / "examples" / STARTER_MAP).read_text()


class SegmentMapRefused(InvalidInput):
    """The map has errors; nothing was applied. ``problems`` has each with its line."""

    def __init__(self, problems: tuple[segments.Problem, ...]) -> None:
        errors = [p for p in problems if p.is_error]
        first = "; ".join(str(p) for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"segment map refused, the current map stays in force: {first}{more}")
        self.problems = problems

    def problem_extra(self) -> dict[str, object]:
        return {"problems": [problem_json(p) for p in self.problems]}


def problem_json(p: segments.Problem) -> dict[str, object]:
    return {"file": p.file, "line": p.line, "column": p.column,
            "severity": p.severity.value, "message": p.message}


@dataclass(frozen=True)
class Preview:
    validation: segments.Validation
    diff: segments.AssignmentDiff | None
    map_diff: tuple[str, ...]
    sessions_per_nas: dict[str, int]
    current_version: int | None

    def lines(self) -> list[str]:
        out = [str(p) for p in self.validation.problems]
        if self.diff is None:
            return out
        out += [f"map change: {line}" for line in self.map_diff] or ["map change: none"]
        out += self.diff.summary()
        if self.sessions_per_nas:
            out += [f"active sessions touched on NAS {nas}: {n}"
                    for nas, n in sorted(self.sessions_per_nas.items())]
        else:
            out.append("active sessions touched: none")
        return out


@dataclass(frozen=True)
class VersionInfo:
    version: int
    applied_at: dt.datetime
    author: str
    comment: str
    summary: dict[str, Any]
    diff: str


@dataclass(frozen=True)
class Overlay:
    """What changes an identity's segment besides its documented scope."""

    quarantined: bool = False
    #: (key, value, expiry as a UNIX timestamp) of each active grant.
    grants: tuple[tuple[str, str, float], ...] = ()

    def scope(self, scope: Mapping[str, str], now: float) -> Mapping[str, str]:
        live = [(k, v) for k, v, until in self.grants if until > now]
        if not live:
            return scope
        return {**scope, **dict(live)}


_QUARANTINED = select(Identity.kind, Identity.name).where(Identity.quarantined_at.is_not(None))
_ACTIVE_GRANTS = (select(Identity.kind, Identity.name, AgentGrant.key, AgentGrant.value,
                         AgentGrant.expires_at)
                  .join(Identity, Identity.id == AgentGrant.identity_id)
                  .where(AgentGrant.status == "active").order_by(AgentGrant.id))
_LATEST_VERSION = select(func.max(SegmentMapVersion.version))


def _as_utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


class SegmentService:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.version: int | None = None
        self.map: segments.SegmentMap | None = None
        self.matcher: segments.CompiledMatcher | None = None
        self.overlays: dict[str, Overlay] = {}

    async def refresh_overlays(self) -> bool:
        """Reload quarantines and active grants; True if they changed. Every node asks
        every second: two prebuilt Core reads by index (the partial index of quarantined
        identities, active grants), one hop."""
        def look(conn: Connection) -> tuple[Sequence[Any], Sequence[Any]]:
            return conn.execute(_QUARANTINED).all(), conn.execute(_ACTIVE_GRANTS).all()

        quarantined, active = await self.inventory.db.run_read(look)
        found: dict[str, Overlay] = {f"{kind}/{name}": Overlay(quarantined=True)
                                     for kind, name in quarantined}
        grants: dict[str, list[tuple[str, str, float]]] = {}
        for kind, name, key, value, until in active:
            if until is not None:
                grants.setdefault(f"{kind}/{name}", []).append(
                    (key, value, _as_utc(until).timestamp()))
        for ref, items in grants.items():
            found[ref] = Overlay(ref in found, tuple(items))
        if found == self.overlays:
            return False
        self.overlays = found
        return True

    def lookup_for(self, ref: str, kind: str, scope: Mapping[str, str],
                   owner_team: str | None, nas_site: str | None) -> segments.Assignment | None:
        """:meth:`lookup` for one identity, honouring its quarantine and grants."""
        overlay = self.overlays.get(ref)
        if overlay is None:
            return self.lookup(kind, scope, owner_team, nas_site)
        if overlay.quarantined:
            return None if self.matcher is None else self.matcher.fallback
        return self.lookup(kind, overlay.scope(scope, time.time()), owner_team, nas_site)

    def effective_scope(self, ref: str, scope: Mapping[str, str]) -> Mapping[str, str]:
        overlay = self.overlays.get(ref)
        return scope if overlay is None else overlay.scope(scope, time.time())

    # -- the current map ------------------------------------------------------------

    async def refresh(self) -> bool:
        """Load the newest version if it is not the one in memory; True if it changed."""
        latest = await self.inventory.db.run_read(
            lambda conn: conn.execute(_LATEST_VERSION).scalar())
        if latest is None or latest == self.version:
            return False
        async with self.inventory.db.read() as s:
            row = await s.get(SegmentMapVersion, latest)
        assert row is not None
        loaded = segments.load_segment_map(row.text, f"version {row.version}")
        self.matcher = segments.CompiledMatcher(loaded)
        self.map, self.version = loaded, row.version
        return True

    def lookup(self, kind: str, scope: Mapping[str, str], owner_team: str | None,
               nas_site: str | None) -> segments.Assignment | None:
        """The segment for a request, or None when no map has been applied yet."""
        if self.matcher is None:
            return None
        return self.matcher.lookup(kind, scope, owner_team, nas_site)

    def vlan_of(self, ref: str, kind: str, scope: Mapping[str, str], owner_team: str | None,
                nas_site: str | None) -> int | None:
        """The VLAN an identity should be on now (None: rejected, or no map) — for drift
        detection; quarantine and grants count."""
        hit = self.lookup_for(ref, kind, scope, owner_team, nas_site)
        return None if hit is None else hit.vlan

    # -- validate / preview / apply --------------------------------------------------

    def _check_size(self, text: str) -> None:
        if len(text.encode()) > MAX_MAP_BYTES:
            raise InvalidInput(f"segment map larger than {MAX_MAP_BYTES} bytes")

    async def _population(self, s: AsyncSession) -> list[tuple[str, segments.Subject]]:
        rows = (await s.execute(
            select(Identity.kind, Identity.name, Identity.scope, Owner.team)
            .join(Owner, Owner.id == Identity.owner_id).where(Identity.status == "active")
        )).all()
        return [(f"{k}/{n}", segments.Subject(k, scope, team or None))
                for k, n, scope, team in rows]

    async def validate(self, text: str, filename: str) -> segments.Validation:
        """Problems of the text, plus a warning when active identities fall to the fallback."""
        self._check_size(text)
        result = segments.validate_segment_map(text, filename)
        if result.map is None:
            return result
        async with self.inventory.db.read() as s:
            population = await self._population(s)
        extra = tuple(segments.fallback_warnings(result.map, population))
        return segments.Validation(result.map, tuple(sorted(result.problems + extra)))

    async def preview(self, text: str, filename: str) -> Preview:
        self._check_size(text)
        validation = segments.validate_segment_map(text, filename)
        new_map = validation.map
        if new_map is None:
            return Preview(validation, None, (), {}, self.version)
        async with self.inventory.db.read() as s:
            current = await self._current(s)
            population = await self._population(s)
            old = current[1] if current else _reject_all(new_map)
            diff = segments.diff_assignments(old, new_map, population)
            per_nas = await _sessions_touched(s, diff.moved)
        extra = tuple(segments.fallback_warnings(new_map, population))
        validation = segments.Validation(new_map, tuple(sorted(validation.problems + extra)))
        map_diff = tuple(segments.diff_maps(old, new_map).summary()) if current else (
            "first map",)
        return Preview(validation, diff, map_diff, per_nas, current[0] if current else None)

    async def apply(self, text: str, filename: str, *, author: str,
                    comment: str = "") -> VersionInfo:
        """Store the map as the next version; refuse it whole if it has any error."""
        self._check_size(text)
        validation = segments.validate_segment_map(text, filename)
        if validation.map is None:
            raise SegmentMapRefused(validation.problems)
        new_map = validation.map
        now = self.inventory.clock()
        async with self.inventory.db.transaction() as s:
            current = await self._current(s, lock=True)
            version = (current[0] if current else 0) + 1
            population = await self._population(s)
            if current:
                diff = segments.diff_assignments(current[1], new_map, population)
                change = segments.diff_maps(current[1], new_map).summary()
                text_diff = segments.text_diff(current[1], new_map, f"version {current[0]}",
                                               f"version {version}")
            else:
                diff = segments.diff_assignments(_reject_all(new_map), new_map, population)
                change, text_diff = ["first map"], ""
            summary = {"moved": len(diff.moved), "total": diff.total,
                       "to_fallback": diff.to_fallback, "changes": change,
                       "moved_identities": sorted(diff.moved)[:10_000]}
            row = SegmentMapVersion(version=version, applied_at=now, author=author,
                                    comment=comment or new_map.metadata.comment,
                                    text=segments.dump_segment_map(new_map), diff=text_diff,
                                    summary=summary)
            s.add(row)
            await audit.append(s, actor=author, action="segments.apply",
                               target=f"segment-map/{version}",
                               before={"version": current[0] if current else None},
                               after={"version": version, "changes": change}, now=now)
            add_event(s, "segments.applied", {"version": version, "author": author,
                                              "moved": sorted(diff.moved)[:10_000],
                                              "moved_count": len(diff.moved)}, now)
        await self.refresh()
        return _version_info(row)

    async def rollback(self, version: int, *, author: str) -> VersionInfo:
        async with self.inventory.db.read() as s:
            row = await s.get(SegmentMapVersion, version)
        if row is None:
            raise NotFound(f"no segment map version {version}")
        return await self.apply(row.text, f"version {version}", author=author,
                                comment=f"rollback to version {version}")

    async def history(self) -> list[VersionInfo]:
        async with self.inventory.db.read() as s:
            rows = (await s.scalars(select(SegmentMapVersion)
                                    .order_by(SegmentMapVersion.version.desc()))).all()
        return [_version_info(r) for r in rows]

    async def current_text(self) -> tuple[int, str] | None:
        async with self.inventory.db.read() as s:
            current = await self._current_row(s)
        return None if current is None else (current.version, current.text)

    async def identities_per_segment(self) -> dict[str, int]:
        await self.refresh()
        if self.matcher is None:
            return {}
        counts: dict[str, int] = {}
        async with self.inventory.db.read() as s:
            population = await self._population(s)
        for _, subject in population:
            a = self.matcher.assign(subject)
            name = a.segment.name if a.segment else "(reject)"
            counts[name] = counts.get(name, 0) + 1
        return counts

    async def _current_row(self, s: AsyncSession, lock: bool = False) -> SegmentMapVersion | None:
        q = select(SegmentMapVersion).order_by(SegmentMapVersion.version.desc()).limit(1)
        if lock:
            q = q.with_for_update()
        return await s.scalar(q)

    async def _current(self, s: AsyncSession,
                       lock: bool = False) -> tuple[int, segments.SegmentMap] | None:
        row = await self._current_row(s, lock)
        if row is None:
            return None
        return row.version, segments.load_segment_map(row.text, f"version {row.version}")


def _reject_all(like: segments.SegmentMap) -> segments.SegmentMap:
    """The map before any map: every identity rejected (what RADIUS does with none)."""
    return segments.SegmentMap(segments=like.segments, rules=(), fallback=segments.Fallback())


async def _sessions_touched(s: AsyncSession, moved: frozenset[str]) -> dict[str, int]:
    if not moved:
        return {}
    counts: dict[str, int] = {}
    ids = sorted(moved)
    for chunk in _chunks(ids, 500):
        for nas, n in (await s.execute(
                select(RadiusSession.nas, func.count()).where(
                    RadiusSession.status == "active", RadiusSession.identity.in_(chunk))
                .group_by(RadiusSession.nas))).all():
            counts[nas] = counts.get(nas, 0) + int(n)
    return counts


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _version_info(r: SegmentMapVersion) -> VersionInfo:
    return VersionInfo(r.version, r.applied_at, r.author, r.comment, dict(r.summary), r.diff)
