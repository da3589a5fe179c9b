"""Lineage invariants: what a child identity (an agent's sub-agent) may be.

Held on every path that creates an identity with a parent (CLI, API, import), not only
on a spawn endpoint:

- the parent exists and is **active** (a suspended or retired parent spawns nothing);
- the child's **owner is the parent's owner** (inherited: every agent traces back to
  the same human);
- the child's **scope is a subset** of the parent's: every label the child has, the
  parent has with the same value;
- the family is at most ``MAX_LINEAGE_DEPTH`` levels below its root;
- a parent has at most ``MAX_CHILDREN`` live children.

Pure checks over plain values; the inventory and the importer supply them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nhi_nac.errors import InvalidInput

#: Levels below the root (root = depth 0): a root agent, children, grandchildren, ...
MAX_LINEAGE_DEPTH = 3
#: Live (not retired) children one parent may have.
MAX_CHILDREN = 16


@dataclass(frozen=True)
class ParentFacts:
    ref: str
    status: str
    owner: str
    scope: Mapping[str, str]
    depth: int
    live_children: int


def check_child(parent: ParentFacts, owner: str, scope: Mapping[str, str]) -> None:
    """Raise InvalidInput with the reason if a child of ``parent`` may not exist."""
    if parent.status != "active":
        raise InvalidInput(f"parent {parent.ref} is {parent.status}; it cannot have new children")
    if owner != parent.owner:
        raise InvalidInput(f"a child's owner is inherited: {parent.ref} belongs to "
                           f"{parent.owner}, not {owner}")
    wider = sorted(f"{k}={v}" for k, v in scope.items() if parent.scope.get(k) != v)
    if wider:
        raise InvalidInput(f"child scope is wider than its parent {parent.ref}: "
                           f"{', '.join(wider)} not in the parent's scope")
    if parent.depth + 1 > MAX_LINEAGE_DEPTH:
        raise InvalidInput(f"lineage depth limit {MAX_LINEAGE_DEPTH} reached under "
                           f"{parent.ref}")
    if parent.live_children >= MAX_CHILDREN:
        raise InvalidInput(f"{parent.ref} already has {parent.live_children} children "
                           f"(limit {MAX_CHILDREN})")
