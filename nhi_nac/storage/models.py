"""The relational schema (SQLAlchemy 2 declarative), shared by SQLite and PostgreSQL.

Nothing is hard-deleted except NAS clients and MAC bindings: identities and owners
end in a terminal status, credentials in ``revoked``/``expired``, so history and the
audit chain always resolve.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timestamps are stored as naive UTC and always read back timezone-aware (UTC).

    SQLite has no time zones; this keeps both backends returning the same values.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {dt.datetime: UtcDateTime(), dict[str, Any]: JSON}


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    team: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime]
    departed_at: Mapped[dt.datetime | None]


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("kind", "name", name="uq_identities_kind_name"),
        Index("ix_identities_owner_status", "owner_id", "status"),
        # Partial: only the quarantined few, read every second by each node's segment
        # overlays (a scan of every identity otherwise).
        Index("ix_identities_quarantined", "quarantined_at",
              sqlite_where=text("quarantined_at IS NOT NULL"),
              postgresql_where=text("quarantined_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), index=True)
    allow_mab: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]
    last_rotated_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    last_seen_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]
    #: The owner-approved widest scope (label -> allowed values) an agent may reach by
    #: dynamic grants without asking; None: every grant needs the owner.
    ceiling: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: Quarantined identities are admitted only to the segment map's fallback (or
    #: rejected, if the fallback is reject) until an admin releases them.
    quarantined_at: Mapped[dt.datetime | None]
    quarantine_reason: Mapped[str | None] = mapped_column(String(300))


class IdentityLabel(Base):
    """Scope labels, one row each, so a label filter is an index lookup."""

    __tablename__ = "identity_labels"
    # Covering index: a label filter reads identity ids without touching the table.
    __table_args__ = (Index("ix_identity_labels_key_value", "key", "value", "identity_id"),)

    identity_id: Mapped[int] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class IdentityMac(Base):
    __tablename__ = "identity_macs"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)


class Credential(Base):
    """Certificate, API key or token metadata; never the secret itself."""

    __tablename__ = "credentials"
    __table_args__ = (Index("ix_credentials_identity_status", "identity_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    type: Mapped[str] = mapped_column(String(16))
    serial: Mapped[str | None] = mapped_column(String(48), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    #: SHA-256 of the certified public key (SPKI): one key, one identity.
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    profile: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime]
    last_rotated_at: Mapped[dt.datetime | None]
    not_before: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    pem: Mapped[str | None] = mapped_column(Text)


class NasClient(Base):
    __tablename__ = "nas_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)
    secret: Mapped[str] = mapped_column(String(128))
    vendor: Mapped[str] = mapped_column(String(16), default="generic")
    site: Mapped[str] = mapped_column(String(64), default="")
    require_message_authenticator: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime]


class AuditRecord(Base):
    """One link of the hash chain: ``hash = sha256(prev_hash || canonical(record))``."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(300), index=True)
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's tip, one row, locked by every appender so appends serialize."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class OutboxEvent(Base):
    """Events written in the same transaction as the change, published afterwards."""

    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for bulk INSERTs that skip the ORM."""
    return cast(Table, model.__table__)


class EnrollmentToken(Base):
    """A single-use bootstrap token bound to one identity; only its digest is stored."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))


