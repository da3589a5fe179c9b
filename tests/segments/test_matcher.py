"""The compiled matcher against the reference matcher, and shadowing against brute force."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segments
from segments import (
    IDENTITY_KINDS,
    CompiledMatcher,
    Fallback,
    LabelMatch,
    Rule,
    Segment,
    SegmentMap,
    SegmentMapInvalid,
    Subject,
    load_segment_map,
    reference_assign,
    shadowing,
)
from segments.checks import _contains, _extent
from tests.segments.strategies import KEYS, SITES, TEAMS, VALUES, rules, segment_maps, subjects

STARTER = load_segment_map(
    (Path(segments.__file__).parent / "examples" / "starter.yaml").read_text()
)


def vlan_of(
    matcher: CompiledMatcher,
    kind: str,
    site: str | None = None,
    team: str | None = None,
    **scope: str,
) -> int | None:
    return matcher.assign(Subject(kind, scope, team, site)).vlan


def test_starter_map_assignments() -> None:
    m = CompiledMatcher(STARTER)
    assert vlan_of(m, "device", function="printer") == 120
    assert vlan_of(m, "device", function="camera") == 130
    assert vlan_of(m, "workload", env="prod") == 200
    assert vlan_of(m, "workload", env="prod", zone="pci") == 250
    assert vlan_of(m, "rpa_bot", env="prod", zone="pci") == 200  # pci rule names no rpa_bot
    assert vlan_of(m, "device", lab="x") == 999  # lab gear away from the lab
    assert vlan_of(m, "device", site="hq-lab", lab="x") == 150
    assert vlan_of(m, "ai_agent", env="dev") == 300
    assert vlan_of(m, "ai_agent", env="dev", sandbox="1") == 999
    assert vlan_of(m, "ai_agent") == 999
    assert vlan_of(m, "toaster", env="prod") == 999  # a kind no rule names


def test_assignment_says_which_rule() -> None:
    m = CompiledMatcher(STARTER)
    a = m.assign(Subject("device", {"function": "mfp"}))
    assert (a.rule_index, a.rule_name, a.by_fallback, a.rejected) == (1, "printers", False, False)
    assert a.outcome == (120, "printers-in", None)
    fb = m.assign(Subject("api_key"))
    assert fb.by_fallback and fb.segment is not None and fb.segment.name == "quarantine"


def test_reject_fallback() -> None:
    m = CompiledMatcher(
        SegmentMap((Segment("a", 10),), (Rule("a", kinds=frozenset({"device"})),), Fallback(None))
    )
    assert m.assign(Subject("device")).vlan == 10
    rejected = m.assign(Subject("workload"))
    assert rejected.rejected and rejected.by_fallback and rejected.outcome is None


def test_matcher_refuses_an_invalid_map_built_in_code() -> None:
    bad = SegmentMap((Segment("a", 5000),), (Rule("b"),), Fallback("c"))
    with pytest.raises(SegmentMapInvalid) as info:
        CompiledMatcher(bad)
    assert len(info.value.errors) == 3


def test_subject_is_immutable_and_copies_its_scope() -> None:
    scope = {"env": "prod"}
    s = Subject("workload", scope)
    scope["env"] = "dev"
    assert s.scope["env"] == "prod"
    with pytest.raises(TypeError):
        s.scope["env"] = "x"  # type: ignore[index]
    assert s == Subject("workload", {"env": "prod"}) and hash(s) == hash(
        Subject("workload", {"env": "prod"})
    )


def test_memo_stays_bounded_with_unique_label_values() -> None:
    m = CompiledMatcher(
        SegmentMap(
            (Segment("a", 10),), (Rule("a", labels=(LabelMatch.exists("host"),)),), Fallback(None)
        )
    )
    for i in range(1000):
        assert m.assign(Subject("device", {"host": f"h{i}"})).vlan == 10
    # Every unique value projects to "present": one memo entry.
    assert len(m._tables["device"].memo) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segment_maps(), st.lists(subjects(), min_size=1, max_size=30))
def test_compiled_matcher_agrees_with_reference(m: SegmentMap, population: list[Subject]) -> None:
    compiled = CompiledMatcher(m)
    plain = CompiledMatcher(m, memoize=False)
    for subject in population + population:  # the second pass is answered from the memo
        expected = reference_assign(m, subject)
        assert compiled.assign(subject) == expected
        assert plain.assign(subject) == expected


@settings(max_examples=100, deadline=None)
@given(segment_maps(), st.lists(subjects(), max_size=30))
def test_shadowed_rules_never_match(m: SegmentMap, population: list[Subject]) -> None:
    shadowed = {later for later, _ in shadowing(m)}
    for subject in population:
        if subject.kind in IDENTITY_KINDS:
            assert reference_assign(m, subject).rule_index not in shadowed


# A finite universe that represents every subject for rules drawn from the small
# vocabulary: per label, absent, each named value, or some other value.
_SMALL = VALUES[:2]
_UNIVERSE = [
    Subject(kind, {k: v for k, v in zip(KEYS[:2], vals, strict=True) if v is not None}, team, site)
    for kind in IDENTITY_KINDS[:5]
    for vals in itertools.product((None, *_SMALL, "other"), repeat=2)
    for team in (None, *TEAMS[:2], "other")
    for site in (None, SITES[0], "other")
]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_shadowing_is_exact_for_one_earlier_rule(data: st.DataObject) -> None:
    seg = SegmentMap((Segment("s", 1),), (), Fallback(None))
    pick = rules(["s"], _SMALL)
    outer, inner = data.draw(pick), data.draw(pick)
    # Keep to labels and values the universe covers.
    outer, inner = (
        Rule(
            "s",
            kinds=r.kinds,
            labels=tuple(m for m in r.labels if m.key in KEYS[:2]),
            owner_teams=None if r.owner_teams is None else r.owner_teams & {"t1", "t2"} or None,
            nas_sites=None if r.nas_sites is None else r.nas_sites & {"s1"} or None,
        )
        for r in (outer, inner)
    )
    brute = all(
        reference_assign(SegmentMap(seg.segments, (outer,), seg.fallback), s).rule_index == 0
        for s in _UNIVERSE
        if reference_assign(SegmentMap(seg.segments, (inner,), seg.fallback), s).rule_index == 0
    )
    assert _contains(_extent(outer), _extent(inner)) == brute


def _pairwise_shadowing(m: SegmentMap) -> list[tuple[int, int]]:
    extents = [_extent(r) for r in m.rules]
    found = []
    for later in range(len(extents)):
        for earlier in range(later):
            if _contains(extents[earlier], extents[later]):
                found.append((later, earlier))
                break
    return found


@settings(max_examples=150, deadline=None)
@given(segment_maps(max_rules=12))
def test_indexed_shadowing_equals_pairwise(m: SegmentMap) -> None:
    assert list(shadowing(m)) == _pairwise_shadowing(m)
