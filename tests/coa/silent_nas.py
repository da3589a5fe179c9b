"""A NAS address where something receives CoA/Disconnect requests but never answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def silent_nas() -> AsyncIterator[tuple[int, list[tuple[float, bytes]]]]:
    """A UDP port on 127.0.0.1 that never replies; yields the port and the list that
    collects every datagram received there, as (monotonic arrival time, bytes)."""
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    captured: list[tuple[float, bytes]] = []

    async def capture() -> None:
        while True:
            data = await loop.sock_recv(sink, 4096)
            captured.append((time.monotonic(), data))

    task = asyncio.create_task(capture())
    try:
        yield sink.getsockname()[1], captured
    finally:
        task.cancel()
        sink.close()