class Finding(Base):
    """A governance problem on an identity (or an unmanaged subject such as a MAC)."""

    __tablename__ = "findings"
    __table_args__ = (
        UniqueConstraint("type", "subject", name="uq_findings_type_subject"),
        Index("ix_findings_state_type", "state", "type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    #: ``KIND/NAME`` for identities, ``mac/aa:bb:..`` for unmanaged devices.
    subject: Mapped[str] = mapped_column(String(300))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="open")
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[dt.datetime | None]


class Setting(Base):
    """Small named values that must survive restarts and be shared by nodes (CRL number)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DiscoveredDevice(Base):
    """A MAC seen on the network (MAB) that is not in the inventory: unmanaged."""

    __tablename__ = "discovered_devices"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    first_seen: Mapped[dt.datetime]
    last_seen: Mapped[dt.datetime]
    nas: Mapped[str] = mapped_column(String(64))
    port: Mapped[str] = mapped_column(String(128), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)


class Admission(Base):
    """One RADIUS decision, kept for a bounded retention period."""

    __tablename__ = "admissions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    nas: Mapped[str] = mapped_column(String(64))
    port: Mapped[str] = mapped_column(String(128), default="")
    mac: Mapped[str] = mapped_column(String(17), default="")
    method: Mapped[str] = mapped_column(String(16))
    identity: Mapped[str] = mapped_column(String(300), default="", index=True)
    decision: Mapped[str] = mapped_column(String(8))
    vlan: Mapped[int | None]
    reasons: Mapped[dict[str, Any]] = mapped_column(JSON)


class RadiusSession(Base):
    """A network session known from accounting (RFC 2866)."""

    __tablename__ = "radius_sessions"
    __table_args__ = (
        UniqueConstraint("nas", "acct_session_id", name="uq_radius_sessions_nas_session"),
        Index("ix_radius_sessions_identity_status", "identity", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nas: Mapped[str] = mapped_column(String(64))
    nas_address: Mapped[str] = mapped_column(String(64))
    acct_session_id: Mapped[str] = mapped_column(String(128))
    identity: Mapped[str] = mapped_column(String(300), default="")
    user_name: Mapped[str] = mapped_column(String(256), default="")
    mac: Mapped[str] = mapped_column(String(17), default="")
    port: Mapped[str] = mapped_column(String(128), default="")
    vlan: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="active")
    started_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    stopped_at: Mapped[dt.datetime | None]
    input_octets: Mapped[int] = mapped_column(BigInteger, default=0)
    output_octets: Mapped[int] = mapped_column(BigInteger, default=0)
    terminate_cause: Mapped[str | None] = mapped_column(String(32))


class UiSession(Base):
    """A web-console login: the cookie's digest, the API token it came from, its CSRF key."""

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class SegmentMapVersion(Base):
    """Every applied segment map, with who, when, why and its diff to the previous one."""

    __tablename__ = "segment_map_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[dt.datetime]
    author: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    diff: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)


class CoaRequest(Base):
    """One RFC 5176 Disconnect/CoA request sent to a NAS for one session, and its answer."""

    __tablename__ = "coa_requests"
    __table_args__ = (Index("ix_coa_requests_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime]
    trigger: Mapped[str] = mapped_column(String(64))
    identity: Mapped[str] = mapped_column(String(300), index=True)
    nas: Mapped[str] = mapped_column(String(64))
    nas_address: Mapped[str] = mapped_column(String(64))
    acct_session_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error_cause: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    answered_at: Mapped[dt.datetime | None]
    rtt_ms: Mapped[float | None]


class AgentGrant(Base):
    """A time-boxed extra scope label an agent asked for at runtime."""

    __tablename__ = "agent_grants"
    __table_args__ = (Index("ix_agent_grants_status_expires", "status", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    key: Mapped[str] = mapped_column(String(63))
    value: Mapped[str] = mapped_column(String(128))
    #: pending | active | denied | expired | timed_out | revoked
    status: Mapped[str] = mapped_column(String(16))
    duration_seconds: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[dt.datetime]
    decided_at: Mapped[dt.datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(320))
    expires_at: Mapped[dt.datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")


class AgentProofNonce(Base):
    """An agent proof already used, shared by every node on the database: the same proof
    sent to a second node is a replay too. Kept until the proof would be stale anyway."""

    __tablename__ = "agent_proof_nonces"

    #: sha256 of the certificate fingerprint and the proof's nonce, hex.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class EnforcedEvent(Base):
    """An outbox event the enforcer has claimed (above its shared cursor only): an event
    whose transaction committed after a later one's is still found, and claimed once."""

    __tablename__ = "enforced_events"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    claimed_at: Mapped[dt.datetime]
