"""The one error base of the service package.

``NhiError`` splits, as h11 does, into what the caller did wrong (``InvalidInput``,
``NotFound``, ``Conflict``, ``Forbidden``) and what we did wrong (``InternalError``).
Each carries the HTTP status the API answers with and a one-line message the CLI prints.
"""

from __future__ import annotations


class NhiError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def problem_extra(self) -> dict[str, object]:
        """Extension members of the RFC 9457 problem document (none by default)."""
        return {}


class InvalidInput(NhiError):
    """The request, file or value given to us is wrong; nothing was changed."""

    status = 400
    title = "Invalid input"


class NotFound(NhiError):
    status = 404
    title = "Not found"


class Conflict(NhiError):
    """The request clashes with what is stored (duplicate name, terminal state)."""

    status = 409
    title = "Conflict"


class Forbidden(NhiError):
    status = 403
    title = "Forbidden"


class Unauthorized(NhiError):
    status = 401
    title = "Unauthorized"


class Unavailable(NhiError):
    """Overloaded for now (a full queue); the client should retry later: the answer
    carries ``Retry-After`` (RFC 9110 §10.2.3) with ``retry_after`` seconds."""

    status = 503
    title = "Service unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(NhiError):
    """A configuration value is invalid; start-up stops with this one line."""

    title = "Invalid configuration"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


class InternalError(NhiError):
    """We did something wrong (a broken invariant, a failing backend)."""
