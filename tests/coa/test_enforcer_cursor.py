"""The enforcer's shared cursor, on SQLite and PostgreSQL: each enforced event is acted on
once, by one node; an event written while no node ran is acted on when one starts; a
request claimed by a node that died before sending it is sent by the next one.

Requests go over real UDP on loopback through the RFC 5176 sender to ``FakeDas``, a
small in-process Dynamic Authorization Server that ACKs every Disconnect-Request; the
hostapd tests do the same against a real NAS, end to end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from nhi_nac import enforcement
from nhi_nac.coa import CoaLimits, CoaSender
from nhi_nac.domain import IdentityRef
from nhi_nac.enforcement import CURSOR_KEY, Enforcer, coa_sender, coa_status
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.radius.codec import decode_packet, encode_response
from nhi_nac.storage.models import AuditRecord, OutboxEvent, RadiusSession, Setting

SECRET = "enforcer-cursor-shared-secret"

FAST = CoaLimits(initial_timeout=0.05, max_retransmissions=2, max_timeout=0.2, jitter=0.0)


class FakeDas(asyncio.DatagramProtocol):
    """Stands in for a NAS's Dynamic Authorization Server: ACKs every request."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append(data)
        pkt = decode_packet(data)
        self.transport.sendto(encode_response(41, pkt.identifier, pkt.authenticator, [],
                                              SECRET.encode()), addr)


