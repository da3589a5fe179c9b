"""A small YAML node tree with positions, built from ruamel.yaml's parser events.

The loader wants three things that ruamel's own constructors do not give together:
every key and value with its line and column, duplicate keys reported rather than
silently overwritten, and scalars as the text the author wrote (so ``tier: 01`` is
the label value ``"01"``). Building the tree from events, iteratively, also lets us
bound nesting depth and refuse anchors, aliases and tags before they cost anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from segments.limits import MAX_NESTING_DEPTH
from segments.model import Pos

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


class YamlSyntaxError(Exception):
    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


@dataclass(slots=True)
class Scalar:
    text: str
    plain: bool
    pos: Pos

    @property
    def is_null(self) -> bool:
        return self.plain and self.text in _NULLS


@dataclass(slots=True)
class Sequence:
    pos: Pos
    items: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class Mapping:
    pos: Pos
    pairs: list[tuple[Node, Node]] = field(default_factory=list)


Node = Scalar | Sequence | Mapping


def kind_of(node: Node) -> str:
    if isinstance(node, Scalar):
        return "null" if node.is_null else "a scalar"
    return "a list" if isinstance(node, Sequence) else "a mapping"


def _pos(mark: Any) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


def parse_tree(text: str) -> Node | None:
    """Parse one YAML document into a node tree; None for an empty document.

    Raises YamlSyntaxError for malformed YAML, a second document, anchors, aliases,
    explicit tags and nesting deeper than MAX_NESTING_DEPTH.
    """
    yaml = YAML(typ="safe", pure=True)
    stack: list[tuple[Mapping | Sequence, Node | None]] = []
    pending_key: Node | None = None
    root: Node | None = None
    documents = 0
    try:
        for event in yaml.parse(text):
            if isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise YamlSyntaxError(
                        _pos(event.start_mark), "a segment map is one YAML document, found another"
                    )
                continue
            if isinstance(event, AliasEvent):
                raise YamlSyntaxError(
                    _pos(event.start_mark), "aliases (*name) are not supported; write the value out"
                )
            if isinstance(event, ScalarEvent | CollectionStartEvent):
                _refuse_anchor_and_tag(event)
            node: Node
            if isinstance(event, ScalarEvent):
                node = Scalar(event.value, event.style is None, _pos(event.start_mark))
            elif isinstance(event, MappingStartEvent | SequenceStartEvent):
                if len(stack) >= MAX_NESTING_DEPTH:
                    raise YamlSyntaxError(
                        _pos(event.start_mark), f"nested deeper than {MAX_NESTING_DEPTH} levels"
                    )
                start = _pos(event.start_mark)
                coll: Mapping | Sequence = (
                    Mapping(start) if isinstance(event, MappingStartEvent) else Sequence(start)
                )
                stack.append((coll, pending_key))
                pending_key = None
                continue
            elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                done, pending_key = stack.pop()
                node = done
            else:
                continue
            # Attach the finished node to its parent (or make it the root).
            if not stack:
                root = node
            else:
                parent = stack[-1][0]
                if isinstance(parent, Sequence):
                    parent.items.append(node)
                elif pending_key is None:
                    pending_key = node
                else:
                    parent.pairs.append((pending_key, node))
                    pending_key = None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = _pos(mark) if mark is not None else Pos(1, 1)
        raise YamlSyntaxError(pos, f"YAML syntax: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise YamlSyntaxError(Pos(1, 1), f"YAML: {exc}") from None
    return root


def _refuse_anchor_and_tag(event: Any) -> None:
    if event.anchor is not None:
        raise YamlSyntaxError(
            _pos(event.start_mark), f"anchors (&{event.anchor}) are not supported"
        )
    if event.tag is not None:
        raise YamlSyntaxError(
            _pos(event.start_mark), f"explicit tags ({event.tag}) are not supported"
        )
