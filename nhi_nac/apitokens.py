"""API tokens: random bearer secrets, stored as SHA-256 digests, each with one role.

Roles: ``admin`` (everything), ``auditor`` (read only), ``enroller`` (may mint enrollment
tokens and read the inventory). A token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from nhi_nac import audit
from nhi_nac.domain import check_name
from nhi_nac.errors import Conflict, InvalidInput, NotFound, Unauthorized
from nhi_nac.inventory import Inventory
from nhi_nac.outbox import add_event
from nhi_nac.storage.models import ApiToken

TOKEN_PREFIX = "nhi_"
TOKEN_BYTES = 32
#: Tokens longer than this are refused before hashing.
MAX_TOKEN_LENGTH = 128


class Role(StrEnum):
    ADMIN = "admin"
    AUDITOR = "auditor"
    ENROLLER = "enroller"


@dataclass(frozen=True)
class Principal:
    """Who is calling the API: the token's name and role."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"api-token:{self.name}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(inv: Inventory, name: str, role: str, *, actor: str) -> str:
    check_name(name)
    try:
        r = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role {role!r} (admin, auditor or enroller)") from None
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = inv.clock()
    async with inv.db.transaction() as s:
        if await s.scalar(select(ApiToken.id).where(ApiToken.name == name)):
            raise Conflict(f"API token {name} already exists")
        s.add(ApiToken(name=name, role=r.value, token_hash=digest(token), created_at=now))
        await audit.append(s, actor=actor, action="api_token.create", target=f"api-token/{name}",
                           before=None, after={"role": r.value}, now=now)
        add_event(s, "api_token.created", {"name": name, "role": r.value}, now)
    return token


async def revoke_token(inv: Inventory, name: str, *, actor: str) -> None:
    now = inv.clock()
    async with inv.db.transaction() as s:
        row = await s.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise NotFound(f"no API token named {name}")
        if row.revoked_at is not None:
            raise Conflict(f"API token {name} is already revoked")
        row.revoked_at = now
        await audit.append(s, actor=actor, action="api_token.revoke", target=f"api-token/{name}",
                           before={"revoked": False}, after={"revoked": True}, now=now)
        add_event(s, "api_token.revoked", {"name": name}, now)


async def authenticate(inv: Inventory, token: str) -> Principal:
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid API token")
    async with inv.db.read() as s:
        row = await s.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked API token")
    return Principal(row.name, Role(row.role))


async def list_tokens(inv: Inventory) -> list[dict[str, str | None]]:
    async with inv.db.read() as s:
        rows = (await s.scalars(select(ApiToken).order_by(ApiToken.name))).all()
    return [{"name": r.name, "role": r.role, "created_at": r.created_at.isoformat(),
             "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None} for r in rows]
