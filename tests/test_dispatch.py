"""The lean dispatch: POST to a configured source's path skips the router and middleware chain;
every other request is routed (and answered) by the application as before."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_request import BaseRequest

from gateway.app import CALLBACK_ROUTES
from gateway.dispatch import lean_dispatch
from tests.broker import drain
from tests.conftest import FIXTURES, TOKENS, Ingress

ROAMING = (FIXTURES / "camara-roaming-status.json").read_bytes()
CE = "application/cloudevents+json"


def _problem(body: bytes) -> dict[str, Any]:
    problem: dict[str, Any] = orjson.loads(body)
    assert {"type", "title", "status", "detail"} <= problem.keys()
    return problem


async def test_a_callback_is_answered_without_the_router(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the router broken, POST /callbacks/camara still gets its 204 and is published."""
    app = ingress.client.app
    assert app is not None
    assert "/callbacks/camara" in app[CALLBACK_ROUTES]

    async def broken(_request: web.Request) -> Any:
        raise AssertionError("the router was consulted")

    monkeypatch.setattr(app.router, "resolve", broken)
    status, _ = await ingress.post("camara", ROAMING, CE)
    assert status == 204
    [message] = await drain(ingress.channel, ingress.capture, 1)
    assert message.routing_key == orjson.loads(ROAMING)["type"]


async def test_other_methods_and_paths_keep_the_routers_answers(ingress: Ingress) -> None:
    """GET on a callback path is 405 with Allow, an unknown source 404, both problem+json;
    /healthz is served."""
    client = ingress.client
    response = await client.get("/callbacks/camara")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert response.content_type == "application/problem+json"
    _problem(await response.read())
    status, body = await ingress.post("nobody", ROAMING, CE, Authorization="Bearer x")
    assert status == 404
    assert _problem(body)["status"] == 404
    assert (await client.get("/healthz")).status == 200


async def test_a_query_token_or_an_encoded_name_is_routed_the_long_way(ingress: Ingress) -> None:
    """A path with a query string or a percent-encoded name misses the lean table and is
    still accepted through the router (the same handler)."""
    client = ingress.client
    response = await client.post(
        f"/callbacks/camara?access_token={TOKENS['camara']}",
        data=ROAMING,
        headers={"Content-Type": CE},
    )
    assert response.status == 204
    response = await client.post(
        "/callbacks/cam%61ra",
        data=ROAMING,
        headers={"Content-Type": CE, "Authorization": f"Bearer {TOKENS['camara']}"},
    )
    assert response.status == 204
    assert len(await drain(ingress.channel, ingress.capture, 2)) == 2


async def test_a_failing_handler_on_the_lean_path_is_a_problem_500() -> None:
    """An unexpected error in a callback handler becomes problem+json 500, as it does behind
    the middleware; the fallback is not called for a lean path."""
    fallen_back: list[BaseRequest] = []

    async def failing(_request: web.Request) -> web.StreamResponse:
        raise RuntimeError("bug")

    async def fallback(request: BaseRequest) -> web.StreamResponse:
        fallen_back.append(request)
        return web.Response(status=200)

    dispatch = lean_dispatch({"/callbacks/a": failing}, fallback)
    response = await dispatch(make_mocked_request("POST", "/callbacks/a"))
    assert response.status == 500
    assert isinstance(response, web.Response)
    assert isinstance(response.body, bytes)
    assert _problem(response.body)["status"] == 500
    assert fallen_back == []
    other = make_mocked_request("PUT", "/callbacks/a")
    assert (await dispatch(other)).status == 200
    assert fallen_back == [other]
