"""The HTTP ceiling: an aiohttp handler that reads the body and answers 204, no broker.

Runs on uvloop like the gateway, with no access log. Usage:
``python bare_aiohttp.py --port P``.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    """Read the whole body, as any real handler must, then answer 204."""
    await request.read()
    return web.Response(status=204)


def create_app() -> web.Application:
    """One route, the same path the gateway serves."""
    app = web.Application()
    app.router.add_post("/callbacks/{source}", receive)
    app.router.add_get("/readyz", ready)
    return app


async def ready(_: web.Request) -> web.Response:
    """Readiness for the benchmark's start-up poll."""
    return web.Response(text="ok")


def main() -> None:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        create_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
