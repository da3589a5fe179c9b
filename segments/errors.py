"""The one error base of the segments package, and the problems a map can have.

``SegmentError`` splits, as h11 does, into what the map's author did wrong
(``SegmentMapInvalid``, carrying every ``Problem`` with file, line and column) and
what we did wrong (``SegmentInternalError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One finding about a map, located in its source (line and column count from 1).

    ``line`` and ``column`` are 0 when the map was built in code rather than loaded.
    """

    file: str
    line: int
    column: int
    severity: Severity
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        # The compiler format, so that editors can jump to the place.
        return f"{self.file}:{self.line}:{self.column}: {self.severity.value}: {self.message}"


class SegmentError(Exception):
    """Base of every error raised by ``segments``."""


class SegmentMapInvalid(SegmentError):
    """The map has at least one error; it was refused whole and nothing uses it.

    ``problems`` holds the errors and the warnings found alongside them, in source order.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems))
        errors = self.errors
        first = str(errors[0]) if errors else "no errors recorded"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid segment map: {first}{more}")

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.is_error)


class SegmentInternalError(SegmentError):
    """An invariant of this package broke: a bug here, not in the map."""
