"""Hypothesis strategies for random segment maps and subjects.

Vocabularies are small on purpose, so that random rules and random subjects meet.
"""

from __future__ import annotations

from hypothesis import strategies as st

from segments import (
    IDENTITY_KINDS,
    Fallback,
    LabelMatch,
    Metadata,
    Rule,
    Segment,
    SegmentMap,
    Subject,
)

KEYS = ("env", "zone", "function", "lab")
VALUES = ("a", "b", "c", "d")
TEAMS = ("t1", "t2", "t3")
SITES = ("s1", "s2")
# Kinds a subject may have: the inventory's, and one the map has never heard of.
SUBJECT_KINDS = (*IDENTITY_KINDS, "robot")


def _set(pool: tuple[str, ...]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(pool), min_size=1, max_size=3)


def label_matches(values: tuple[str, ...] = VALUES) -> st.SearchStrategy[LabelMatch]:
    key = st.sampled_from(KEYS)
    return st.one_of(
        st.builds(LabelMatch.equals, key, st.sampled_from(values)),
        st.builds(LabelMatch.one_of, key, _set(values)),
        st.builds(LabelMatch.exists, key),
        st.builds(LabelMatch.absent, key),
    )


@st.composite
def rules(draw: st.DrawFn, segment_names: list[str], values: tuple[str, ...] = VALUES) -> Rule:
    matches = draw(st.lists(label_matches(values), max_size=3, unique_by=lambda m: m.key))
    return Rule(
        segment=draw(st.sampled_from(segment_names)),
        kinds=draw(st.none() | _set(IDENTITY_KINDS[:4])),
        labels=tuple(matches),
        owner_teams=draw(st.none() | _set(TEAMS)),
        nas_sites=draw(st.none() | _set(SITES)),
    )


@st.composite
def segment_maps(
    draw: st.DrawFn,
    max_rules: int = 8,
    values: tuple[str, ...] = VALUES,
    text: st.SearchStrategy[str] | None = None,
) -> SegmentMap:
    names = draw(
        st.lists(
            st.sampled_from(("q", "p", "iot", "prod", "dev", "lab")),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    vlans = draw(
        st.lists(st.integers(1, 4094), min_size=len(names), max_size=len(names), unique=True)
    )
    text = text if text is not None else st.just("")
    segments = tuple(
        Segment(
            name,
            vlan,
            description=draw(text),
            filter_id=draw(st.none() | st.sampled_from(("f1", "acl-in", "x y"))),
        )
        for name, vlan in zip(names, vlans, strict=True)
    )
    rule_list = draw(st.lists(rules(names, values), max_size=max_rules))
    named = [
        Rule(
            r.segment,
            draw(st.none() | st.just(f"r{i}")),
            r.kinds,
            r.labels,
            r.owner_teams,
            r.nas_sites,
            draw(text),
        )
        for i, r in enumerate(rule_list)
    ]
    fallback = Fallback(draw(st.none() | st.sampled_from(names)))
    metadata = Metadata(draw(text), draw(text))
    return SegmentMap(segments, tuple(named), fallback, metadata)


@st.composite
def subjects(draw: st.DrawFn, values: tuple[str, ...] = (*VALUES, "zz")) -> Subject:
    scope = draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(values), max_size=4))
    return Subject(
        kind=draw(st.sampled_from(SUBJECT_KINDS)),
        scope=scope,
        owner_team=draw(st.none() | st.sampled_from((*TEAMS, "t9"))),
        nas_site=draw(st.none() | st.sampled_from((*SITES, "s9"))),
    )
