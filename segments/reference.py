"""The reference matcher: the rules read straight, first match wins.

Slow and obviously right; tests hold the compiled matcher to it.
"""

from __future__ import annotations

from collections.abc import Mapping

from segments.model import Assignment, LabelMatch, Op, Rule, SegmentMap, Subject


def reference_assign(segment_map: SegmentMap, subject: Subject) -> Assignment:
    for index, rule in enumerate(segment_map.rules):
        if _rule_holds(rule, subject):
            return Assignment(segment_map.segment(rule.segment), index, rule.name)
    fallback = segment_map.fallback.segment
    return Assignment(None if fallback is None else segment_map.segment(fallback))


def _rule_holds(rule: Rule, subject: Subject) -> bool:
    if rule.kinds is not None and subject.kind not in rule.kinds:
        return False
    if rule.owner_teams is not None and subject.owner_team not in rule.owner_teams:
        return False
    if rule.nas_sites is not None and subject.nas_site not in rule.nas_sites:
        return False
    return all(_label_holds(match, subject.scope) for match in rule.labels)


def _label_holds(match: LabelMatch, scope: Mapping[str, str]) -> bool:
    present = match.key in scope
    if match.op is Op.EXISTS:
        return present
    if match.op is Op.ABSENT:
        return not present
    if match.op is Op.EQUALS:
        (value,) = match.values
        return present and scope[match.key] == value
    return present and scope[match.key] in match.values
