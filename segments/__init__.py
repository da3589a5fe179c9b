"""The segment mapper: which documented scope belongs on which VLAN.

A pure library (no I/O, never imports ``nhi_nac``). The service calls:

- ``validate_segment_map(text, filename) -> Validation`` — the map (None if any
  error) and every ``Problem`` with file, line and column; ``load_segment_map``
  raises ``SegmentMapInvalid`` instead. An invalid map is refused whole.
- ``CompiledMatcher(segment_map)`` once per map version, then ``.assign(subject)`` or
  ``.lookup(kind, scope, owner_team, nas_site)`` per request -> ``Assignment``.
- ``diff_assignments(old, new, population)`` and ``fallback_warnings(map,
  population)`` to preview who a change affects; ``diff_maps`` / ``text_diff`` for
  history; ``dump_segment_map`` for the canonical text to store.
"""

from segments.checks import check_segment_map, shadowing
from segments.diff import MapDiff, RuleChange, SegmentChange, diff_maps, text_diff
from segments.dump import dump_segment_map
from segments.errors import (
    Problem,
    SegmentError,
    SegmentInternalError,
    SegmentMapInvalid,
    Severity,
)
from segments.loader import Validation, load_segment_map, validate_segment_map
from segments.matcher import CompiledMatcher, compile_map
from segments.model import (
    IDENTITY_KINDS,
    Assignment,
    Fallback,
    LabelMatch,
    Metadata,
    Op,
    Rule,
    Segment,
    SegmentMap,
    Subject,
)
from segments.preview import AssignmentDiff, Move, diff_assignments, fallback_warnings
from segments.reference import reference_assign

__all__ = [
    "IDENTITY_KINDS",
    "Assignment",
    "AssignmentDiff",
    "CompiledMatcher",
    "Fallback",
    "LabelMatch",
    "MapDiff",
    "Metadata",
    "Move",
    "Op",
    "Problem",
    "Rule",
    "RuleChange",
    "Segment",
    "SegmentChange",
    "SegmentError",
    "SegmentInternalError",
    "SegmentMap",
    "SegmentMapInvalid",
    "Severity",
    "Subject",
    "Validation",
    "check_segment_map",
    "compile_map",
    "diff_assignments",
    "diff_maps",
    "dump_segment_map",
    "fallback_warnings",
    "load_segment_map",
    "reference_assign",
    "shadowing",
    "text_diff",
    "validate_segment_map",
]
