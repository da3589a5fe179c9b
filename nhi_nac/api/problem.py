"""RFC 9457 problem details: every API error is ``application/problem+json``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)
