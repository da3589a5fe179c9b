"""Loading and validating segment maps: each kind of error, with its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

import segments
from segments import (
    Op,
    SegmentMapInvalid,
    Severity,
    Subject,
    fallback_warnings,
    load_segment_map,
    validate_segment_map,
)
from segments.limits import MAX_DOCUMENT_CHARS, MAX_RULES, MAX_SEGMENTS

EXAMPLES = Path(segments.__file__).parent / "examples"

GOOD = """\
segments:
  quarantine:
    vlan: 999
  printers:
    vlan: 120
rules:
  - name: printers
    match:
      kind: device
      scope: {function: printer}
    segment: printers
fallback:
  segment: quarantine
"""


def errors(text: str) -> list[tuple[int, int, str]]:
    result = validate_segment_map(text, "map.yaml")
    assert result.map is None, "a map with errors must not be returned"
    with pytest.raises(SegmentMapInvalid) as info:
        load_segment_map(text, "map.yaml")
    assert info.value.errors == result.errors
    assert all(p.file == "map.yaml" for p in result.problems)
    return [(p.line, p.column, p.message) for p in result.errors]


def the_error(text: str) -> tuple[int, int, str]:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


def warnings(text: str) -> list[tuple[int, str]]:
    result = validate_segment_map(text, "map.yaml")
    assert result.ok, result.errors
    return [(p.line, p.message) for p in result.warnings]


def test_good_map_loads() -> None:
    m = load_segment_map(GOOD, "map.yaml")
    assert [s.name for s in m.segments] == ["quarantine", "printers"]
    assert m.segments[1].vlan == 120
    (rule,) = m.rules
    assert rule.name == "printers" and rule.kinds == {"device"}
    assert rule.labels[0].op is Op.EQUALS and rule.labels[0].values == {"printer"}
    assert m.fallback.segment == "quarantine"
    assert validate_segment_map(GOOD).problems == ()


@pytest.mark.parametrize("name", ["starter.yaml", "strict-reject.yaml"])
def test_examples_are_valid_without_warnings(name: str) -> None:
    result = validate_segment_map((EXAMPLES / name).read_text(), name)
    assert result.ok and result.problems == ()


def test_yaml_syntax_error_has_its_line() -> None:
    line, _, message = the_error(GOOD.replace("vlan: 120", "vlan: [120"))
    assert line == 6 and "YAML syntax" in message


def test_tab_indentation_is_a_syntax_error() -> None:
    line, _, _ = the_error(GOOD.replace("    vlan: 120", "\tvlan: 120"))
    assert line == 5


@pytest.mark.parametrize("vlan", ["0", "4095", "70000"])
def test_vlan_out_of_range(vlan: str) -> None:
    assert the_error(GOOD.replace("vlan: 120", f"vlan: {vlan}")) == (
        5,
        11,
        f'VLAN {vlan} of segment "printers" is out of range (1-4094)',
    )


@pytest.mark.parametrize("vlan", ['"120"', "1.5", "abc", "0x78", "[120]", "~", "-5"])
def test_vlan_must_be_a_decimal_number(vlan: str) -> None:
    line, column, message = the_error(GOOD.replace("vlan: 120", f"vlan: {vlan}"))
    assert (line, column) == (5, 11) and "VLAN must be a whole number" in message


def test_duplicate_segment_name() -> None:
    text = GOOD.replace(
        "  printers:\n    vlan: 120", "  printers:\n    vlan: 120\n  printers:\n    vlan: 121"
    )
    assert the_error(text) == (6, 3, 'segment "printers" is defined twice (first on line 4)')


def test_duplicate_vlan() -> None:
    text = GOOD.replace("    vlan: 120", "    vlan: 120\n  scanners:\n    vlan: 120")
    assert errors(text) == [
        (7, 11, 'VLAN 120 of segment "scanners" is already used by segment "printers" (line 4)')
    ]


def test_rule_naming_a_missing_segment() -> None:
    text = GOOD.replace("segment: printers", "segment: printer")
    assert the_error(text) == (
        11,
        14,
        'rule 1 "printers" names segment "printer", which is not defined',
    )


def test_fallback_naming_a_missing_segment() -> None:
    text = GOOD.replace("segment: quarantine", "segment: quarantaine")
    assert the_error(text) == (
        13,
        12,
        'the fallback names segment "quarantaine", which is not defined',
    )


@pytest.mark.parametrize(
    ("old", "new", "where", "words"),
    [
        ("      kind: device", "      kinds: device", (9, 7), 'unknown key "kinds" in match'),
        (
            "  printers:\n    vlan: 120",
            "  printers:\n    vlan: 120\n    vlna: 3",
            (6, 5),
            '(did you mean "vlan"?)',
        ),
        ("fallback:", "fallbak: reject\nfallback:", (12, 1), 'unknown key "fallbak"'),
        (
            "    segment: printers",
            "    segment: printers\n    priority: 1",
            (12, 5),
            'unknown key "priority" in rule 1',
        ),
        ("{function: printer}", "{function: {is: printer}}", (10, 26), 'unknown operator "is"'),
        (
            "{function: printer}",
            "{function: {equals: a, in: [b]}}",
            (10, 25),
            "exactly one operator",
        ),
        ("{function: printer}", "{function: {exists: false}}", (10, 34), 'write "exists: true"'),
    ],
)
def test_unknown_keys_and_operators(old: str, new: str, where: tuple[int, int], words: str) -> None:
    line, column, message = the_error(GOOD.replace(old, new))
    assert (line, column) == where and words in message


@pytest.mark.parametrize(
    ("old", "new", "where", "words"),
    [
        (
            "    vlan: 120",
            "    description: no vlan",
            (5, 5),
            'segment "printers" is missing "vlan"',
        ),
        ("    segment: printers\n", "", (7, 5), 'rule 1 is missing "segment"'),
        ("fallback:\n  segment: quarantine\n", "", (1, 1), 'segment map is missing "fallback"'),
        (
            "    match:\n      kind: device\n      scope: {function: printer}\n",
            "",
            (7, 5),
            'rule 1 is missing "match"',
        ),
    ],
)
def test_missing_required_fields(old: str, new: str, where: tuple[int, int], words: str) -> None:
    text = GOOD.replace(old, new)
    if 'missing "fallback"' in words:
        text = text.replace("    vlan: 999", "    vlan: 999\n    description: q")
    found = errors(text)
    assert found[0][:2] == where and words in found[0][2], found


@pytest.mark.parametrize(
    ("old", "new", "where", "words"),
    [
        (
            GOOD[GOOD.index("rules:") : GOOD.index("fallback")],
            "rules: {}\n",
            (6, 8),
            "rules must be a list",
        ),
        ("kind: device", "kind: {device: true}", (9, 13), "kind must be a value or a list"),
        ("scope: {function: printer}", "scope: [function]", (10, 14), "scope of rule 1"),
        ("kind: device", "kind: []", (9, 13), "an empty list matches nothing"),
        ("{function: printer}", "{function: {in: printer}}", (10, 30), '"in" takes a list'),
        ("segment: quarantine", "segment: [quarantine]", (13, 12), "fallback segment must be"),
        (
            "fallback:\n  segment: quarantine",
            "fallback: quarantine",
            (12, 11),
            'fallback is "reject" or',
        ),
        ("  - name: printers", "  - name: [printers]", (7, 11), "rule name must be a text"),
        (
            "  printers:\n    vlan: 120",
            "  printers: 120",
            (4, 13),
            'segment "printers" must be a mapping',
        ),
    ],
)
def test_wrong_types(old: str, new: str, where: tuple[int, int], words: str) -> None:
    line, column, message = the_error(GOOD.replace(old, new))
    assert (line, column) == where and words in message, message


def test_unknown_kind_and_bad_label_names() -> None:
    assert the_error(GOOD.replace("kind: device", "kind: [device, printer]"))[:2] == (9, 13)
    line, _, message = the_error(GOOD.replace("function: printer", "Function: printer"))
    assert line == 10 and '"Function" is not a scope label name' in message
    line, _, message = the_error(GOOD.replace("function: printer", "function: 'a b'"))
    assert line == 10 and "can never be a value" in message


def test_duplicate_keys_are_errors() -> None:
    line, _, message = the_error(GOOD.replace("    vlan: 120", "    vlan: 120\n    vlan: 121"))
    assert line == 6 and 'key "vlan" given twice' in message
    line, _, message = the_error(
        GOOD.replace("{function: printer}", "{function: printer, function: mfp}")
    )
    assert line == 10 and 'scope label "function" given twice' in message


def test_duplicate_rule_names() -> None:
    text = GOOD.replace(
        "fallback:", "  - name: printers\n    match: {}\n    segment: quarantine\nfallback:"
    )
    found = errors(text)
    assert found == [(12, 11, 'rule name "printers" is used by rule 1 and rule 2')]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &x 1\n", "anchors"),
        ("segments: {}\nrules: []\nfallback: reject\n---\nx: 1\n", "one YAML document"),
        ("[" * 100 + "]" * 100, "nested deeper"),
        ("", "empty"),
        ("- 1\n", "is a mapping, not a list"),
        ("fallback: !!str reject\nsegments: {}\nrules: []\n", "tags"),
    ],
)
def test_document_shape(text: str, words: str) -> None:
    assert words in the_error(text)[2]


def test_alias_is_refused() -> None:
    text = GOOD.replace("{function: printer}", "{function: printer, env: *a}")
    assert "anchors" in the_error(text.replace("kind: device", "kind: &a device"))[2]


def test_limits_are_enforced() -> None:
    assert "larger than" in the_error("#" * (MAX_DOCUMENT_CHARS + 1))[2]
    many_rules = "".join("  - {match: {}, segment: quarantine}\n" for _ in range(MAX_RULES + 1))
    text = GOOD.replace("rules:\n", "rules:\n" + many_rules)
    assert any(f"more than {MAX_RULES}" in m for _, _, m in errors(text))
    many_segments = "".join(f"  s{i}: {{vlan: {i + 1}}}\n" for i in range(MAX_SEGMENTS + 1))
    found = errors(f"segments:\n{many_segments}rules: []\nfallback: reject\n")
    assert any(f"more than {MAX_SEGMENTS}" in m for _, _, m in found)


def test_all_errors_are_reported_at_once_and_no_map_is_returned() -> None:
    text = (
        GOOD.replace("vlan: 120", "vlan: 5000")
        .replace("kind: device", "kind: robot")
        .replace("segment: quarantine", "segment: nowhere")
    )
    result = validate_segment_map(text, "map.yaml")
    assert result.map is None and not result.ok
    assert [p.line for p in result.errors] == [5, 9, 13]
    assert str(result.errors[0]).startswith("map.yaml:5:11: error: VLAN 5000")


def test_shadowed_rule_is_a_warning_with_its_line() -> None:
    text = GOOD.replace(
        "fallback:",
        "  - name: hq-printers\n    match:\n      kind: device\n"
        "      scope: {function: printer, site: hq}\n    segment: quarantine\n"
        "fallback:",
    )
    assert warnings(text) == [
        (
            12,
            'rule 2 "hq-printers" can never match: rule 1 "printers" comes first and '
            "matches every identity it would",
        ),
    ]


def test_rule_that_is_not_shadowed_gives_no_warning() -> None:
    # Same label, but the later rule also admits identities the first one does not.
    text = GOOD.replace(
        "fallback:",
        "  - match:\n      scope: {function: [printer, mfp]}\n    segment: quarantine\nfallback:",
    )
    assert warnings(text) == []


def test_unused_segment_is_a_warning() -> None:
    text = GOOD.replace("    vlan: 120", "    vlan: 120\n  spare:\n    vlan: 7")
    assert warnings(text) == [
        (6, 'segment "spare" (VLAN 7) is not used by any rule or the fallback')
    ]


def test_repeated_value_in_a_set_is_a_warning() -> None:
    text = GOOD.replace("kind: device", "kind: [device, device]")
    assert warnings(text) == [(9, 'kind: "device" listed twice')]


def test_fallback_warning_for_active_identities() -> None:
    m = load_segment_map(GOOD, "map.yaml")
    population = [
        ("device/p1", Subject("device", {"function": "printer"})),
        ("device/cam", Subject("device", {"function": "camera"})),
        ("workload/api", Subject("workload", {"env": "prod"})),
    ]
    (problem,) = fallback_warnings(m, population)
    assert problem.severity is Severity.WARNING and (problem.line, problem.column) == (13, 3)
    assert problem.message.startswith(
        "2 active identities match no rule and fall to the "
        'fallback (segment "quarantine", VLAN 999)'
    )
    assert "device/cam, workload/api" in problem.message
    assert fallback_warnings(m, population[:1]) == []


def test_scalars_are_read_as_written() -> None:
    text = GOOD.replace("{function: printer}", "{tier: 01, flag: true, ver: 1.10}")
    rule = load_segment_map(text).rules[0]
    assert {m.key: set(m.values) for m in rule.labels} == {
        "tier": {"01"},
        "flag": {"true"},
        "ver": {"1.10"},
    }


def test_a_flood_of_warnings_does_not_refuse_the_map() -> None:
    spare = "".join(f"  spare{i}: {{vlan: {i + 1000}}}\n" for i in range(300))
    result = validate_segment_map(GOOD.replace("segments:\n", "segments:\n" + spare))
    assert result.ok and len(result.warnings) == 201
    assert result.warnings[-1].message == "100 more problems not shown"


def test_a_flood_of_problems_keeps_the_errors() -> None:
    spare = "".join(f"  spare{i}: {{vlan: {i + 1000}}}\n" for i in range(300))
    text = GOOD.replace("segments:\n", "segments:\n" + spare).replace("vlan: 999", "vlan: 0")
    result = validate_segment_map(text)
    assert not result.ok
    assert any("VLAN 0" in p.message for p in result.errors)
