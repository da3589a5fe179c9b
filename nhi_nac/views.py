"""Read models handed to the CLI and the API: frozen, JSON-ready."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def to_json(obj: Any) -> Any:
    """Dataclass/datetime tree → JSON-compatible values."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_json(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return _iso(obj)
    return obj


@dataclass(frozen=True)
class OwnerView:
    email: str
    name: str
    team: str
    status: str
    created_at: dt.datetime
    departed_at: dt.datetime | None
    identities: int = 0


@dataclass(frozen=True)
class CredentialView:
    type: str
    fingerprint: str
    serial: str | None
    profile: str
    status: str
    created_at: dt.datetime
    last_rotated_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    #: The RFC 5280 reason of a revoked certificate (None while it is not).
    revocation_reason: str | None = None


@dataclass(frozen=True)
class IdentityView:
    kind: str
    name: str
    owner: str
    owner_status: str
    status: str
    scope: dict[str, str]
    macs: tuple[str, ...]
    parent: str | None
    allow_mab: bool
    description: str
    created_at: dt.datetime
    last_rotated_at: dt.datetime | None
    expires_at: dt.datetime | None
    last_seen_at: dt.datetime | None
    retired_at: dt.datetime | None
    credentials: tuple[CredentialView, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class NasView:
    name: str
    address: str
    vendor: str
    site: str
    require_message_authenticator: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class OffboardReport:
    owner: str
    orphaned: tuple[str, ...]
    reassigned_to: str | None
    reassigned: tuple[str, ...]


@dataclass(frozen=True)
class ImportReport:
    created: int
    rows: tuple[str, ...]


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    before: str | None
    after: str | None
    hash: str