@pytest.fixture
async def das() -> AsyncIterator[tuple[FakeDas, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(FakeDas,
                                                           local_addr=("127.0.0.1", 0))
    try:
        yield proto, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def _fleet(inv: Inventory) -> None:
    await inv.add_owner("ops@example.com", "Ops", actor="t")
    await inv.add_nas("sw-1", "127.0.0.1", SECRET, actor="t")
    now = inv.clock()
    for name in ("printer", "camera"):
        await inv.add_identity(NewIdentity.build("device", name, "ops@example.com"), actor="t")
        async with inv.db.transaction() as s:
            s.add(RadiusSession(nas="sw-1", nas_address="127.0.0.1",
                                acct_session_id=f"S-{name}", identity=f"device/{name}",
                                user_name=name, mac="02:00:5e:00:00:01", vlan=120,
                                status="active", started_at=now, updated_at=now))


def _node(inv: Inventory, port: int) -> Enforcer:
    return Enforcer(inv.db, coa_sender(CoaSender(FAST), port), inv.clock)


async def _enforcements(inv: Inventory) -> list[str]:
    async with inv.db.read() as s:
        return list((await s.scalars(select(AuditRecord.target).where(
            AuditRecord.action == "coa.enforce").order_by(AuditRecord.seq))).all())


async def test_two_nodes_act_on_each_event_once(
        inventory: Inventory, das: tuple[FakeDas, int]) -> None:
    responder, port = das
    await _fleet(inventory)
    a, b = _node(inventory, port), _node(inventory, port)
    await asyncio.gather(a.start(), b.start())  # both create the cursor: one wins, both agree
    await inventory.set_status(IdentityRef.parse("device/printer"), "suspended", actor="t")
    sent = await asyncio.gather(a.check(), b.check())
    assert sorted(sent) == [0, 1]
    assert len(responder.received) == 1
    assert [(r["identity"], r["status"]) for r in await coa_status(inventory.db)] == [
        ("device/printer", "acked")]
    assert await _enforcements(inventory) == ["device/printer"]
    # Nothing new: neither node acts again.
    assert await asyncio.gather(a.check(), b.check()) == [0, 0]
    assert len(responder.received) == 1


async def test_an_event_written_while_no_node_ran_is_enforced_at_start(
        inventory: Inventory, das: tuple[FakeDas, int]) -> None:
    responder, port = das
    await _fleet(inventory)
    # Before any node ever ran, history is not enforced ...
    await inventory.set_status(IdentityRef.parse("device/printer"), "suspended", actor="t")
    first = _node(inventory, port)
    await first.start()
    assert await first.check() == 0
    # ... but once the cursor exists, a change made while the service is down is.
    await inventory.set_status(IdentityRef.parse("device/camera"), "suspended", actor="t")
    restarted = _node(inventory, port)
    await restarted.start()
    assert await restarted.check() == 1
    assert [(r["identity"], r["status"]) for r in await coa_status(inventory.db)] == [
        ("device/camera", "acked")]
    async with inventory.db.read() as s:
        cursor = await s.scalar(select(Setting.value).where(Setting.key == CURSOR_KEY))
    assert cursor is not None and int(cursor) > 0


async def test_a_request_claimed_by_a_node_that_died_is_sent_by_the_next(
        inventory: Inventory, das: tuple[FakeDas, int]) -> None:
    responder, port = das
    await _fleet(inventory)
    node = _node(inventory, port)
    await node.start()
    await inventory.set_status(IdentityRef.parse("device/printer"), "retired", actor="t")
    await inventory.set_status(IdentityRef.parse("device/camera"), "retired", actor="t")
    # The node claims both events and dies before sending anything.
    claimed, _ = await inventory.db.run_write(lambda conn: node._claim(conn, inventory.clock()))
    assert sorted(t.identity for _, ts in claimed for t in ts) == [
        "device/camera", "device/printer"]
    assert {r["status"] for r in await coa_status(inventory.db)} == {"pending"}
    # The camera's session ends meanwhile (accounting Stop).
    async with inventory.db.transaction() as s:
        await s.execute(update(RadiusSession).where(RadiusSession.acct_session_id == "S-camera")
                        .values(status="stopped"))
    later = _node(inventory, port)
    await later.start()
    assert await later.check() == 0  # the events were claimed: not sent twice
    assert await later.resume(inventory.clock() + dt.timedelta(seconds=30)) == 0  # too young
    assert await later.resume(inventory.clock() + dt.timedelta(minutes=2)) == 1
    assert len(responder.received) == 1
    assert {r["identity"]: r["status"] for r in await coa_status(inventory.db)} == {
        "device/printer": "acked", "device/camera": "abandoned"}
    assert await later.resume(inventory.clock() + dt.timedelta(minutes=2)) == 0


async def test_two_nodes_starting_at_once_share_one_cursor(inventory: Inventory) -> None:
    """Several nodes need PostgreSQL; there, a node whose insert of the new cursor loses
    to another node's uses the winner's cursor instead of failing to start."""
    if inventory.db.engine.dialect.name != "postgresql":
        pytest.skip("several nodes share PostgreSQL; SQLite serialises writers")
    async with inventory.db.engine.connect() as other:
        await other.execute(insert(Setting).values(key=CURSOR_KEY, value="41"))
        node = Enforcer(inventory.db, coa_sender(CoaSender(FAST), 9), inventory.clock)
        starting = asyncio.create_task(node.start())  # reads no cursor, then waits on ours
        await asyncio.sleep(0.3)
        assert not starting.done()
        await other.commit()
    await starting
    assert node._last_event == 41


async def test_an_event_committed_after_a_later_one_is_still_enforced(
        inventory: Inventory, das: tuple[FakeDas, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Outbox ids are taken at insert and seen at commit: a suspension whose transaction
    commits after later events' — one of them enforced and claimed — must not be passed
    over (the look back every few seconds, made immediate here, finds it)."""
    if inventory.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: ids are seen in order")
    monkeypatch.setattr(enforcement, "LATE_LOOK_SECONDS", 0.0)
    responder, port = das
    await _fleet(inventory)
    node = _node(inventory, port)
    await node.start()
    async with inventory.db.engine.connect() as slow:
        await slow.execute(insert(OutboxEvent).values(
            event_id=str(uuid.uuid4()), type="identity.suspended", at=inventory.clock(),
            payload={"identity": "device/printer", "from": "active", "to": "suspended"},
            published_at=None))
        await inventory.add_owner("later@example.com", "Later", actor="t")  # a later id
        assert await node.check() == 0  # the suspension is not visible yet
        # A later enforced change commits and is claimed: the shared cursor moves on.
        await inventory.set_status(IdentityRef.parse("device/camera"), "suspended", actor="t")
        assert await node.check() == 1
        await slow.commit()
    assert await node.check() == 1
    assert [r["identity"] for r in await coa_status(inventory.db)] == [
        "device/camera", "device/printer"]
    assert await node.check() == 0  # each claimed once
    other = _node(inventory, port)  # nor does another node claim them again
    await other.start()
    assert await other.check() == 0
