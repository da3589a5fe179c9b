"""Pure domain values of the inventory: identity kinds, references, scope labels, MACs.

Nothing here does I/O; the storage layer and the protocol code both build on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from nhi_nac.errors import InvalidInput


class IdentityKind(StrEnum):
    DEVICE = "device"
    WORKLOAD = "workload"
    SERVICE_ACCOUNT = "service_account"
    API_KEY = "api_key"
    OAUTH_TOKEN = "oauth_token"
    RPA_BOT = "rpa_bot"
    AI_AGENT = "ai_agent"
    CERTIFICATE = "certificate"


#: The certificate profile (``pki.profiles``) of each kind that holds certificates; the
#: other kinds (API keys, OAuth tokens, certificates as identities) never enroll.
CERTIFICATE_PROFILE_FOR_KIND: dict[str, str] = {
    IdentityKind.DEVICE: "device", IdentityKind.WORKLOAD: "workload",
    IdentityKind.SERVICE_ACCOUNT: "workload", IdentityKind.RPA_BOT: "workload",
    IdentityKind.AI_AGENT: "ai_agent"}


class IdentityStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"


class OwnerStatus(StrEnum):
    ACTIVE = "active"
    DEPARTED = "departed"


#: Names are DNS-label-like so that they fit in a SPIFFE path segment unchanged.
MAX_NAME_LENGTH = 128
MAX_SCOPE_LABELS = 32
MAX_SCOPE_KEY_LENGTH = 63
MAX_SCOPE_VALUE_LENGTH = 128

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SCOPE_KEY_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_SCOPE_VALUE_RE = re.compile(r"^[A-Za-z0-9._:/@+-]*$")
_HEX = frozenset("0123456789abcdef")


def parse_kind(text: str) -> IdentityKind:
    try:
        return IdentityKind(text)
    except ValueError:
        allowed = ", ".join(k.value for k in IdentityKind)
        raise InvalidInput(f"unknown identity kind {text!r} (one of: {allowed})") from None


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid identity name {name!r}: 1-{MAX_NAME_LENGTH} characters of "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class IdentityRef:
    """An identity as people write it: ``KIND/NAME``."""

    kind: IdentityKind
    name: str

    @classmethod
    def parse(cls, text: str) -> IdentityRef:
        kind, sep, name = text.partition("/")
        if not sep:
            raise InvalidInput(f"identity reference {text!r} is not KIND/NAME")
        return cls(parse_kind(kind), check_name(name))

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


def check_scope_label(key: str, value: str) -> tuple[str, str]:
    if not key or len(key) > MAX_SCOPE_KEY_LENGTH or not _SCOPE_KEY_RE.match(key):
        raise InvalidInput(
            f"invalid scope key {key!r}: must match [a-z][a-z0-9_.-]* "
            f"and be at most {MAX_SCOPE_KEY_LENGTH} characters"
        )
    if len(value) > MAX_SCOPE_VALUE_LENGTH or not _SCOPE_VALUE_RE.match(value):
        raise InvalidInput(
            f"invalid scope value {value!r} for {key!r}: at most {MAX_SCOPE_VALUE_LENGTH} "
            "characters of letters, digits and ._:/@+-"
        )
    return key, value


def parse_scope(items: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings into a validated scope; a key given twice is an error."""
    scope: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"scope label {item!r} is not key=value")
        check_scope_label(key, value)
        if key in scope:
            raise InvalidInput(f"scope key {key!r} given twice")
        scope[key] = value
    return check_scope(scope)


def check_scope(scope: Mapping[str, str]) -> dict[str, str]:
    if len(scope) > MAX_SCOPE_LABELS:
        raise InvalidInput(f"too many scope labels ({len(scope)} > {MAX_SCOPE_LABELS})")
    for key, value in scope.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput("scope labels must be strings")
        check_scope_label(key, value)
    return dict(sorted(scope.items()))


def format_scope(scope: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(scope.items()))


def normalize_mac(text: str) -> str:
    """Return a MAC as ``aa:bb:cc:dd:ee:ff`` from any common notation.

    Accepted: ``aa:bb:cc:dd:ee:ff``, ``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` (Cisco),
    ``aabbccddeeff`` (bare, as many switches send it in MAB). Raises InvalidInput otherwise.
    """
    mac = try_normalize_mac(text)
    if mac is None:
        raise InvalidInput(f"invalid MAC address {text!r}")
    return mac


def try_normalize_mac(text: str) -> str | None:
    """Like :func:`normalize_mac` but returns None for a non-MAC (RADIUS hot path)."""
    s = text.strip().lower()
    n = len(s)
    if n == 12:
        digits = s
    elif n == 17 and (s.count(":") == 5 or s.count("-") == 5):
        sep = s[2]
        if any(s[i] != sep for i in (2, 5, 8, 11, 14)):
            return None
        digits = s.replace(sep, "")
    elif n == 14 and s[4] == "." and s[9] == ".":
        digits = s.replace(".", "")
    else:
        return None
    if len(digits) != 12 or not _HEX.issuperset(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def spiffe_id(trust_domain: str, ref: IdentityRef) -> str:
    """The one URI SAN every certificate carries: ``spiffe://<td>/<kind>/<name>``."""
    return f"spiffe://{trust_domain}/{ref.kind.value}/{ref.name}"
