"""Checks on a ``SegmentMap`` as a whole: errors that refuse it, warnings that do not.

Errors: VLAN out of range, duplicate segment names or VLAN ids, a rule or the
fallback naming a missing segment, malformed names and values, unknown identity
kinds, and maps past the limits in ``segments.limits``.

Warnings: a rule that can never match because an earlier rule matches everything it
would (see ``shadowing``), and a segment that nothing assigns.

The same checks serve a map loaded from text and a map built in code.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from segments.errors import Problem, Severity
from segments.limits import (
    MAX_FILTER_ID_LENGTH,
    MAX_LABEL_CONDITIONS,
    MAX_NAME_LENGTH,
    MAX_RULES,
    MAX_SCOPE_KEY_LENGTH,
    MAX_SEGMENTS,
    MAX_SET_VALUES,
    MAX_TEXT_LENGTH,
    MAX_VALUE_LENGTH,
    VLAN_MAX,
    VLAN_MIN,
)
from segments.model import IDENTITY_KINDS, LabelMatch, Op, Pos, Rule, Segment, SegmentMap

# The inventory's own syntax (nhi_nac.domain), re-declared: a rule value outside it
# could never match any identity.
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SCOPE_KEY = re.compile(r"[a-z][a-z0-9_.-]*")
_SCOPE_VALUE = re.compile(r"[A-Za-z0-9._:/@+-]*")
_KINDS = frozenset(IDENTITY_KINDS)


class _Report:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []

    def error(self, pos: Pos, message: str) -> None:
        self.problems.append(Problem(self.filename, pos.line, pos.column, Severity.ERROR, message))

    def warn(self, pos: Pos, message: str) -> None:
        self.problems.append(
            Problem(self.filename, pos.line, pos.column, Severity.WARNING, message)
        )


def check_segment_map(
    segment_map: SegmentMap, *, skip: frozenset[int] = frozenset(), warnings: bool = True
) -> list[Problem]:
    """Every error and warning (unless ``warnings`` is False) about a map, in source order.

    ``skip`` holds the ``id()`` of objects the loader already found broken; they are
    not judged again (the loader's message is the useful one).
    """
    report = _Report(segment_map.filename)
    segments = segment_map.segments
    if len(segments) > MAX_SEGMENTS:
        report.error(Pos(1, 1), f"{len(segments)} segments, more than {MAX_SEGMENTS}")
    if len(segment_map.rules) > MAX_RULES:
        report.error(Pos(1, 1), f"{len(segment_map.rules)} rules, more than {MAX_RULES}")
    _check_segments(report, [s for s in segments if id(s) not in skip])
    names = {s.name for s in segments}
    for number, rule in enumerate(segment_map.rules, 1):
        if id(rule) not in skip:
            _check_rule(report, number, rule, names)
    _check_rule_names(report, segment_map.rules)
    fallback = segment_map.fallback
    if id(fallback) not in skip and fallback.segment is not None:
        if fallback.segment not in names:
            report.error(
                fallback.origin.of("segment"),
                f'the fallback names segment "{fallback.segment}", which is not defined',
            )
    if warnings:
        _warn_shadowed(report, segment_map, skip)
        _warn_unused(report, segment_map)
    return sorted(report.problems)


def _check_segments(report: _Report, segments: list[Segment]) -> None:
    by_name: dict[str, Segment] = {}
    by_vlan: dict[int, Segment] = {}
    for seg in segments:
        at = seg.origin.at
        if len(seg.name) > MAX_NAME_LENGTH or not _SEGMENT_NAME.fullmatch(seg.name):
            report.error(
                at,
                f'segment name "{seg.name}" must be 1-{MAX_NAME_LENGTH} letters, '
                "digits, '.', '_' or '-', starting with a letter or digit",
            )
        if seg.name in by_name:
            first = by_name[seg.name].origin.at.line
            report.error(at, f'segment "{seg.name}" is defined twice (first on line {first})')
        else:
            by_name[seg.name] = seg
        vlan_at = seg.origin.of("vlan")
        if not VLAN_MIN <= seg.vlan <= VLAN_MAX:
            report.error(
                vlan_at,
                f'VLAN {seg.vlan} of segment "{seg.name}" is out of range ({VLAN_MIN}-{VLAN_MAX})',
            )
        elif seg.vlan in by_vlan:
            other = by_vlan[seg.vlan]
            report.error(
                vlan_at,
                f'VLAN {seg.vlan} of segment "{seg.name}" is already used by '
                f'segment "{other.name}" (line {other.origin.at.line})',
            )
        else:
            by_vlan[seg.vlan] = seg
        if len(seg.description) > MAX_TEXT_LENGTH:
            report.error(
                seg.origin.of("description"),
                f"description longer than {MAX_TEXT_LENGTH} characters",
            )
        if seg.filter_id is not None:
            _check_attribute(
                report, seg.origin.of("filter_id"), "filter_id", seg.filter_id, MAX_FILTER_ID_LENGTH
            )
        if seg.acl is not None:
            _check_attribute(report, seg.origin.of("acl"), "acl", seg.acl, MAX_FILTER_ID_LENGTH)


def _check_attribute(report: _Report, at: Pos, what: str, value: str, limit: int) -> None:
    # Sent to the NAS as a RADIUS string attribute (RFC 2865 §5.11): 1-253 octets.
    size = len(value.encode())
    if not value or size > limit or not value.isprintable():
        report.error(at, f"{what} must be 1-{limit} bytes of printable text")


def _check_rule(report: _Report, number: int, rule: Rule, segments: set[str]) -> None:
    label = rule.display_name(number)
    if rule.segment not in segments:
        report.error(
            rule.origin.of("segment"),
            f'{label} names segment "{rule.segment}", which is not defined',
        )
    if rule.name is not None and not 0 < len(rule.name) <= MAX_NAME_LENGTH:
        report.error(
            rule.origin.of("name"), f"{label}: a rule name is 1-{MAX_NAME_LENGTH} characters"
        )
    if len(rule.description) > MAX_TEXT_LENGTH:
        report.error(
            rule.origin.of("description"), f"description longer than {MAX_TEXT_LENGTH} characters"
        )
    match_at = rule.origin.of("match")
    if rule.kinds is not None:
        kind_at = rule.origin.of("kind")
        _check_set(report, kind_at, label, "kind", rule.kinds)
        for kind in sorted(rule.kinds - _KINDS):
            report.error(
                kind_at,
                f'{label}: unknown identity kind "{kind}" (one of: {", ".join(IDENTITY_KINDS)})',
            )
    for what, values in (("owner_team", rule.owner_teams), ("nas_site", rule.nas_sites)):
        if values is not None:
            value_at = rule.origin.of(what)
            _check_set(report, value_at, label, what, values)
            for value in sorted(values):
                if not 0 < len(value) <= MAX_VALUE_LENGTH:
                    report.error(
                        value_at, f"{label}: {what} names are 1-{MAX_VALUE_LENGTH} characters"
                    )
    if len(rule.labels) > MAX_LABEL_CONDITIONS:
        report.error(match_at, f"{label}: more than {MAX_LABEL_CONDITIONS} scope conditions")
    seen: set[str] = set()
    for match in rule.labels:
        if match.key in seen:
            report.error(match.origin.at, f'{label}: scope label "{match.key}" given twice')
        seen.add(match.key)
        _check_label(report, label, match)


def _check_set(report: _Report, at: Pos, label: str, what: str, values: frozenset[str]) -> None:
    if not values:
        report.error(at, f"{label}: an empty {what} list matches nothing")
    elif len(values) > MAX_SET_VALUES:
        report.error(at, f"{label}: more than {MAX_SET_VALUES} values for {what}")


def _check_label(report: _Report, label: str, match: LabelMatch) -> None:
    at = match.origin.at
    if len(match.key) > MAX_SCOPE_KEY_LENGTH or not _SCOPE_KEY.fullmatch(match.key):
        report.error(
            at,
            f'{label}: "{match.key}" is not a scope label name '
            f"([a-z][a-z0-9_.-]*, at most {MAX_SCOPE_KEY_LENGTH} characters)",
        )
    expected = {Op.EQUALS: (1, 1), Op.IN: (1, MAX_SET_VALUES)}.get(match.op, (0, 0))
    if not expected[0] <= len(match.values) <= expected[1]:
        report.error(
            at,
            f'{label}: operator "{match.op.value}" on "{match.key}" takes '
            f"{expected[0]}-{expected[1]} values, got {len(match.values)}",
        )
    value_at = match.origin.of("value")
    for value in sorted(match.values):
        if len(value) > MAX_VALUE_LENGTH or not _SCOPE_VALUE.fullmatch(value):
            report.error(
                value_at,
                f'{label}: "{value}" can never be a value of scope label '
                f'"{match.key}" (at most {MAX_VALUE_LENGTH} characters of letters, '
                "digits and ._:/@+-)",
            )


def _check_rule_names(report: _Report, rules: tuple[Rule, ...]) -> None:
    # Names identify rules in diffs and history, so they must be unique.
    first: dict[str, int] = {}
    for number, rule in enumerate(rules, 1):
        if rule.name is None:
            continue
        if rule.name in first:
            report.error(
                rule.origin.of("name"),
                f'rule name "{rule.name}" is used by rule {first[rule.name]} and rule {number}',
            )
        else:
            first[rule.name] = number


# -- shadowing ---------------------------------------------------------------------

_ALL_KINDS = frozenset(IDENTITY_KINDS)


@dataclass(frozen=True, slots=True)
class _Extent:
    """The set of subjects a rule matches, one factor per dimension.

    A label factor is (absent allowed, allowed values or None for any value); no
    condition is (True, None). Rules are conjunctions of independent factors, so
    one rule's set contains another's exactly when every factor does.
    """

    kinds: frozenset[str]
    labels: dict[str, tuple[bool, frozenset[str] | None]]
    teams: frozenset[str] | None
    sites: frozenset[str] | None
    constrained: frozenset[str]


def _extent(rule: Rule) -> _Extent:
    labels: dict[str, tuple[bool, frozenset[str] | None]] = {}
    for match in rule.labels:
        if match.op is Op.EXISTS:
            labels[match.key] = (False, None)
        elif match.op is Op.ABSENT:
            labels[match.key] = (True, frozenset())
        else:
            labels[match.key] = (False, match.values)
    constrained = set(labels)
    if rule.owner_teams is not None:
        constrained.add(" team")  # the space keeps it apart from any label name
    if rule.nas_sites is not None:
        constrained.add(" site")
    return _Extent(
        rule.kinds if rule.kinds is not None else _ALL_KINDS,
        labels,
        rule.owner_teams,
        rule.nas_sites,
        frozenset(constrained),
    )


def _contains(outer: _Extent, inner: _Extent) -> bool:
    """Does every subject ``inner`` matches also match ``outer``? (Exact; subjects are
    assumed to have one of the inventory's kinds.)"""
    if not outer.constrained <= inner.constrained or not inner.kinds <= outer.kinds:
        return False
    for outer_set, inner_set in ((outer.teams, inner.teams), (outer.sites, inner.sites)):
        if outer_set is not None and (inner_set is None or not inner_set <= outer_set):
            return False
    for key, (outer_absent, outer_values) in outer.labels.items():
        inner_absent, inner_values = inner.labels[key]
        if inner_absent and not outer_absent:
            return False
        if outer_values is not None and (inner_values is None or not inner_values <= outer_values):
            return False
    return True


def shadowing(segment_map: SegmentMap) -> Iterator[tuple[int, int]]:
    """Yield (later, earlier) rule indexes (from 0) where the earlier rule matches
    every identity the later one would, so the later rule can never match.

    This decides the single-rule case exactly. A rule covered only by the union of
    several earlier rules is not reported.
    """
    extents = [_extent(rule) for rule in segment_map.rules]
    index, unindexed = _candidate_index(extents)
    for later, inner in enumerate(extents):
        candidates = set(unindexed)
        for name, values in _finite_factors(inner).items():
            if values:
                candidates.update(index.get((name, min(values)), ()))
        for earlier in sorted(c for c in candidates if c < later):
            if _contains(extents[earlier], inner):
                yield later, earlier
                break


def _finite_factors(extent: _Extent) -> dict[str, frozenset[str]]:
    """The dimensions where a rule admits a finite set of values."""
    factors = {k: v for k, (_, v) in extent.labels.items() if v is not None}
    if extent.kinds != _ALL_KINDS:
        factors[" kind"] = extent.kinds
    if extent.teams is not None:
        factors[" team"] = extent.teams
    if extent.sites is not None:
        factors[" site"] = extent.sites
    return factors


def _candidate_index(
    extents: list[_Extent],
) -> tuple[dict[tuple[str, str], list[int]], list[int]]:
    """Index each rule under one of its finite factors, value by value.

    A rule R can only contain a rule S if S admits a subset of R's values on each of
    R's finite factors, so S's smallest value on R's indexed factor finds R. Rules
    with no finite factor are candidates for every later rule. Without this,
    comparing every pair of 4096 rules takes seconds.
    """
    index: dict[tuple[str, str], list[int]] = {}
    unindexed: list[int] = []
    all_factors = [_finite_factors(extent) for extent in extents]
    # Pick, per rule, the factor whose values are the rarest across the map, so that
    # the buckets stay small (indexing 4096 rules under "kind: device" would not help).
    frequency: Counter[tuple[str, str]] = Counter(
        (name, value)
        for factors in all_factors
        for name, values in factors.items()
        for value in values
    )
    for number, factors in enumerate(all_factors):
        choices = [
            (sum(frequency[(name, v)] for v in values), name, values)
            for name, values in factors.items()
            if values
        ]
        if not choices:
            unindexed.append(number)
            continue
        _, name, values = min(choices, key=lambda c: (c[0], c[1]))
        for value in values:
            index.setdefault((name, value), []).append(number)
    return index, unindexed


def _warn_shadowed(report: _Report, segment_map: SegmentMap, skip: frozenset[int]) -> None:
    rules = segment_map.rules
    for later, earlier in shadowing(segment_map):
        if id(rules[later]) in skip or id(rules[earlier]) in skip:
            continue
        report.warn(
            rules[later].origin.at,
            f"{rules[later].display_name(later + 1)} can never match: "
            f"{rules[earlier].display_name(earlier + 1)} comes first and matches every "
            "identity it would",
        )


def _warn_unused(report: _Report, segment_map: SegmentMap) -> None:
    used = {rule.segment for rule in segment_map.rules}
    if segment_map.fallback.segment is not None:
        used.add(segment_map.fallback.segment)
    for seg in segment_map.segments:
        if seg.name not in used:
            report.warn(
                seg.origin.at,
                f'segment "{seg.name}" (VLAN {seg.vlan}) is not used by any rule or the fallback',
            )
