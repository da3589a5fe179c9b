"""The segment map as values: segments, ordered rules, the fallback, and what a rule sees.

Everything here is a frozen dataclass. Source positions ride along in ``origin`` so
that problems found after loading can still name a line; they take no part in
equality, so a map loaded from text equals the same map built in code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

#: The identity kinds of the inventory (``nhi_nac.domain.IdentityKind``), re-declared
#: because ``segments`` never imports the service.
IDENTITY_KINDS: tuple[str, ...] = (
    "device",
    "workload",
    "service_account",
    "api_key",
    "oauth_token",
    "rpa_bot",
    "ai_agent",
    "certificate",
)


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """A place in the source, counted from 1; ``NOWHERE`` (0, 0) for maps built in code."""

    line: int
    column: int


NOWHERE = Pos(0, 0)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an object was written (``at``) and where each of its fields was."""

    at: Pos = NOWHERE
    fields: tuple[tuple[str, Pos], ...] = ()

    def of(self, name: str) -> Pos:
        for key, pos in self.fields:
            if key == name:
                return pos
        return self.at


NO_ORIGIN = Origin()


def _origin() -> Origin:
    return field(default=NO_ORIGIN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Segment:
    """A named network segment: the VLAN an identity lands on (RFC 3580 §3.31, RFC 4675).

    ``filter_id`` is sent as Filter-Id (RFC 2865 §5.11); ``acl`` names a vendor ACL
    or role that the service translates for the NAS's dialect.
    """

    name: str
    vlan: int
    description: str = ""
    filter_id: str | None = None
    acl: str | None = None
    origin: Origin = _origin()


class Op(StrEnum):
    """How a rule tests one scope label."""

    EQUALS = "equals"
    IN = "in"
    EXISTS = "exists"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """One condition on a scope label. ``values`` has one value for EQUALS, one or
    more for IN, and none for EXISTS and ABSENT."""

    key: str
    op: Op
    values: frozenset[str] = frozenset()
    origin: Origin = _origin()

    @classmethod
    def equals(cls, key: str, value: str) -> LabelMatch:
        return cls(key, Op.EQUALS, frozenset((value,)))

    @classmethod
    def one_of(cls, key: str, values: Iterable[str]) -> LabelMatch:
        return cls(key, Op.IN, frozenset(values))

    @classmethod
    def exists(cls, key: str) -> LabelMatch:
        return cls(key, Op.EXISTS)

    @classmethod
    def absent(cls, key: str) -> LabelMatch:
        return cls(key, Op.ABSENT)


@dataclass(frozen=True, slots=True)
class Rule:
    """An ordered rule: if every condition holds, the identity lands on ``segment``.

    A condition left as None (or no label conditions) places no constraint. A rule
    with a ``nas_sites`` condition only matches where the request's NAS site is known.
    Label conditions are kept sorted by key, so that the order they were written in
    does not make two equal rules differ.
    """

    segment: str
    name: str | None = None
    kinds: frozenset[str] | None = None
    labels: tuple[LabelMatch, ...] = ()
    owner_teams: frozenset[str] | None = None
    nas_sites: frozenset[str] | None = None
    description: str = ""
    origin: Origin = _origin()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.labels, key=lambda m: m.key))
        if ordered != self.labels:
            object.__setattr__(self, "labels", ordered)

    def display_name(self, number: int) -> str:
        """How messages name this rule: ``rule 3 "printers"`` (numbered from 1)."""
        return f'rule {number} "{self.name}"' if self.name else f"rule {number}"


@dataclass(frozen=True, slots=True)
class Fallback:
    """What an identity that matches no rule gets: a (quarantine) segment, or Access-Reject."""

    segment: str | None = None
    origin: Origin = _origin()

    @property
    def rejects(self) -> bool:
        return self.segment is None


@dataclass(frozen=True, slots=True)
class Metadata:
    author: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class SegmentMap:
    """A whole map. ``filename`` is where it came from, for messages; not compared."""

    segments: tuple[Segment, ...]
    rules: tuple[Rule, ...]
    fallback: Fallback
    metadata: Metadata = Metadata()
    filename: str = field(default="<segment map>", compare=False)

    def segment(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None


@dataclass(frozen=True, slots=True, eq=False)
class Subject:
    """What the matcher sees of one identity: its kind, documented scope, the team of
    its owner, and the site of the NAS it is connecting through (None outside a
    RADIUS request, e.g. when assigning the whole inventory)."""

    kind: str
    scope: Mapping[str, str] = field(default_factory=dict)
    owner_team: str | None = None
    nas_site: str | None = None

    def __post_init__(self) -> None:
        # A private read-only copy: the caller's dict may change, this subject may not.
        object.__setattr__(self, "scope", MappingProxyType(dict(self.scope)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Subject):
            return NotImplemented
        return (self.kind, dict(self.scope), self.owner_team, self.nas_site) == (
            other.kind,
            dict(other.scope),
            other.owner_team,
            other.nas_site,
        )

    def __hash__(self) -> int:
        return hash((self.kind, frozenset(self.scope.items()), self.owner_team, self.nas_site))


@dataclass(frozen=True, slots=True)
class Assignment:
    """The matcher's answer: a segment (None means reject), and which rule gave it
    (``rule_index`` from 0, None when the fallback did)."""

    segment: Segment | None
    rule_index: int | None = None
    rule_name: str | None = None

    @property
    def rejected(self) -> bool:
        return self.segment is None

    @property
    def by_fallback(self) -> bool:
        return self.rule_index is None

    @property
    def vlan(self) -> int | None:
        return None if self.segment is None else self.segment.vlan

    @property
    def outcome(self) -> tuple[int, str | None, str | None] | None:
        """What the NAS is told: (VLAN, Filter-Id, ACL), or None for Access-Reject.
        Two assignments with the same outcome need no change of session."""
        seg = self.segment
        return None if seg is None else (seg.vlan, seg.filter_id, seg.acl)
