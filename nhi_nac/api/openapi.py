"""The OpenAPI 3.1 document, generated from the same route table aiohttp serves."""

from __future__ import annotations

import re
from typing import Any

from nhi_nac import __version__
from nhi_nac.api.routes import ROUTES

_PARAM = re.compile(r"\{(\w+)\}")


def _operation(route: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.handler.__name__}_"
                       + re.sub(r"\W+", "_", route.path.removeprefix("/api/v1/")).strip("_"),
        "security": [{"bearer": []}],
        "x-roles": sorted(r.value for r in route.roles),
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in _PARAM.findall(route.path)]
                      + [{"name": q, "in": "query", "required": False,
                          "schema": {"type": "string"}} for q in route.query],
        "responses": {
            str(route.ok): {"description": "Success"},
            "default": {"description": "Error",
                        "content": {"application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}}}},
        },
    }
    if route.body is not None:
        props = {k: {"type": t} for k, t in route.body.items()}
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "properties": props}}}}
    return op


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "nhi-nac API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"}}}},
        },
    }
