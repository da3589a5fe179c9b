"""The loader's one allowed outcome for any input: a Validation (map or problems).

It must never raise, and a map it returns must compile.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import segments
from segments import CompiledMatcher, validate_segment_map

STARTER = (Path(segments.__file__).parent / "examples" / "starter.yaml").read_text()

_WORDS = st.sampled_from(
    [
        "segments",
        "rules",
        "fallback",
        "metadata",
        "vlan",
        "match",
        "kind",
        "scope",
        "segment",
        "reject",
        "in",
        "exists",
        "absent",
        "equals",
        "device",
        "q",
        "env",
        "prod",
    ]
)
_LEAVES = _WORDS | st.integers(-5, 5000) | st.booleans() | st.none() | st.text(max_size=5)
_DOCS = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=4),
    max_leaves=30,
)


def _outcome(text: str) -> None:
    result = validate_segment_map(text, "fuzz.yaml")
    if result.map is not None:
        CompiledMatcher(result.map)
    else:
        assert result.errors


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    _outcome(text)


@settings(max_examples=200, deadline=None)
@given(_DOCS)
def test_any_document_shape(doc: object) -> None:
    _outcome(json.dumps(doc))  # JSON is YAML


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(STARTER) - 1), st.integers(0, 40), st.text(max_size=3))
def test_edits_of_the_starter_map(at: int, cut: int, insert: str) -> None:
    _outcome(STARTER[:at] + insert + STARTER[at + cut :])
