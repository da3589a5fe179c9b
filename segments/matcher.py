"""The compiled matcher: a map turned into per-kind tables, built once per map version.

Theory of operation. A rule is a conjunction of tests on four things: the kind, the
scope labels it names, the owner team and the NAS site. Compiling does three things:

1. Rules are indexed by kind, so a lookup only walks the rules that could apply to
   the subject's kind (rules without a kind condition are in every list).
2. Each rule's conditions become a tuple of (label, mode, values) with equals folded
   into "in", so evaluation is a few set lookups and no attribute access on the model.
3. Lookups are memoized per kind on a *projection* of the subject: for each label the
   kind's rules mention, the value if some rule names that value, else "present" or
   "absent"; likewise for the team and the site. Two subjects with the same
   projection pass exactly the same tests, so they get the same answer. The number of
   projections is bounded by the map, not by the population (a label that is unique
   per identity projects to "present"), and the memo is capped at MAX_MEMO_ENTRIES
   anyway; past the cap, lookups evaluate the rules directly.

A matcher is immutable apart from its memo, so the service can swap in the matcher
of a new map version with one assignment and running lookups see either version
whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from segments.checks import check_segment_map
from segments.errors import SegmentInternalError, SegmentMapInvalid
from segments.limits import MAX_MEMO_ENTRIES
from segments.model import IDENTITY_KINDS, Assignment, Op, Rule, SegmentMap, Subject

_IN, _EXISTS, _ABSENT = 0, 1, 2
# The projection of a value no rule names; a value can never be this object.
_PRESENT = object()

_Test = tuple[str, int, frozenset[str]]
_CompiledRule = tuple[tuple[_Test, ...], frozenset[str] | None, frozenset[str] | None, Assignment]
_Key = tuple[tuple[object, ...], object, object]


@dataclass(slots=True)
class _KindTable:
    rules: tuple[_CompiledRule, ...]
    # For each label the rules test: (label, the values some rule names).
    projection: tuple[tuple[str, frozenset[str]], ...]
    teams: frozenset[str] | None  # None when no rule tests the team
    sites: frozenset[str] | None
    memo: dict[_Key, Assignment]


class CompiledMatcher:
    """Assigns a segment to a subject in microseconds. Build one per map version.

    Raises SegmentMapInvalid if the map has errors (a map built in code is checked
    here; a loaded one was checked already and passes again).
    """

    def __init__(self, segment_map: SegmentMap, *, memoize: bool = True) -> None:
        errors = check_segment_map(segment_map, warnings=False)
        if errors:
            raise SegmentMapInvalid(errors)
        self.segment_map = segment_map
        self._memoize = memoize
        by_name = {seg.name: seg for seg in segment_map.segments}
        fallback = segment_map.fallback.segment
        self.fallback = Assignment(None if fallback is None else by_name[fallback])
        compiled = [
            (rule, _compile_rule(rule, Assignment(by_name[rule.segment], index, rule.name)))
            for index, rule in enumerate(segment_map.rules)
        ]
        self._tables = {
            kind: _table([c for r, c in compiled if r.kinds is None or kind in r.kinds])
            for kind in IDENTITY_KINDS
        }
        # A kind the map has never heard of only meets rules that name no kind.
        self._other = _table([c for r, c in compiled if r.kinds is None])

    def assign(self, subject: Subject) -> Assignment:
        """The segment for one subject (its Assignment is shared, do not keep per-call state)."""
        return self.lookup(subject.kind, subject.scope, subject.owner_team, subject.nas_site)

    def lookup(
        self,
        kind: str,
        scope: Mapping[str, str],
        owner_team: str | None = None,
        nas_site: str | None = None,
    ) -> Assignment:
        """``assign`` without building a Subject, for the RADIUS path and bulk callers."""
        table = self._tables.get(kind, self._other)
        if not table.rules:
            return self.fallback
        get = scope.get
        labels = tuple(
            [
                None if (v := get(k)) is None else (v if v in named else _PRESENT)
                for k, named in table.projection
            ]
        )
        teams, sites = table.teams, table.sites
        key = (
            labels,
            None
            if teams is None or owner_team is None
            else (owner_team if owner_team in teams else _PRESENT),
            None
            if sites is None or nas_site is None
            else (nas_site if nas_site in sites else _PRESENT),
        )
        memo = table.memo
        found = memo.get(key)
        if found is not None:
            return found
        found = self._evaluate(table, scope, owner_team, nas_site)
        if self._memoize and len(memo) < MAX_MEMO_ENTRIES:
            memo[key] = found
        return found

    def assign_all(self, subjects: Iterable[Subject]) -> list[Assignment]:
        lookup = self.lookup
        return [lookup(s.kind, s.scope, s.owner_team, s.nas_site) for s in subjects]

    def _evaluate(
        self,
        table: _KindTable,
        scope: Mapping[str, str],
        owner_team: str | None,
        nas_site: str | None,
    ) -> Assignment:
        get = scope.get
        for tests, teams, sites, assignment in table.rules:
            if teams is not None and owner_team not in teams:
                continue
            if sites is not None and nas_site not in sites:
                continue
            for label, mode, values in tests:
                value = get(label)
                if mode == _IN:
                    if value not in values:
                        break
                elif (value is None) == (mode == _EXISTS):
                    break
            else:
                return assignment
        return self.fallback


def _compile_rule(rule: Rule, assignment: Assignment) -> _CompiledRule:
    tests: list[_Test] = []
    for match in rule.labels:
        if match.op in (Op.EQUALS, Op.IN):
            tests.append((match.key, _IN, match.values))
        elif match.op is Op.EXISTS:
            tests.append((match.key, _EXISTS, frozenset()))
        elif match.op is Op.ABSENT:
            tests.append((match.key, _ABSENT, frozenset()))
        else:  # pragma: no cover - Op is closed
            raise SegmentInternalError(f"unknown operator {match.op!r}")
    return tuple(tests), rule.owner_teams, rule.nas_sites, assignment


def _table(rules: list[_CompiledRule]) -> _KindTable:
    named: dict[str, set[str]] = {}
    teams: set[str] | None = None
    sites: set[str] | None = None
    for tests, rule_teams, rule_sites, _ in rules:
        for label, _, values in tests:
            named.setdefault(label, set()).update(values)
        if rule_teams is not None:
            teams = (teams or set()) | rule_teams
        if rule_sites is not None:
            sites = (sites or set()) | rule_sites
    return _KindTable(
        rules=tuple(rules),
        projection=tuple((label, frozenset(values)) for label, values in sorted(named.items())),
        teams=None if teams is None else frozenset(teams),
        sites=None if sites is None else frozenset(sites),
        memo={},
    )


def compile_map(segment_map: SegmentMap) -> CompiledMatcher:
    """Compile a map for lookups; raises SegmentMapInvalid if it has errors."""
    return CompiledMatcher(segment_map)
