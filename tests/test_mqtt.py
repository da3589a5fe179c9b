"""Events to a real Mosquitto broker; a broker outage delays events but loses none."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid

import aiomqtt
import pytest

from nhi_nac.events import EventRelay
from nhi_nac.inventory import Inventory, utcnow
from nhi_nac.mqtt import MqttPublisher
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
