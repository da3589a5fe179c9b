"""What changed between two maps, for history and for people reviewing a change.

``diff_maps`` gives the change as data (segments added, removed or altered; rules
added, removed or altered, in order; the fallback); ``text_diff`` gives a unified
diff of the two canonical texts. Who is affected is ``segments.preview``'s job.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

from segments.dump import dump_segment_map
from segments.model import Fallback, Metadata, Rule, Segment, SegmentMap


@dataclass(frozen=True, slots=True)
class SegmentChange:
    old: Segment
    new: Segment

    @property
    def name(self) -> str:
        return self.new.name

    @property
    def changed_fields(self) -> tuple[str, ...]:
        return tuple(
            f.name
            for f in fields(Segment)
            if f.compare and getattr(self.old, f.name) != getattr(self.new, f.name)
        )


@dataclass(frozen=True, slots=True)
class RuleChange:
    """One rule added (``old`` None), removed (``new`` None) or altered in place.
    Indexes count from 0 in the old and the new map."""

    old_index: int | None
    old: Rule | None
    new_index: int | None
    new: Rule | None

    @property
    def kind(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"


@dataclass(frozen=True, slots=True)
class MapDiff:
    segments_added: tuple[Segment, ...]
    segments_removed: tuple[Segment, ...]
    segments_changed: tuple[SegmentChange, ...]
    rules: tuple[RuleChange, ...]
    fallback: tuple[Fallback, Fallback] | None
    metadata: tuple[Metadata, Metadata] | None

    @property
    def empty(self) -> bool:
        """True when the maps assign alike (metadata alone does not count)."""
        return not (
            self.segments_added
            or self.segments_removed
            or self.segments_changed
            or self.rules
            or self.fallback
        )

    def summary(self) -> list[str]:
        """One line per change, ``+`` added, ``-`` removed, ``~`` changed."""
        lines = [f"+ segment {s.name} (VLAN {s.vlan})" for s in self.segments_added]
        lines += [f"- segment {s.name} (VLAN {s.vlan})" for s in self.segments_removed]
        for change in self.segments_changed:
            parts = [
                f"{name} {getattr(change.old, name)!r} -> {getattr(change.new, name)!r}"
                for name in change.changed_fields
            ]
            lines.append(f"~ segment {change.name}: " + ", ".join(parts))
        for rc in self.rules:
            if rc.old is None and rc.new is not None and rc.new_index is not None:
                lines.append(
                    f"+ {rc.new.display_name(rc.new_index + 1)} -> segment {rc.new.segment}"
                )
            elif rc.new is None and rc.old is not None and rc.old_index is not None:
                lines.append(
                    f"- {rc.old.display_name(rc.old_index + 1)} (was -> segment {rc.old.segment})"
                )
            elif rc.old is not None and rc.new is not None and rc.new_index is not None:
                target = (
                    f"segment {rc.old.segment} -> {rc.new.segment}"
                    if rc.old.segment != rc.new.segment
                    else "conditions changed"
                )
                lines.append(f"~ {rc.new.display_name(rc.new_index + 1)}: {target}")
        if self.fallback is not None:
            old, new = (f.segment or "reject" for f in self.fallback)
            lines.append(f"~ fallback: {old} -> {new}")
        if self.metadata is not None:
            lines.append("~ metadata")
        return lines


def diff_maps(old: SegmentMap, new: SegmentMap) -> MapDiff:
    old_segs = {s.name: s for s in old.segments}
    new_segs = {s.name: s for s in new.segments}
    return MapDiff(
        segments_added=tuple(s for s in new.segments if s.name not in old_segs),
        segments_removed=tuple(s for s in old.segments if s.name not in new_segs),
        segments_changed=tuple(
            SegmentChange(old_segs[s.name], s)
            for s in new.segments
            if s.name in old_segs and old_segs[s.name] != s
        ),
        rules=_rule_changes(old.rules, new.rules),
        fallback=None if old.fallback == new.fallback else (old.fallback, new.fallback),
        metadata=None if old.metadata == new.metadata else (old.metadata, new.metadata),
    )


def _rule_changes(old: tuple[Rule, ...], new: tuple[Rule, ...]) -> tuple[RuleChange, ...]:
    changes: list[RuleChange] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        olds, news = list(range(i1, i2)), list(range(j1, j2))
        # A replaced rule that keeps its place and name is "changed"; the rest are
        # removed and added.
        while olds and news and old[olds[0]].name == new[news[0]].name:
            i, j = olds.pop(0), news.pop(0)
            changes.append(RuleChange(i, old[i], j, new[j]))
        changes += [RuleChange(i, old[i], None, None) for i in olds]
        changes += [RuleChange(None, None, j, new[j]) for j in news]
    return tuple(changes)


def text_diff(
    old: SegmentMap, new: SegmentMap, old_name: str = "old", new_name: str = "new"
) -> str:
    """A unified diff of the canonical texts; empty when they are equal."""
    return "".join(
        difflib.unified_diff(
            dump_segment_map(old).splitlines(keepends=True),
            dump_segment_map(new).splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )
