"""A private Mosquitto is stopped while changes happen; restarting it delivers every event."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import select

from nhi_nac.events import EventRelay
from nhi_nac.inventory import Inventory, NewIdentity, utcnow
from nhi_nac.mqtt import MqttPublisher
from nhi_nac.storage.models import OutboxEvent
from tests.interop import require_tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    def __init__(self, exe: str, port: int, workdir: Path) -> None:
        self.exe, self.port = exe, port
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited") from None

                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    exe = require_tool("mosquitto", "mosquitto")
    b = PrivateBroker(exe, free_port(), tmp_path)
    b.start()
    yield b
    b.stop()


async def _collect(client: aiomqtt.Client, into: list[str], want: int) -> None:
    async for msg in client.messages:
        into.append(json.loads(bytes(msg.payload))["event_id"])  # type: ignore[arg-type]
        if len(into) >= want:
            return


async def test_broker_outage_loses_no_event(inventory: Inventory, broker: PrivateBroker) -> None:
    relay = EventRelay(inventory.db, utcnow)
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", "site1")
    relay.subscribe(publisher)
    received: list[str] = []
    await inventory.add_owner("alice@example.com", "Alice", actor="t")
    async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
        await sub.subscribe("nhi-nac/site1/#", qos=1)
        assert await relay.publish_pending() == 1
        await asyncio.wait_for(_collect(sub, received, 1), 10)
    broker.stop()
    # Changes while the broker is down stay in the outbox.
    for name in ("a", "b", "c"):
        await inventory.add_identity(NewIdentity.build("device", name, "alice@example.com"),
                                     actor="t")
    assert await relay.publish_pending() == 0
    assert await relay.publish_pending() == 0
    broker.start()
    async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
        await sub.subscribe("nhi-nac/site1/#", qos=1)
        assert await relay.publish_pending() == 3
        await asyncio.wait_for(_collect(sub, received, 4), 10)
    await publisher.close()
    async with inventory.db.read() as s:
        ids = list((await s.scalars(select(OutboxEvent.event_id).order_by(OutboxEvent.id))).all())
    assert received == ids
