"""Names a certificate may carry: SPIFFE IDs and DNS names, checked before use.

The SPIFFE ID spec (``SPIFFE-ID.md`` §2.1, §2.2) limits a trust domain to
lowercase letters, digits, ``.``, ``-`` and ``_``, and a path segment to letters,
digits, ``.``, ``-`` and ``_`` (never ``.`` or ``..`` alone). We build IDs as
``spiffe://<trust-domain>/<kind>/<name>`` so that every certificate names
exactly one identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pki.errors import PolicyViolation

#: SPIFFE-ID.md §2.1: a trust domain is at most 255 characters.
MAX_TRUST_DOMAIN_LENGTH = 255
#: SPIFFE-ID.md §2.3: the whole URI is at most 2048 bytes.
MAX_SPIFFE_ID_LENGTH = 2048
#: RFC 1035 §2.3.4: a DNS name is at most 253 characters written out.
MAX_DNS_NAME_LENGTH = 253

SPIFFE_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain, else raise."""
    if not trust_domain or len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise PolicyViolation(f"trust domain must be 1 to {MAX_TRUST_DOMAIN_LENGTH} characters")
    if _TRUST_DOMAIN.fullmatch(trust_domain) is None:
        raise PolicyViolation(
            f"trust domain {trust_domain!r} may hold only lowercase letters, digits, '.', '-', '_'"
        )
    return trust_domain


def check_path_segment(segment: str, what: str) -> str:
    """Return ``segment`` if it is a valid SPIFFE path segment, else raise naming ``what``."""
    if _PATH_SEGMENT.fullmatch(segment) is None or segment in (".", ".."):
        raise PolicyViolation(
            f"{what} {segment!r} must be letters, digits, '.', '-' or '_' (a SPIFFE path segment)"
        )
    return segment


def check_dns_name(name: str) -> str:
    """Return ``name`` if it is a lowercase LDH host name (no wildcard), else raise."""
    labels = name.split(".")
    if (
        len(name) > MAX_DNS_NAME_LENGTH
        or len(labels) < 2
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
    ):
        raise PolicyViolation(
            f"DNS name {name!r} is not a lowercase host name with at least two labels"
        )
    return name


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """``spiffe://<trust_domain>/<kind>/<name>``: the one identity a certificate names."""

    trust_domain: str
    kind: str
    name: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_path_segment(self.kind, "identity kind")
        check_path_segment(self.name, "identity name")
        if len(self.uri) > MAX_SPIFFE_ID_LENGTH:
            raise PolicyViolation(f"SPIFFE ID is longer than {MAX_SPIFFE_ID_LENGTH} bytes")

    @property
    def uri(self) -> str:
        return f"{SPIFFE_SCHEME}{self.trust_domain}/{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse an ID of our two-segment form; anything else raises ``PolicyViolation``."""
        if not uri.startswith(SPIFFE_SCHEME):
            raise PolicyViolation(f"{uri!r} is not a spiffe:// URI")
        parts = uri[len(SPIFFE_SCHEME) :].split("/")
        if len(parts) != 3:
            raise PolicyViolation(f"{uri!r} is not spiffe://<trust-domain>/<kind>/<name>")
        return cls(parts[0], parts[1], parts[2])
