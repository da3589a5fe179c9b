"""Request bodies of the endpoints that are not token-authenticated (``/pki``, ``/agent``),
read with their own, smaller size limits."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from nhi_nac.errors import InvalidInput


async def read_json_body(request: web.Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    """The raw body (at most ``limit`` bytes) and its JSON object; refused with the reason."""
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise InvalidInput(f"request body larger than {limit} bytes")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return raw, data
