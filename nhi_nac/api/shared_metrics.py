"""One ``/metrics`` for every API process of a node (``api.workers > 1``).

The kernel hands each connection on the API port to any of the processes listening on
it, so a process answering ``/metrics`` for itself would give each scrape the figures of
whichever process it reached: RADIUS's and CoA's only from the main process, one
process's share of the request counts, counters that go down between scrapes. Instead:

- every process keeps its API request counters and histograms in files of one private
  directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``);
- the main process alone renders ``/metrics``: the sum over those files (every
  process's requests, including a worker that has since been restarted) with its own
  collectors (RADIUS, the CA); it also answers on a Unix socket in that directory,
  and the other processes hand their ``/metrics`` requests to it there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from nhi_nac.api.problem import problem

#: prometheus_client reads the directory from here when a metric value is made.
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The main process's ``/metrics`` socket, in that directory.
SOCKET = "metrics.sock"
#: Seconds a worker waits for the main process's answer.
FORWARD_TIMEOUT = 10.0


def start_sharing() -> Path:
    """In the main process, before any metric is made and before a worker is started
    (they inherit the environment): a new private directory (0700) for the values of
    every process's metrics, in force from now on in this process."""
    directory = Path(tempfile.mkdtemp(prefix="nhi-nac-metrics-"))
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def stop_sharing(directory: Path) -> None:
    """Back to per-process values; the directory and its files are removed."""
    os.environ.pop(ENV, None)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    shutil.rmtree(directory, ignore_errors=True)


def sharing_directory() -> Path | None:
    """The directory this process shares its metrics through, if it does."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def collect_every_process(registry: CollectorRegistry, directory: Path) -> None:
    """Have ``registry`` render the metrics of every process sharing ``directory``."""
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]


async def serve_on_socket(registry: CollectorRegistry, directory: Path) -> web.AppRunner:
    """The main process's ``/metrics`` on the directory's Unix socket, for the workers."""

    async def render(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", render)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, str(directory / SOCKET)).start()
    return runner


async def from_main_process(directory: Path) -> web.Response:
    """A worker's ``/metrics``: what the main process renders, or 503 if it cannot."""
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(directory / SOCKET)),
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)) as session, \
                session.get("http://main/metrics") as reply:
            reply.raise_for_status()
            body = await reply.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return problem(503, "Service unavailable", "the main process did not answer for "
                       f"this node's metrics: {type(exc).__name__}")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
