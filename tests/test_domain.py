"""Pure domain values: MAC notations, scope labels, identity references."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhi_nac.domain import (
    IdentityRef,
    normalize_mac,
    parse_scope,
    spiffe_id,
    try_normalize_mac,
)
from nhi_nac.errors import InvalidInput


@pytest.mark.parametrize("text", ["aa:bb:cc:dd:ee:ff", "AA-BB-CC-DD-EE-FF", "aabb.ccdd.eeff",
                                  "AABBCCDDEEFF", " aa:bb:cc:dd:ee:ff "])
def test_mac_notations(text: str) -> None:
    assert normalize_mac(text) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("text", ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:gg", "aa-bb:cc-dd:ee-ff",
                                  "aabb.ccdd.ee", "aabbccddeeff00", "aa:bb:cc:dd:ee:f"])
def test_bad_macs(text: str) -> None:
    assert try_normalize_mac(text) is None
    with pytest.raises(InvalidInput, match="invalid MAC"):
        normalize_mac(text)


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ".", ""]),
       st.booleans())
def test_every_notation_of_a_mac_normalises_to_the_same(raw: bytes, sep: str, upper: bool) -> None:
    hexs = raw.hex()
    if sep == ".":
        text = ".".join(hexs[i : i + 4] for i in range(0, 12, 4))
    else:
        text = sep.join(hexs[i : i + 2] for i in range(0, 12, 2))
    text = text.upper() if upper else text
    assert normalize_mac(text) == ":".join(hexs[i : i + 2] for i in range(0, 12, 2))


@given(st.text(max_size=20))
def test_mac_parser_never_raises_anything_else(text: str) -> None:
    result = try_normalize_mac(text)
    assert result is None or len(result) == 17


def test_scope_parsing() -> None:
    assert parse_scope(["zone=pci", "env=prod"]) == {"env": "prod", "zone": "pci"}
    for bad, msg in [("zone", "not key=value"), ("Zone=x", "invalid scope key"),
                     ("zone=a b", "invalid scope value"), ("k" * 64 + "=v", "invalid scope key")]:
        with pytest.raises(InvalidInput, match=msg):
            parse_scope([bad])
    with pytest.raises(InvalidInput, match="given twice"):
        parse_scope(["a=1", "a=2"])
    with pytest.raises(InvalidInput, match="too many"):
        parse_scope([f"k{i}=v" for i in range(33)])


def test_identity_refs() -> None:
    ref = IdentityRef.parse("device/printer-3f-01")
    assert str(ref) == "device/printer-3f-01"
    assert spiffe_id("nhi.example", ref) == "spiffe://nhi.example/device/printer-3f-01"
    for bad in ["printer", "robot/x", "device/", "device/a b", "device/../x"]:
        with pytest.raises(InvalidInput):
            IdentityRef.parse(bad)
