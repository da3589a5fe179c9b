"""``SegmentMap`` → canonical YAML text, for storage, history and rollback.

Canonical means one text per map: fixed key order, label conditions sorted by name,
set values sorted, the shortest form of each condition, no comments. Loading the
text gives back an equal map, and dumping that gives the same text again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from segments.model import LabelMatch, Op, Rule, Segment, SegmentMap

# Plain scalars the loader reads back verbatim in block and flow context alike.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@+-]*")
_NULLS = frozenset(("null", "Null", "NULL"))


def dump_segment_map(segment_map: SegmentMap) -> str:
    lines: list[str] = []
    meta = segment_map.metadata
    if meta.author or meta.comment:
        lines.append("metadata:")
        if meta.author:
            lines.append(f"  author: {quote(meta.author)}")
        if meta.comment:
            lines.append(f"  comment: {quote(meta.comment)}")
    if segment_map.segments:
        lines.append("segments:")
        for seg in segment_map.segments:
            lines += _segment(seg)
    else:
        lines.append("segments: {}")
    if segment_map.rules:
        lines.append("rules:")
        for rule in segment_map.rules:
            lines += _rule(rule)
    else:
        lines.append("rules: []")
    fallback = segment_map.fallback.segment
    if fallback is None:
        lines.append("fallback: reject")
    else:
        lines += ["fallback:", f"  segment: {quote(fallback)}"]
    return "\n".join(lines) + "\n"


def _segment(seg: Segment) -> list[str]:
    lines = [f"  {quote(seg.name)}:", f"    vlan: {seg.vlan}"]
    if seg.description:
        lines.append(f"    description: {quote(seg.description)}")
    if seg.filter_id is not None:
        lines.append(f"    filter_id: {quote(seg.filter_id)}")
    if seg.acl is not None:
        lines.append(f"    acl: {quote(seg.acl)}")
    return lines


def _rule(rule: Rule) -> list[str]:
    lines: list[str] = []
    if rule.name is not None:
        lines.append(f"name: {quote(rule.name)}")
    if rule.description:
        lines.append(f"description: {quote(rule.description)}")
    conditions: list[str] = []
    if rule.kinds is not None:
        conditions.append(f"kind: {_one_or_list(rule.kinds)}")
    if rule.labels:
        conditions.append("scope:")
        conditions += [f"  {quote(m.key)}: {_condition(m)}" for m in rule.labels]
    if rule.owner_teams is not None:
        conditions.append(f"owner_team: {_one_or_list(rule.owner_teams)}")
    if rule.nas_sites is not None:
        conditions.append(f"nas_site: {_one_or_list(rule.nas_sites)}")
    if conditions:
        lines.append("match:")
        lines += [f"  {c}" for c in conditions]
    else:
        lines.append("match: {}")
    lines.append(f"segment: {quote(rule.segment)}")
    return [("  - " if i == 0 else "    ") + line for i, line in enumerate(lines)]


def _condition(match: LabelMatch) -> str:
    if match.op is Op.EQUALS and len(match.values) == 1:
        return quote(next(iter(match.values)))
    if match.op is Op.IN:
        return _flow_list(match.values)
    if match.op is Op.EQUALS:  # only a map built in code gets here; keep what it says
        return "{equals: " + _flow_list(match.values) + "}"
    return "{" + match.op.value + ": true}"


def _one_or_list(values: frozenset[str]) -> str:
    return quote(next(iter(values))) if len(values) == 1 else _flow_list(values)


def _flow_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in sorted(values)) + "]"


def quote(text: str) -> str:
    """The text as a YAML scalar: plain when that reads back verbatim, else double-quoted
    with every character that is not plainly printable escaped (YAML 1.2 §5.7)."""
    if _PLAIN.fullmatch(text) and text not in _NULLS:
        return text
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F or (code >= 0xA0 and ch.isprintable() and code != 0xFEFF):
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
