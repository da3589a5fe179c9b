"""Events to a real Mosquitto broker; a broker outage delays events but loses none."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid

import aiomqtt
import pytest

from nhi_nac.admission_store import InventoryDirectory
from nhi_nac.events import EventRelay
from nhi_nac.inventory import Inventory, utcnow
from nhi_nac.mqtt import MqttPublisher
from nhi_nac.radius.decision import AdmissionDecision, AuthMethod, Verdict
from tests.interop import missing

BROKER = os.environ.get("NHI_TEST_MQTT", "127.0.0.1:1883")
HOST, _, PORT = BROKER.partition(":")


@pytest.fixture
def broker() -> str:
    try:
        socket.create_connection((HOST, int(PORT)), timeout=2).close()
    except OSError as exc:
        missing(f"no MQTT broker at {BROKER} (Debian package mosquitto): {exc}")
    return f"mqtt://{BROKER}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_events_reach_mosquitto_and_survive_an_outage(
    inventory: Inventory, broker: str
) -> None:
    site = f"test-{uuid.uuid4().hex[:8]}"
    relay = EventRelay(inventory.db, utcnow)
    down = MqttPublisher(f"mqtt://127.0.0.1:{closed_port()}", site)
    relay.subscribe(down)
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    # Broker unreachable: nothing is marked published.
    assert await relay.publish_pending() == 0

    received: list[aiomqtt.Message] = []
    async with aiomqtt.Client(HOST, int(PORT)) as sub:
        await sub.subscribe(f"nhi-nac/{site}/#", qos=1)
        relay.subscribers = [up := MqttPublisher(broker, site)]
        await inventory.add_owner("bob@example.com", "Bob", actor="t")
        assert await relay.publish_pending() == 2

        async def collect() -> None:
            async for msg in sub.messages:
                received.append(msg)
                if len(received) == 2:
                    return
        await asyncio.wait_for(collect(), 10)
        await up.close()
    assert [str(m.topic) for m in received] == [f"nhi-nac/{site}/owner.added"] * 2
    bodies = [json.loads(bytes(m.payload)) for m in received]  # type: ignore[arg-type]
    assert [b["payload"]["email"] for b in bodies] == ["alice@example.com", "bob@example.com"]
    assert all(b["schema"] == 1 and b["event_id"] and b["at"] for b in bodies)


async def test_a_batch_of_decisions_reaches_mosquitto_one_message_each(
    inventory: Inventory, broker: str
) -> None:
    """RADIUS decisions are stored as one admissions.recorded outbox event per batch;
    subscribers still get one admission.accepted / admission.rejected message each."""
    site = f"test-{uuid.uuid4().hex[:8]}"
    directory = InventoryDirectory(inventory.db, None, "nhi.example")  # type: ignore[arg-type]
    await directory.start()
    now = time.time()
    for i, verdict in enumerate((Verdict.ACCEPT, Verdict.REJECT, Verdict.ACCEPT)):
        directory.record_admission(AdmissionDecision(
            verdict, AuthMethod.MAB, (f"reason {i}",), "sw-1", "192.0.2.1", now + i,
            failure=None if verdict is Verdict.ACCEPT else "unknown_mac",
            mac=f"aa:bb:cc:00:00:0{i}", nas_port=f"Gi1/0/{i}",
            vlan=120 if verdict is Verdict.ACCEPT else None))
    await directory.flush()
    relay = EventRelay(inventory.db, utcnow)
    received: list[aiomqtt.Message] = []
    async with aiomqtt.Client(HOST, int(PORT)) as sub:
        await sub.subscribe(f"nhi-nac/{site}/#", qos=1)
        relay.subscribe(up := MqttPublisher(broker, site))
        assert await relay.publish_pending() == 1

        async def collect() -> None:
            async for msg in sub.messages:
                received.append(msg)
                if len(received) == 3:
                    return
        await asyncio.wait_for(collect(), 10)
        await up.close()
    assert [str(m.topic) for m in received] == [
        f"nhi-nac/{site}/admission.accepted", f"nhi-nac/{site}/admission.rejected",
        f"nhi-nac/{site}/admission.accepted"]
    bodies = [json.loads(bytes(m.payload)) for m in received]  # type: ignore[arg-type]
    assert [b["payload"]["port"] for b in bodies] == ["Gi1/0/0", "Gi1/0/1", "Gi1/0/2"]
    assert bodies[1]["payload"]["failure"] == "unknown_mac"
    assert len({b["event_id"] for b in bodies}) == 3
