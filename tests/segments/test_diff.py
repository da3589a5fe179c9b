"""Map diffs for history, and assignment diffs over a population for preview."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import segments
from segments import (
    CompiledMatcher,
    SegmentMap,
    Subject,
    diff_assignments,
    diff_maps,
    load_segment_map,
    reference_assign,
    text_diff,
)
from tests.segments.strategies import segment_maps, subjects

STARTER_TEXT = (Path(segments.__file__).parent / "examples" / "starter.yaml").read_text()
STARTER = load_segment_map(STARTER_TEXT)

# The proposed change: printers move to VLAN 121, cameras get their own segment,
# phones' rule is dropped, and the agents rule is renamed in place.
PROPOSED = load_segment_map(
    STARTER_TEXT.replace("vlan: 120", "vlan: 121")
    .replace("  lab:\n", "  cameras:\n    vlan: 131\n  lab:\n")
    .replace(
        "        function: [camera, badge-reader, hvac]", "        function: [badge-reader, hvac]"
    )
    .replace(
        "  - name: phones\n    match:\n      kind: device\n      scope:\n"
        "        function: phone\n    segment: voip\n",
        "  - name: cameras\n    match:\n      kind: device\n      scope:\n"
        "        function: camera\n    segment: cameras\n",
    )
)

POPULATION = [
    ("device/printer-1", Subject("device", {"function": "printer"})),
    ("device/cam-1", Subject("device", {"function": "camera"})),
    ("device/phone-1", Subject("device", {"function": "phone"})),
    ("device/hvac-1", Subject("device", {"function": "hvac"})),
    ("workload/api", Subject("workload", {"env": "prod"})),
    ("api_key/ci", Subject("api_key", {"env": "prod"})),
]


def test_map_diff_lists_segment_and_rule_changes() -> None:
    d = diff_maps(STARTER, PROPOSED)
    assert [s.name for s in d.segments_added] == ["cameras"]
    assert d.segments_removed == ()
    (changed,) = d.segments_changed
    assert (changed.name, changed.changed_fields) == ("printers", ("vlan",))
    # building-iot keeps its place and name: changed; phones gives way to cameras.
    assert [(c.kind, c.old_index, c.new_index) for c in d.rules] == [
        ("changed", 2, 2),
        ("removed", 3, None),
        ("added", None, 3),
    ]
    summary = d.summary()
    assert "+ segment cameras (VLAN 131)" in summary
    assert "~ segment printers: vlan 120 -> 121" in summary
    assert '+ rule 4 "cameras" -> segment cameras' in summary
    assert '- rule 4 "phones" (was -> segment voip)' in summary
    assert '~ rule 3 "building-iot": conditions changed' in summary
    assert d.fallback is None and not d.empty


def test_map_diff_of_equal_maps_is_empty() -> None:
    d = diff_maps(STARTER, load_segment_map(STARTER_TEXT))
    assert d.empty and d.summary() == [] and text_diff(STARTER, STARTER) == ""


def test_map_diff_fallback_and_rule_retarget() -> None:
    text = STARTER_TEXT.replace("fallback:\n  segment: quarantine", "fallback: reject").replace(
        "        env: staging\n    segment: staging", "        env: staging\n    segment: dev"
    )
    d = diff_maps(STARTER, load_segment_map(text))
    assert d.summary() == [
        '~ rule 7 "staging-workloads": segment staging -> dev',
        "~ fallback: quarantine -> reject",
    ]


def test_text_diff_is_a_unified_diff_of_canonical_texts() -> None:
    diff = text_diff(STARTER, PROPOSED, "v1", "v2")
    assert diff.startswith("--- v1\n+++ v2\n")
    assert "-    vlan: 120\n+    vlan: 121\n" in diff


def test_assignment_diff_over_a_population() -> None:
    d = diff_assignments(STARTER, PROPOSED, POPULATION, max_examples=2)
    assert d.total == 6
    assert d.moved == {"device/printer-1", "device/cam-1", "device/phone-1"}
    assert d.unchanged == 3
    assert d.transitions == {(120, 121): 1, (130, 131): 1, (140, 999): 1}
    assert len(d.examples) == 2  # bounded; the counts are not
    first = d.examples[0]
    assert (first.identity_id, first.old.vlan, first.new.vlan) == ("device/printer-1", 120, 121)
    assert (d.to_fallback, d.newly_to_fallback) == (2, 1)  # api_key/ci always, phone newly
    assert d.fallback_examples == ("device/phone-1", "api_key/ci")
    assert d.summary()[0] == "3 of 6 identities change segment"


def test_renaming_a_segment_alone_moves_no_one() -> None:
    renamed = load_segment_map(
        STARTER_TEXT.replace("  prod:\n", "  production:\n").replace(
            "segment: prod\n", "segment: production\n"
        )
    )
    d = diff_assignments(STARTER, renamed, POPULATION)
    assert d.moved == frozenset() and d.transitions == {}


def test_assignment_diff_accepts_compiled_matchers_and_generators() -> None:
    old, new = CompiledMatcher(STARTER), CompiledMatcher(PROPOSED)
    d = diff_assignments(old, new, (p for p in POPULATION))
    assert d.total == 6 and len(d.moved) == 3


@settings(max_examples=100, deadline=None)
@given(segment_maps(), segment_maps(), st.lists(subjects(), max_size=20))
def test_assignment_diff_agrees_with_reference(
    old: SegmentMap, new: SegmentMap, population: list[Subject]
) -> None:
    pairs = [(f"id{i}", s) for i, s in enumerate(population)]
    d = diff_assignments(old, new, pairs)
    expected = {
        identity
        for identity, s in pairs
        if reference_assign(old, s).outcome != reference_assign(new, s).outcome
    }
    assert d.moved == expected
    assert sum(d.transitions.values()) == len(expected)
    assert d.to_fallback == sum(1 for _, s in pairs if reference_assign(new, s).rule_index is None)
