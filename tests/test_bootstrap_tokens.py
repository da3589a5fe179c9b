"""Bootstrap tokens: single use, short-lived, bound to one active identity."""

from __future__ import annotations

import datetime as dt

import pytest

from nhi_nac.bootstrap_tokens import consume_bootstrap_token, create_bootstrap_token
from nhi_nac.domain import IdentityRef
from nhi_nac.durations import parse_duration
from nhi_nac.errors import Forbidden, InvalidInput
from nhi_nac.inventory import Inventory, NewIdentity

REF = IdentityRef.parse("workload/api")


async def _setup(inv: Inventory) -> None:
    await inv.add_owner("alice@example.com", "Alice", actor="t")
    await inv.add_identity(NewIdentity.build("workload", "api", "alice@example.com"), actor="t")


async def test_token_is_single_use_and_bound(inventory: Inventory) -> None:
    await _setup(inventory)
    token, expires = await create_bootstrap_token(inventory, REF, parse_duration("15m"),
                                                  actor="t")
    assert expires - inventory.clock() <= dt.timedelta(minutes=15)
    async with inventory.db.transaction() as s:
        ident = await consume_bootstrap_token(s, token, inventory.clock())
        assert (ident.kind, ident.name) == ("workload", "api")
    async with inventory.db.transaction() as s:
        with pytest.raises(Forbidden, match="already used"):
            await consume_bootstrap_token(s, token, inventory.clock())


async def test_refused_use_does_not_burn_the_token(inventory: Inventory) -> None:
    await _setup(inventory)
    token, _ = await create_bootstrap_token(inventory, REF, actor="t")
    with pytest.raises(RuntimeError):
        async with inventory.db.transaction() as s:
            await consume_bootstrap_token(s, token, inventory.clock())
            raise RuntimeError("issuance refused later in the same transaction")
    async with inventory.db.transaction() as s:
        await consume_bootstrap_token(s, token, inventory.clock())


async def test_expired_and_unknown_tokens(inventory: Inventory) -> None:
    await _setup(inventory)
    token, expires = await create_bootstrap_token(inventory, REF, parse_duration("1m"),
                                                  actor="t")
    async with inventory.db.transaction() as s:
        with pytest.raises(Forbidden, match="expired"):
            await consume_bootstrap_token(s, token, expires + dt.timedelta(seconds=1))
        with pytest.raises(Forbidden, match="invalid"):
            await consume_bootstrap_token(s, "nhb_" + "x" * 40, inventory.clock())


async def test_no_token_for_inactive_identity_or_departed_owner(inventory: Inventory) -> None:
    await _setup(inventory)
    with pytest.raises(InvalidInput, match="no identity"):
        await create_bootstrap_token(inventory, IdentityRef.parse("device/x"), actor="t")
    with pytest.raises(InvalidInput, match="between 30s"):
        await create_bootstrap_token(inventory, REF, parse_duration("2d"), actor="t")
    await inventory.set_status(REF, "suspended", actor="t")
    with pytest.raises(Forbidden, match="suspended"):
        await create_bootstrap_token(inventory, REF, actor="t")
    await inventory.set_status(REF, "active", actor="t")
    await inventory.offboard_owner("alice@example.com", actor="t")
    with pytest.raises(Forbidden, match="departed"):
        await create_bootstrap_token(inventory, REF, actor="t")


async def test_bulk_minting_is_all_or_nothing_with_one_record_each(inventory: Inventory) -> None:
    from sqlalchemy import func, select

    from nhi_nac.bootstrap_tokens import create_bootstrap_tokens
    from nhi_nac.storage.models import AuditRecord, EnrollmentToken, OutboxEvent

    await _setup(inventory)
    await inventory.add_identity(NewIdentity.build("workload", "web", "alice@example.com"),
                                 actor="t")
    refs = [REF, IdentityRef.parse("workload/web")]

    async def counts() -> tuple[int, ...]:
        async with inventory.db.read() as s:
            return tuple([int(await s.scalar(select(func.count()).select_from(m)) or 0)
                          for m in (EnrollmentToken, AuditRecord, OutboxEvent)])

    before = await counts()
    with pytest.raises(InvalidInput, match="no identity workload/ghost"):
        await create_bootstrap_tokens(inventory, [*refs, IdentityRef.parse("workload/ghost")],
                                      actor="t")
    assert await counts() == before
    minted = await create_bootstrap_tokens(inventory, refs, actor="t")
    assert len({t for t, _ in minted}) == 2
    assert await counts() == tuple(n + 2 for n in before)
    for (token, _), ref in zip(minted, refs, strict=True):
        async with inventory.db.transaction() as s:
            ident = await consume_bootstrap_token(s, token, inventory.clock())
        assert (ident.kind, ident.name) == (ref.kind.value, ref.name)


async def test_no_token_for_a_kind_that_never_holds_a_certificate(inventory: Inventory) -> None:
    """An API key or an OAuth token never enrolls: its token would be refused at
    enrollment ("api_key identities do not hold certificates"), so none is minted."""
    from nhi_nac.bootstrap_tokens import create_bootstrap_tokens

    await _setup(inventory)
    await inventory.add_identity(NewIdentity.build("api_key", "ci-deploy", "alice@example.com"),
                                 actor="t")
    key = IdentityRef.parse("api_key/ci-deploy")
    with pytest.raises(InvalidInput, match="api_key identities do not hold certificates"):
        await create_bootstrap_token(inventory, key, actor="t")
    with pytest.raises(InvalidInput, match="could never be used"):
        await create_bootstrap_tokens(inventory, [REF, key], actor="t")
    token, _ = await create_bootstrap_token(inventory, REF, actor="t")  # a workload may
    async with inventory.db.transaction() as s:
        ident = await consume_bootstrap_token(s, token, inventory.clock())
    assert (ident.kind, ident.name) == ("workload", "api")
