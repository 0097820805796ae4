"""The reference: the same ingress written the way FastAPI tutorials write it.

FastAPI + uvicorn (one worker, default settings, ``uvicorn.run``), a pydantic model of the
CloudEvent, one robust aio-pika connection and confirming channel opened in the lifespan,
``await exchange.publish(...)`` per request, and the bearer token checked in a sync ``def``
dependency comparing SHA-256 digests. Deliberately ordinary, not sabotaged.

Usage: ``python reference_fastapi.py --port P --amqp-url URL --exchange NAME
--token-digest sha256:<hex>``. The exchange is declared here (topic, durable); the benchmark
binds its own queue to it.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, ConfigDict


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON form; extensions are kept."""

    model_config = ConfigDict(extra="allow")

    id: str
    source: str
    type: str
    specversion: str
    datacontenttype: str | None = None
    subject: str | None = None
    time: str | None = None
    data: dict[str, Any] | None = None


def create_app(amqp_url: str, exchange_name: str, token_digest: str) -> FastAPI:
    """The tutorial-shaped app: lifespan connection, a dependency for auth, one route."""
    expected = token_digest.removeprefix("sha256:")
    state: dict[str, aio_pika.abc.AbstractExchange] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        state["exchange"] = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        yield
        await connection.close()

    def verify_token(authorization: str | None = Header(default=None)) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(authorization.removeprefix("Bearer ").encode()).hexdigest()
        if not hmac.compare_digest(digest, expected):
            raise HTTPException(401, "invalid token", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(lifespan=lifespan)

    @app.post("/callbacks/{source}", status_code=204, dependencies=[Depends(verify_token)])
    async def receive(source: str, event: CloudEvent) -> Response:
        message = aio_pika.Message(
            body=event.model_dump_json(exclude_none=True).encode(),
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            app_id="event-gateway-reference",
            headers={"ce-id": event.id, "ce-source": event.source, "ce-type": event.type},
        )
        await state["exchange"].publish(message, routing_key=event.type, mandatory=False)
        return Response(status_code=204)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    """Serve with uvicorn's defaults until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--token-digest", required=True)
    args = parser.parse_args()
    app = create_app(args.amqp_url, args.exchange, args.token_digest)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
