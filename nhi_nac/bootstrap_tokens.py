"""Bootstrap (enrollment) tokens: single use, short-lived, bound to one identity.

A token lets a workload enroll at boot without any other credential. Only its SHA-256
digest is stored. It is consumed inside the issuing transaction, so a refused
enrollment (bad CSR, policy) leaves the token usable and a successful one burns it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nhi_nac import audit
from nhi_nac.domain import IdentityRef, IdentityStatus, OwnerStatus
from nhi_nac.errors import Forbidden, InvalidInput
from nhi_nac.inventory import Inventory
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import EnrollmentToken, Identity, Owner

BOOTSTRAP_PREFIX = "nhb_"
DEFAULT_TTL = dt.timedelta(minutes=15)
MAX_TTL = dt.timedelta(hours=24)
MAX_TOKEN_LENGTH = 128


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_bootstrap_token(
    inv: Inventory, ref: IdentityRef, ttl: dt.timedelta = DEFAULT_TTL, *, actor: str
) -> tuple[str, dt.datetime]:
    """Mint a token for ``ref``; returns (token, expires_at). The token is shown once."""
    if not dt.timedelta(seconds=30) <= ttl <= MAX_TTL:
        raise InvalidInput(f"token lifetime must be between 30s and {MAX_TTL}")
    token = BOOTSTRAP_PREFIX + secrets.token_urlsafe(32)
    now = inv.clock()
    async with inv.db.transaction() as s:
        ident = await active_identity(s, ref)
        expires = now + ttl
        s.add(EnrollmentToken(identity_id=ident.id, token_hash=token_digest(token),
                              created_at=now, expires_at=expires, used_at=None,
                              created_by=actor))
        await audit.append(s, actor=actor, action="bootstrap_token.create", target=str(ref),
                           before=None, after={"expires_at": expires.isoformat()}, now=now)
        add_event(s, "bootstrap_token.created", {"identity": str(ref),
                                                 "expires_at": expires.isoformat()}, now)
    return token, expires


async def active_identity(s: AsyncSession, ref: IdentityRef) -> Identity:
    """The identity if it exists, is active and has an active owner; else refuse why."""
    row = (await s.execute(
        select(Identity, Owner.status, Owner.email).join(Owner, Owner.id == Identity.owner_id)
        .where(Identity.kind == ref.kind.value, Identity.name == ref.name))).first()
    if row is None:
        raise InvalidInput(f"no identity {ref}")
    ident, owner_status, owner = row
    if ident.status != IdentityStatus.ACTIVE:
        raise Forbidden(f"identity {ref} is {ident.status}")
    if owner_status != OwnerStatus.ACTIVE:
        raise Forbidden(f"owner {owner} of {ref} has departed")
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
