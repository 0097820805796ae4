"""RFC 9457 problem details: every error response of the ingress."""

from __future__ import annotations

from http import HTTPStatus

import orjson
from aiohttp import web

PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An ``application/problem+json`` response with ``type``, ``title``, ``status``, ``detail``."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return web.Response(
        status=status, body=orjson.dumps(body), content_type=PROBLEM_JSON, headers=headers
    )
