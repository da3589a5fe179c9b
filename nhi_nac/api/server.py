"""The aiohttp application: middlewares (errors, auth, metrics) around the route table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from nhi_nac import apitokens
from nhi_nac.agents import AgentService
from nhi_nac.api.agent_routes import add_agent_routes
from nhi_nac.api.openapi import openapi_document
from nhi_nac.api.pki_routes import add_pki_routes
from nhi_nac.api.problem import problem
from nhi_nac.api.routes import (
    GOVERNANCE,
    INVENTORY,
    PRINCIPAL,
    ROUTES,
    SEGMENTS,
    Handler,
    Route,
)
from nhi_nac.api.shared_metrics import from_main_process, sharing_directory
from nhi_nac.ca_service import CaService
from nhi_nac.config import AgentsConfig, GovernanceConfig
from nhi_nac.errors import Forbidden, NhiError, Unauthorized, Unavailable
from nhi_nac.governance import Governance
from nhi_nac.inventory import Inventory
from nhi_nac.segment_service import SegmentService
from nhi_nac.ui.console import add_console, console_middleware

log = structlog.get_logger("nhi_nac.api")

REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
ROUTE_INFO = "route_info"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"})


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        """``registry`` None: kept in the files of a node's API processes, rendered by
        the main process (``shared_metrics``)."""
        self.requests = Counter("nhi_api_requests", "API requests by route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("nhi_api_request_seconds", "API request latency",
                                 ["method", "route"], registry=registry)
        # Label children are looked up once per (method, route[, status]), not per request.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def request_counter(self, method: str, route: str, status: int) -> Any:
        key = (method, route, status)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self.requests.labels(method, route, str(status))
        return child

    def latency_histogram(self, method: str, route: str) -> Any:
        key = (method, route)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = self.latency.labels(method, route)
        return child


METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics", ApiMetrics)
METRICS_FROM_MAIN: web.AppKey[Path] = web.AppKey("metrics_from_main", Path)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unavailable as exc:
        response = problem(exc.status, exc.title, exc.message, **exc.problem_extra())
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except NhiError as exc:
        return problem(exc.status, exc.title, exc.message, **exc.problem_extra())
    except web.HTTPRequestEntityTooLarge as exc:
        return problem(413, "Request too large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("api.internal_error", path=request.path)
        return problem(500, "Internal error", "the server failed; see its log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route: Route | None = getattr(request.match_info.route, ROUTE_INFO, None) if \
        request.match_info.route else None
    if route is None:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer API token")
    principal = await apitokens.authenticate(request.app[INVENTORY], token.strip())
    if principal.role not in route.roles:
        raise Forbidden(f"role {principal.role.value} may not {route.summary.lower()}")
    request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    resource = request.match_info.route.resource
    name = resource.canonical if resource is not None else "unmatched"
    response = await handler(request)
    m = request.app[METRICS]
    m.request_counter(request.method, name, response.status).inc()
    m.latency_histogram(request.method, name).observe(time.perf_counter() - start)
    return response


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[INVENTORY].db.read() as s:
            await s.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - readiness reports any backend failure
        return problem(503, "Not ready", f"database unreachable: {type(exc).__name__}")
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    directory = request.app.get(METRICS_FROM_MAIN)
    if directory is not None:
        return await from_main_process(directory)
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def make_app(inventory: Inventory, max_body: int = 1_048_576,
             registry: CollectorRegistry | None = None,
             governance: Governance | None = None,
             segment_service: SegmentService | None = None,
             ca: CaService | None = None,
             agents: AgentService | None = None,
             metrics_from_main: Path | None = None) -> web.Application:
    """The API. ``metrics_from_main``: this is an extra API process, whose ``/metrics``
    the main process renders for all of them (``shared_metrics``)."""
    app = web.Application(
        client_max_size=max_body,
        middlewares=[metrics_middleware, errors_middleware, console_middleware,
                     auth_middleware],
    )
    app[INVENTORY] = inventory
    app[GOVERNANCE] = governance or Governance(inventory, GovernanceConfig())
    app[SEGMENTS] = segment_service or SegmentService(inventory)
    app[REGISTRY] = registry or CollectorRegistry()
    app[METRICS] = ApiMetrics(None if sharing_directory() else app[REGISTRY])
    if metrics_from_main is not None:
        app[METRICS_FROM_MAIN] = metrics_from_main
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    for route in ROUTES:
        r = app.router.add_route(route.method, route.path, route.handler)
        setattr(r, ROUTE_INFO, route)
    if ca is not None:
        add_pki_routes(app, ca)
        add_agent_routes(app, agents or AgentService(inventory, ca, AgentsConfig()))
    add_console(app)
    return app
