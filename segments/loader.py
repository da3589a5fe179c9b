"""Segment map text → ``SegmentMap``, or every problem with its file, line and column.

Loading is in two passes. This module reads the YAML tree into the model and
reports what is wrong with its shape (syntax, unknown or missing keys, wrong
types). ``segments.checks`` then judges the model (VLAN range, duplicates,
references, shadowed rules). An object that already failed the first pass gets no
further checks, so one mistake gives one message. Any error refuses the map whole.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TypeVar

from segments.checks import check_segment_map
from segments.errors import Problem, SegmentMapInvalid, Severity
from segments.limits import MAX_DOCUMENT_CHARS, MAX_PROBLEMS, MAX_SET_VALUES
from segments.model import (
    Fallback,
    LabelMatch,
    Metadata,
    Op,
    Origin,
    Pos,
    Rule,
    Segment,
    SegmentMap,
)
from segments.yamltree import Mapping, Node, Scalar, Sequence, YamlSyntaxError, kind_of, parse_tree

DEFAULT_FILENAME = "<segment map>"

_TOP_KEYS = ("metadata", "segments", "rules", "fallback")
_SEGMENT_KEYS = ("vlan", "description", "filter_id", "acl")
_RULE_KEYS = ("name", "description", "match", "segment")
_MATCH_KEYS = ("kind", "scope", "owner_team", "nas_site")
_METADATA_KEYS = ("author", "comment")
_OPS = tuple(op.value for op in Op)
_DECIMAL = re.compile(r"[0-9]+")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome of validating a map's text: the map (None if there is any error)
    and every problem found, errors and warnings, in source order."""

    map: SegmentMap | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.map is not None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.is_error)


def validate_segment_map(text: str, filename: str = DEFAULT_FILENAME) -> Validation:
    """Parse and check a map; never raises for anything wrong with the text."""
    reader = _Reader(filename)
    segment_map = reader.read(text)
    problems = list(reader.problems)
    if segment_map is not None:
        problems += check_segment_map(segment_map, skip=frozenset(reader.broken))
    problems.sort()
    has_error = any(p.is_error for p in problems)
    if len(problems) > MAX_PROBLEMS:
        # Keep the errors first so that none is hidden behind a flood of warnings.
        problems.sort(key=lambda p: not p.is_error)
        rest = problems[MAX_PROBLEMS:]
        problems = sorted(problems[:MAX_PROBLEMS])
        severity = Severity.ERROR if any(p.is_error for p in rest) else Severity.WARNING
        problems.append(
            Problem(
                filename,
                rest[0].line,
                rest[0].column,
                severity,
                f"{len(rest)} more problems not shown",
            )
        )
    return Validation(None if has_error else segment_map, tuple(problems))


def load_segment_map(text: str, filename: str = DEFAULT_FILENAME) -> SegmentMap:
    """Parse and check a map. Raises SegmentMapInvalid (with every problem) on any error.

    Warnings do not stop loading; call ``validate_segment_map`` to see them.
    """
    result = validate_segment_map(text, filename)
    if result.map is None:
        raise SegmentMapInvalid(result.problems)
    return result.map


