"""Bootstrap (enrollment) tokens: single use, short-lived, bound to one identity.

A token lets a workload enroll at boot without any other credential. Only its SHA-256
digest is stored: a token is 256 bits from ``secrets``, so a plain digest cannot be
brute-forced and a slow password hash would buy nothing. It is consumed inside the
issuing transaction, so a refused enrollment (bad CSR, policy) leaves the token usable
and a successful one burns it.

Minting is a handful of statements for any number of tokens (:func:`create_bootstrap_tokens`):
on SQLite each statement costs a thread hop of the async driver, which is what a token
used to cost (about 5 ms), not the hashing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.domain import (
    CERTIFICATE_PROFILE_FOR_KIND,
    IdentityRef,
    IdentityStatus,
    OwnerStatus,
)
from nhi_nac.errors import Forbidden, InvalidInput
from nhi_nac.inventory import Inventory
from nhi_nac.storage.models import EnrollmentToken, Identity, OutboxEvent, Owner, table_of

BOOTSTRAP_PREFIX = "nhb_"
DEFAULT_TTL = dt.timedelta(minutes=15)
MAX_TTL = dt.timedelta(hours=24)
MAX_TOKEN_LENGTH = 128
#: Identities per bulk minting call (one transaction).
MAX_TOKENS_PER_CALL = 10_000

# Statements built once (building one per call costs more than SQLite spends on it).
_IDENTITIES_BY_REF = (
    select(Identity.id, Identity.kind, Identity.name, Identity.status, Owner.status,
           Owner.email)
    .join(Owner, Owner.id == Identity.owner_id)
    .where(Identity.kind == bindparam("kind"), Identity.name.in_(bindparam("names",
                                                                          expanding=True)))
)
_INSERT_TOKEN = insert(table_of(EnrollmentToken))
_INSERT_EVENT = insert(table_of(OutboxEvent))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_bootstrap_token(
    inv: Inventory, ref: IdentityRef, ttl: dt.timedelta = DEFAULT_TTL, *, actor: str
) -> tuple[str, dt.datetime]:
    """Mint a token for ``ref``; returns (token, expires_at). The token is shown once."""
    (token, expires), = await create_bootstrap_tokens(inv, [ref], ttl, actor=actor)
    return token, expires


async def create_bootstrap_tokens(
    inv: Inventory, refs: Sequence[IdentityRef], ttl: dt.timedelta = DEFAULT_TTL, *,
    actor: str,
) -> list[tuple[str, dt.datetime]]:
    """Mint one token per identity in ``refs`` in one transaction, in the same order.

    All or nothing: an unknown or inactive identity, or a departed owner, refuses the
    whole call with the reason. Each token gets its own audit record and event.
    """
    if not dt.timedelta(seconds=30) <= ttl <= MAX_TTL:
        raise InvalidInput(f"token lifetime must be between 30s and {MAX_TTL}")
    if len(refs) > MAX_TOKENS_PER_CALL:
        raise InvalidInput(f"at most {MAX_TOKENS_PER_CALL} tokens per call")
    if not refs:
        return []
    for ref in refs:
        if ref.kind.value not in CERTIFICATE_PROFILE_FOR_KIND:
            raise InvalidInput(f"{ref.kind.value} identities do not hold certificates: a "
                               f"bootstrap token for {ref} could never be used")
    now = inv.clock()
    expires = now + ttl
    tokens = [BOOTSTRAP_PREFIX + secrets.token_urlsafe(32) for _ in refs]
    async with inv.db.transaction() as s:
        ids = await _active_identity_ids(s, refs)
        await s.execute(_INSERT_TOKEN, [
            {"identity_id": ids[ref], "token_hash": token_digest(token), "created_at": now,
             "expires_at": expires, "used_at": None, "created_by": actor}
            for ref, token in zip(refs, tokens, strict=True)])
        after = {"expires_at": expires.isoformat()}
        await audit.append_many(s, [(actor, "bootstrap_token.create", str(ref), None, after)
                                    for ref in refs], now)
        await s.execute(_INSERT_EVENT, [
            {"event_id": str(uuid.uuid4()), "type": "bootstrap_token.created", "at": now,
             "payload": {"identity": str(ref), "expires_at": expires.isoformat()},
             "published_at": None} for ref in refs])
    return [(token, expires) for token in tokens]


async def _active_identity_ids(s: AsyncSession, refs: Sequence[IdentityRef]
                               ) -> dict[IdentityRef, int]:
    """The id of every identity in ``refs``, refusing (as :func:`active_identity`) the
    first one that is missing, inactive or has a departed owner."""
    by_kind: dict[str, list[str]] = {}
    for ref in refs:
        by_kind.setdefault(ref.kind.value, []).append(ref.name)
    rows: dict[tuple[str, str], Any] = {}
    for kind, names in by_kind.items():
        for start in range(0, len(names), 500):
            result = await s.execute(_IDENTITIES_BY_REF,
                                     {"kind": kind, "names": names[start:start + 500]})
            rows.update({(r[1], r[2]): r for r in result.all()})
    ids = {}
    for ref in refs:
        row = rows.get((ref.kind.value, ref.name))
        if row is None:
            raise InvalidInput(f"no identity {ref}")
        check_active(ref, row[3], row[4], row[5])
        ids[ref] = row[0]
    return ids


def check_active(ref: IdentityRef | str, status: str, owner_status: str, owner: str) -> None:
    """Refuse, with the reason, an identity that is not active or whose owner is not."""
    if status != IdentityStatus.ACTIVE:
        raise Forbidden(f"identity {ref} is {status}")
    if owner_status != OwnerStatus.ACTIVE:
        raise Forbidden(f"owner {owner} of {ref} has departed")


async def active_identity(s: AsyncSession, ref: IdentityRef) -> Identity:
    """The identity if it exists, is active and has an active owner; else refuse why."""
    row = (await s.execute(
        select(Identity, Owner.status, Owner.email).join(Owner, Owner.id == Identity.owner_id)
        .where(Identity.kind == ref.kind.value, Identity.name == ref.name))).first()
    if row is None:
        raise InvalidInput(f"no identity {ref}")
    ident, owner_status, owner = row
    check_active(ref, ident.status, owner_status, owner)
    return ident


async def consume_bootstrap_token(s: AsyncSession, token: str, now: dt.datetime) -> Identity:
    """Burn a token inside the caller's transaction and return its identity.

    Reuse, expiry and an unknown token are refused alike to the client (the reason is
    logged), so a token cannot be probed.
    """
    if not token.startswith(BOOTSTRAP_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise Forbidden("invalid bootstrap token")
    row = await s.scalar(select(EnrollmentToken).where(
        EnrollmentToken.token_hash == token_digest(token)).with_for_update())
    if row is None:
        raise Forbidden("invalid bootstrap token")
    if row.used_at is not None:
        raise Forbidden("bootstrap token already used")
    if row.expires_at <= now:
        raise Forbidden("bootstrap token expired")
    # Conditional update: of two concurrent uses exactly one wins.
    result = await s.execute(update(EnrollmentToken).where(
        EnrollmentToken.id == row.id, EnrollmentToken.used_at.is_(None)).values(used_at=now))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Forbidden("bootstrap token already used")
    ident = await s.get(Identity, row.identity_id)
    assert ident is not None
    return ident
