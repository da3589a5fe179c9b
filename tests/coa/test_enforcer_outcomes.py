"""Continuous enforcement: what the *service* records for every outcome.

The enforcer (the part of ``nhi-nac serve`` that follows the outbox) with the real
RFC 5176 sender, against UDP peers on loopback, SQLite and PostgreSQL: one owner departs
and leaves four identities with live sessions on four NAS —

- one NAS address where something receives but never answers: the Disconnect-Request is
  retransmitted byte-identically at doubling intervals, then recorded as a timeout;
- one NAS address with nothing listening: recorded as a timeout after the same tries;
- one NAS that ACKs and one that NAKs with Error-Cause 503: recorded as such;

and a session of another owner's identity on the same NAS is left alone. Every request
carries Event-Timestamp and Message-Authenticator.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from nhi_nac.coa import CoaLimits, CoaSender
from nhi_nac.coa.messages import ATTR_ERROR_CAUSE
from nhi_nac.enforcement import Enforcer, coa_sender, coa_status
from nhi_nac.inventory import Inventory, NewIdentity
from nhi_nac.radius.codec import decode_packet, encode_response
from nhi_nac.storage.models import RadiusSession
from tests.coa.silent_nas import silent_nas

SECRET = "enforcer-outcomes-shared-secret"
FAST = CoaLimits(initial_timeout=0.05, max_retransmissions=3, max_timeout=1.0, jitter=0.0)
ATTR_ACCT_SESSION_ID, ATTR_EVENT_TIMESTAMP, ATTR_MESSAGE_AUTHENTICATOR = 44, 55, 80


class FakeDas(asyncio.DatagramProtocol):
    """Stands in for a NAS's Dynamic Authorization Server: known sessions ACK, others NAK 503."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        pkt = decode_packet(data)
        session = (pkt.get(ATTR_ACCT_SESSION_ID) or b"").decode()
        if session in self.known:
            reply = encode_response(41, pkt.identifier, pkt.authenticator, [], SECRET.encode())
        else:
            reply = encode_response(42, pkt.identifier, pkt.authenticator,
                                    [(ATTR_ERROR_CAUSE, struct.pack("!I", 503))],
                                    SECRET.encode())
        self.transport.sendto(reply, addr)


async def _session(inv: Inventory, identity: str, nas: str, address: str, sid: str) -> None:
    now = inv.clock()
    async with inv.db.transaction() as s:
        s.add(RadiusSession(nas=nas, nas_address=address, acct_session_id=sid,
                            identity=identity, user_name=identity,
                            mac="02:00:5e:00:00:01", vlan=120, status="active",
                            started_at=now, updated_at=now))


async def test_every_outcome_of_an_enforcement_is_recorded(inventory: Inventory) -> None:
    loop = asyncio.get_running_loop()
    async with silent_nas() as (port, captured):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: FakeDas({"S-ACK", "S-OTHER"}), local_addr=("127.0.0.3", port))
        try:
            await inventory.add_owner("alice@example.com", "Alice", actor="t")
            await inventory.add_owner("bob@example.com", "Bob", actor="t")
            for name, owner in (("silent", "alice"), ("dead", "alice"), ("acked", "alice"),
                                ("naked", "alice"), ("other", "bob")):
                await inventory.add_identity(
                    NewIdentity.build("device", name, f"{owner}@example.com"), actor="t")
            for nas, address in (("nas-silent", "127.0.0.1"), ("nas-dead", "127.0.0.2"),
                                 ("nas-answers", "127.0.0.3")):
                await inventory.add_nas(nas, address, SECRET, actor="t")
            await _session(inventory, "device/silent", "nas-silent", "127.0.0.1", "S-SILENT")
            await _session(inventory, "device/dead", "nas-dead", "127.0.0.2", "S-DEAD")
            await _session(inventory, "device/acked", "nas-answers", "127.0.0.3", "S-ACK")
            await _session(inventory, "device/naked", "nas-answers", "127.0.0.3", "S-GONE")
            await _session(inventory, "device/other", "nas-answers", "127.0.0.3", "S-OTHER")

            enforcer = Enforcer(inventory.db, coa_sender(CoaSender(FAST), port),
                                inventory.clock)
            await enforcer.start()
            report = await inventory.offboard_owner("alice@example.com", actor="t")
            assert len(report.orphaned) == 4
            assert await enforcer.check() == 4
            await asyncio.sleep(0.05)
        finally:
            transport.close()

    rows = {r["identity"]: r for r in await coa_status(inventory.db)}
    assert set(rows) == {"device/silent", "device/dead", "device/acked", "device/naked"}
    outcome = {i: (r["kind"], r["status"], r["error_cause"], r["attempts"], r["nas"],
                   r["session"]) for i, r in rows.items()}
    assert outcome == {
        "device/silent": ("disconnect", "timeout", None, 4, "nas-silent", "S-SILENT"),
        "device/dead": ("disconnect", "timeout", None, 4, "nas-dead", "S-DEAD"),
        "device/acked": ("disconnect", "acked", None, 1, "nas-answers", "S-ACK"),
        "device/naked": ("disconnect", "naked", "Session-Context-Not-Found", 1,
                         "nas-answers", "S-GONE"),
    }
    assert all(str(r["trigger"]).startswith("owner.departed#") for r in rows.values())

    # The silent NAS saw the same Disconnect-Request four times, at doubling intervals.
    assert len(captured) == 4 and len({data for _, data in captured}) == 1
    gaps = [b[0] - a[0] for a, b in zip(captured, captured[1:], strict=False)]
    for gap, expected in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert expected * 0.8 <= gap <= expected + 0.15, gaps
    pkt = decode_packet(captured[0][1])
    assert pkt.code == 40
    assert pkt.get(ATTR_ACCT_SESSION_ID) == b"S-SILENT"
    assert pkt.get(ATTR_EVENT_TIMESTAMP) is not None
    assert pkt.get(ATTR_MESSAGE_AUTHENTICATOR) is not None