class _Reader:
    """Walks the YAML tree once, building the model and collecting shape problems."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        # id() of model objects that already have an error; checks skip them.
        self.broken: set[int] = set()
        self.error_count = 0

    def error(self, pos: Pos, message: str) -> None:
        self.error_count += 1
        self.problems.append(Problem(self.filename, pos.line, pos.column, Severity.ERROR, message))

    def warn(self, pos: Pos, message: str) -> None:
        self.problems.append(
            Problem(self.filename, pos.line, pos.column, Severity.WARNING, message)
        )

    def _built(self, obj: T, errors_before: int) -> T:
        if self.error_count > errors_before:
            self.broken.add(id(obj))
        return obj

    # -- the document -------------------------------------------------------------

    def read(self, text: str) -> SegmentMap | None:
        if len(text) > MAX_DOCUMENT_CHARS:
            self.error(Pos(1, 1), f"document is larger than {MAX_DOCUMENT_CHARS} characters")
            return None
        try:
            root = parse_tree(text)
        except YamlSyntaxError as exc:
            self.error(exc.pos, exc.message)
            return None
        if root is None:
            self.error(
                Pos(1, 1),
                "the document is empty; a segment map needs segments, rules and a fallback",
            )
            return None
        if not isinstance(root, Mapping):
            self.error(root.pos, f"a segment map is a mapping, not {kind_of(root)}")
            return None
        fields = self.fields(
            root, _TOP_KEYS, required=("segments", "rules", "fallback"), what="segment map"
        )
        metadata = Metadata()
        if "metadata" in fields:
            metadata = self.metadata(fields["metadata"][1])
        segments: tuple[Segment, ...] = ()
        if "segments" in fields:
            segments = self.segments(fields["segments"][1])
        rules: tuple[Rule, ...] = ()
        if "rules" in fields:
            rules = self.rules(fields["rules"][1])
        fallback = Fallback(origin=Origin(root.pos))
        if "fallback" in fields:
            fallback = self.fallback(fields["fallback"][1])
        else:
            self.broken.add(id(fallback))
        return SegmentMap(segments, rules, fallback, metadata, self.filename)

    def metadata(self, node: Node) -> Metadata:
        if not isinstance(node, Mapping):
            self.error(node.pos, f"metadata must be a mapping, not {kind_of(node)}")
            return Metadata()
        fields = self.fields(node, _METADATA_KEYS, (), "metadata")
        values = {k: self.text(v, f"metadata {k}") for k, (_, v) in fields.items()}
        return Metadata(author=values.get("author") or "", comment=values.get("comment") or "")

    # -- segments -----------------------------------------------------------------

    def segments(self, node: Node) -> tuple[Segment, ...]:
        if isinstance(node, Scalar) and node.is_null:
            return ()
        if not isinstance(node, Mapping):
            self.error(
                node.pos,
                f"segments must be a mapping of segment name to its settings, not {kind_of(node)}",
            )
            return ()
        # Duplicate names are not caught here: checks reports them as duplicate segments.
        return tuple(self.segment(key, value) for key, value in node.pairs)

    def segment(self, key: Node, node: Node) -> Segment:
        before = self.error_count
        name = self.text(key, "segment name") or ""
        vlan, description, filter_id, acl = 0, "", None, None
        positions: list[tuple[str, Pos]] = []
        if not isinstance(node, Mapping):
            self.error(
                node.pos,
                f'segment "{name}" must be a mapping with at least a vlan, not {kind_of(node)}',
            )
        else:
            fields = self.fields(node, _SEGMENT_KEYS, ("vlan",), f'segment "{name}"')
            for field_name, (_, value) in fields.items():
                positions.append((field_name, value.pos))
            if "vlan" in fields:
                vlan = self.vlan(fields["vlan"][1])
            if "description" in fields:
                description = self.text(fields["description"][1], "description") or ""
            if "filter_id" in fields:
                filter_id = self.text(fields["filter_id"][1], "filter_id")
            if "acl" in fields:
                acl = self.text(fields["acl"][1], "acl")
        origin = Origin(key.pos, tuple(positions))
        return self._built(Segment(name, vlan, description, filter_id, acl, origin), before)

    def vlan(self, node: Node) -> int:
        if isinstance(node, Scalar) and node.plain and _DECIMAL.fullmatch(node.text):
            return int(node.text)
        shown = f'"{node.text}"' if isinstance(node, Scalar) else kind_of(node)
        self.error(node.pos, f"VLAN must be a whole number from 1 to 4094, not {shown}")
        return 0

    # -- rules --------------------------------------------------------------------

    def rules(self, node: Node) -> tuple[Rule, ...]:
        if isinstance(node, Scalar) and node.is_null:
            return ()
        if not isinstance(node, Sequence):
            self.error(node.pos, f"rules must be a list, not {kind_of(node)}")
            return ()
        return tuple(self.rule(number, item) for number, item in enumerate(node.items, 1))

    def rule(self, number: int, node: Node) -> Rule:
        before = self.error_count
        if not isinstance(node, Mapping):
            self.error(node.pos, f"rule {number} must be a mapping, not {kind_of(node)}")
            broken = Rule(segment="", origin=Origin(node.pos))
            self.broken.add(id(broken))
            return broken
        fields = self.fields(node, _RULE_KEYS, ("match", "segment"), f"rule {number}")
        name = self.text(fields["name"][1], "rule name") if "name" in fields else None
        label = f'rule {number} "{name}"' if name else f"rule {number}"
        description = ""
        if "description" in fields:
            description = self.text(fields["description"][1], "description") or ""
        segment = ""
        if "segment" in fields:
            segment = self.text(fields["segment"][1], f"segment of {label}") or ""
        kinds = teams = sites = None
        labels: tuple[LabelMatch, ...] = ()
        positions: list[tuple[str, Pos]] = []
        if "match" in fields:
            match = fields["match"][1]
            if not isinstance(match, Mapping):
                self.error(
                    match.pos,
                    f"match of {label} must be a mapping (use {{}} to match "
                    f"every identity), not {kind_of(match)}",
                )
            else:
                conds = self.fields(match, _MATCH_KEYS, (), f"match of {label}")
                if "kind" in conds:
                    kinds = self.text_set(conds["kind"][1], "kind")
                if "scope" in conds:
                    labels = self.scope(conds["scope"][1], label)
                if "owner_team" in conds:
                    teams = self.text_set(conds["owner_team"][1], "owner_team")
                if "nas_site" in conds:
                    sites = self.text_set(conds["nas_site"][1], "nas_site")
                positions += [(k, v.pos) for k, (_, v) in conds.items()]
        positions += [(k, v.pos) for k, (_, v) in fields.items()]
        rule = Rule(
            segment,
            name,
            kinds,
            labels,
            teams,
            sites,
            description,
            Origin(node.pos, tuple(positions)),
        )
        return self._built(rule, before)

    def scope(self, node: Node, label: str) -> tuple[LabelMatch, ...]:
        if not isinstance(node, Mapping):
            self.error(
                node.pos,
                f"scope of {label} must be a mapping of label to condition, not {kind_of(node)}",
            )
            return ()
        matches = []
        seen: dict[str, Pos] = {}
        for key_node, value in node.pairs:
            key = self.text(key_node, "scope label")
            if key is None:
                continue
            if key in seen:
                self.error(
                    key_node.pos,
                    f'scope label "{key}" given twice in {label} (first on line {seen[key].line})',
                )
                continue
            seen[key] = key_node.pos
            before = self.error_count
            match = self.condition(key, key_node.pos, value)
            if match is not None:
                matches.append(self._built(match, before))
        return tuple(matches)

    def condition(self, key: str, at: Pos, node: Node) -> LabelMatch | None:
        """``key: value`` is equals, ``key: [a, b]`` is in, else ``{op: argument}``."""
        origin = Origin(at, (("value", node.pos),))
        if isinstance(node, Scalar):
            value = self.text(node, f'value of scope label "{key}"')
            return (
                None if value is None else LabelMatch(key, Op.EQUALS, frozenset((value,)), origin)
            )
        if isinstance(node, Sequence):
            values = self.text_set(node, f'scope label "{key}"')
            return None if values is None else LabelMatch(key, Op.IN, values, origin)
        if len(node.pairs) != 1:
            self.error(
                node.pos,
                f'the condition on scope label "{key}" must have exactly one '
                f"operator ({', '.join(_OPS)}), found {len(node.pairs)}",
            )
            return None
        op_node, arg = node.pairs[0]
        op_name = self.text(op_node, "operator")
        if op_name is None:
            return None
        if op_name not in _OPS:
            self.error(
                op_node.pos,
                f'unknown operator "{op_name}" for scope label "{key}"'
                f"{_suggest(op_name, _OPS)} (one of: {', '.join(_OPS)})",
            )
            return None
        op = Op(op_name)
        origin = Origin(at, (("value", arg.pos),))
        if op is Op.EQUALS:
            value = self.text(arg, f'value of scope label "{key}"')
            return None if value is None else LabelMatch(key, op, frozenset((value,)), origin)
        if op is Op.IN:
            if not isinstance(arg, Sequence):
                self.error(arg.pos, f'"in" takes a list of values, not {kind_of(arg)}')
                return None
            values = self.text_set(arg, f'scope label "{key}"')
            return None if values is None else LabelMatch(key, op, values, origin)
        if not (isinstance(arg, Scalar) and arg.plain and arg.text == "true"):
            other = "absent" if op is Op.EXISTS else "exists"
            self.error(arg.pos, f'write "{op.value}: true" (for the opposite, "{other}: true")')
            return None
        return LabelMatch(key, op, frozenset(), origin)

    # -- fallback -----------------------------------------------------------------

    def fallback(self, node: Node) -> Fallback:
        hint = 'fallback is "reject" or a mapping "segment: NAME"'
        if isinstance(node, Scalar):
            if node.plain and node.text == "reject":
                return Fallback(None, Origin(node.pos))
            self.error(node.pos, f'{hint}, not "{node.text}"')
        elif isinstance(node, Sequence):
            self.error(node.pos, f"{hint}, not a list")
        else:
            fields = self.fields(node, ("segment",), ("segment",), "fallback")
            if "segment" in fields:
                value = fields["segment"][1]
                name = self.text(value, "fallback segment")
                if name is not None:
                    return Fallback(name, Origin(node.pos, (("segment", value.pos),)))
        fallback = Fallback(None, Origin(node.pos))
        self.broken.add(id(fallback))
        return fallback

    # -- shared shapes ------------------------------------------------------------

    def fields(
        self,
        node: Mapping,
        allowed: tuple[str, ...],
        required: tuple[str, ...],
        what: str,
    ) -> dict[str, tuple[Scalar, Node]]:
        """The known keys of a mapping; unknown, repeated and missing keys are errors."""
        found: dict[str, tuple[Scalar, Node]] = {}
        for key, value in node.pairs:
            if not isinstance(key, Scalar) or key.is_null:
                self.error(key.pos, f"keys of {what} must be names, not {kind_of(key)}")
                continue
            if key.text not in allowed:
                self.error(
                    key.pos,
                    f'unknown key "{key.text}" in {what}'
                    f"{_suggest(key.text, allowed)} (allowed: {', '.join(allowed)})",
                )
            elif key.text in found:
                first = found[key.text][0].pos.line
                self.error(
                    key.pos, f'key "{key.text}" given twice in {what} (first on line {first})'
                )
            else:
                found[key.text] = (key, value)
        for name in required:
            if name not in found:
                self.error(node.pos, f'{what} is missing "{name}"')
        return found

    def text(self, node: Node, what: str) -> str | None:
        if isinstance(node, Scalar) and not node.is_null:
            return node.text
        self.error(node.pos, f"{what} must be a text value, not {kind_of(node)}")
        return None

    def text_set(self, node: Node, what: str) -> frozenset[str] | None:
        """One value, or a non-empty list of values."""
        if isinstance(node, Scalar):
            value = self.text(node, what)
            return None if value is None else frozenset((value,))
        if not isinstance(node, Sequence):
            self.error(node.pos, f"{what} must be a value or a list of values, not a mapping")
            return None
        if not node.items:
            self.error(node.pos, f"{what}: an empty list matches nothing")
            return None
        if len(node.items) > MAX_SET_VALUES:
            self.error(node.pos, f"{what}: more than {MAX_SET_VALUES} values")
            return None
        values: set[str] = set()
        ok = True
        for item in node.items:
            value = self.text(item, f"each value of {what}")
            if value is None:
                ok = False
            elif value in values:
                self.warn(item.pos, f'{what}: "{value}" listed twice')
            else:
                values.add(value)
        return frozenset(values) if ok else None


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
