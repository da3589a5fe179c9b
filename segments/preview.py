"""Who a map affects, before it is applied: moves between VLANs and fallbacks.

The population is any iterable of ``(identity_id, Subject)``; the service streams it
from the inventory (active identities only; ``nas_site`` None unless it is assigning
for a known session). Counts are always complete; example lists are bounded. The
set of identity ids that move is complete too: the service joins it with live
sessions to count, per NAS, the sessions a change would touch (RFC 5176 CoA).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from segments.errors import Problem, Severity
from segments.limits import DEFAULT_MAX_EXAMPLES
from segments.matcher import CompiledMatcher
from segments.model import Assignment, SegmentMap, Subject

Population = Iterable[tuple[str, Subject]]


@dataclass(frozen=True, slots=True)
class Move:
    identity_id: str
    old: Assignment
    new: Assignment


@dataclass(frozen=True, slots=True)
class AssignmentDiff:
    """What applying ``new`` in place of ``old`` does to a population.

    An identity *moves* when what its NAS is told changes: VLAN, Filter-Id, ACL, or
    accept versus reject (``Assignment.outcome``). A renamed segment with the same
    VLAN and attributes is not a move, and needs no CoA.
    """

    total: int
    moved: frozenset[str]
    #: (old VLAN, new VLAN) -> identities, over moves; None is Access-Reject.
    transitions: dict[tuple[int | None, int | None], int]
    examples: tuple[Move, ...]
    #: Identities the new map sends to its fallback, and of those the ones that a
    #: rule of the old map placed.
    to_fallback: int
    newly_to_fallback: int
    fallback_examples: tuple[str, ...]

    @property
    def unchanged(self) -> int:
        return self.total - len(self.moved)

    def summary(self) -> list[str]:
        lines = [f"{len(self.moved)} of {self.total} identities change segment"]
        for (old, new), count in sorted(self.transitions.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {_vlan(old)} -> {_vlan(new)}: {count}")
        lines.append(
            f"{self.to_fallback} fall to the fallback ({self.newly_to_fallback} of them newly)"
        )
        return lines


def _vlan(vlan: int | None) -> str:
    return "reject" if vlan is None else f"VLAN {vlan}"


def _matcher(m: SegmentMap | CompiledMatcher) -> CompiledMatcher:
    return m if isinstance(m, CompiledMatcher) else CompiledMatcher(m)


def diff_assignments(
    old: SegmentMap | CompiledMatcher,
    new: SegmentMap | CompiledMatcher,
    population: Population,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> AssignmentDiff:
    """Assign every identity under both maps and report the differences."""
    old_lookup, new_lookup = _matcher(old).lookup, _matcher(new).lookup
    # Assignments are shared per rule, so whether a pair is a move is decided once
    # per (old rule, new rule) pair, by identity.
    decided: dict[tuple[int, int], bool] = {}
    moved: list[str] = []
    transitions: Counter[tuple[int | None, int | None]] = Counter()
    examples: list[Move] = []
    fallback_examples: list[str] = []
    total = to_fallback = newly = 0
    for identity_id, s in population:
        total += 1
        a = old_lookup(s.kind, s.scope, s.owner_team, s.nas_site)
        b = new_lookup(s.kind, s.scope, s.owner_team, s.nas_site)
        if b.rule_index is None:
            to_fallback += 1
            if a.rule_index is not None:
                newly += 1
            if len(fallback_examples) < max_examples:
                fallback_examples.append(identity_id)
        pair = (id(a), id(b))
        is_move = decided.get(pair)
        if is_move is None:
            is_move = decided[pair] = a.outcome != b.outcome
        if is_move:
            moved.append(identity_id)
            transitions[(a.vlan, b.vlan)] += 1
            if len(examples) < max_examples:
                examples.append(Move(identity_id, a, b))
    return AssignmentDiff(
        total,
        frozenset(moved),
        dict(transitions),
        tuple(examples),
        to_fallback,
        newly,
        tuple(fallback_examples),
    )


def fallback_warnings(
    segment_map: SegmentMap | CompiledMatcher,
    population: Population,
    *,
    max_examples: int = 10,
) -> list[Problem]:
    """A warning, at the fallback, if any identity of the population matches no rule.

    Give it the active identities: they would land in quarantine, or be rejected.
    """
    matcher = _matcher(segment_map)
    lookup = matcher.lookup
    count = 0
    examples: list[str] = []
    for identity_id, s in population:
        if lookup(s.kind, s.scope, s.owner_team, s.nas_site).rule_index is None:
            count += 1
            if len(examples) < max_examples:
                examples.append(identity_id)
    if not count:
        return []
    m = matcher.segment_map
    target = matcher.fallback.segment
    where = (
        "are rejected"
        if target is None
        else (f'fall to the fallback (segment "{target.name}", VLAN {target.vlan})')
    )
    more = f" and {count - len(examples)} more" if count > len(examples) else ""
    at = m.fallback.origin.at
    return [
        Problem(
            m.filename,
            at.line,
            at.column,
            Severity.WARNING,
            f"{count} active identities match no rule and {where}: {', '.join(examples)}{more}",
        )
    ]
