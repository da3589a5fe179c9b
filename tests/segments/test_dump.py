"""Canonical text: dump then load gives the same map, and dumping again the same text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segments
from segments import (
    Fallback,
    LabelMatch,
    Rule,
    Segment,
    SegmentMap,
    dump_segment_map,
    load_segment_map,
    validate_segment_map,
)
from tests.segments.strategies import segment_maps

EXAMPLES = sorted((Path(segments.__file__).parent / "examples").glob("*.yaml"))

# Scope values that look like other YAML types, or need quoting.
TRICKY_VALUES = ("null", "true", "01", "1.5", "a:b", "-x", "", "@a", "0x1f", "+1", ".5", "a/b")
# Free text: quotes, backslashes, newlines, tabs, control and non-ASCII characters.
FREE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path: Path) -> None:
    m = load_segment_map(path.read_text(), path.name)
    text = dump_segment_map(m)
    again = load_segment_map(text)
    assert again == m
    assert dump_segment_map(again) == text


def test_canonical_form() -> None:
    m = SegmentMap(
        (Segment("q", 999, 'say "hi"\n'), Segment("p", 120, filter_id="p-in")),
        (
            Rule(
                "p",
                name="printers",
                kinds=frozenset({"device"}),
                labels=(
                    LabelMatch.one_of("env", ["b", "a"]),
                    LabelMatch.equals("function", "01"),
                    LabelMatch.absent("x"),
                ),
            ),
            Rule("q"),
        ),
        Fallback("q"),
    )
    assert dump_segment_map(m) == (
        "segments:\n"
        "  q:\n"
        "    vlan: 999\n"
        '    description: "say \\"hi\\"\\x0a"\n'
        "  p:\n"
        "    vlan: 120\n"
        "    filter_id: p-in\n"
        "rules:\n"
        "  - name: printers\n"
        "    match:\n"
        "      kind: device\n"
        "      scope:\n"
        "        env: [a, b]\n"
        "        function: 01\n"
        "        x: {absent: true}\n"
        "    segment: p\n"
        "  - match: {}\n"
        "    segment: q\n"
        "fallback:\n"
        "  segment: q\n"
    )


def test_empty_map_round_trips() -> None:
    m = SegmentMap((), (), Fallback(None))
    assert dump_segment_map(m) == "segments: {}\nrules: []\nfallback: reject\n"
    assert load_segment_map(dump_segment_map(m)) == m


@settings(max_examples=150, deadline=None)
@given(segment_maps(values=TRICKY_VALUES, text=FREE_TEXT))
def test_random_maps_round_trip(m: SegmentMap) -> None:
    text = dump_segment_map(m)
    result = validate_segment_map(text)
    assert result.errors == (), text
    assert result.map == m
    assert dump_segment_map(result.map) == text
