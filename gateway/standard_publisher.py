"""The plain publish path: aio-pika's ``Exchange.publish`` on a confirm-mode channel of its own.

Slower than ``ConfirmStream`` (see the README's benchmark) but uses only aio-pika's public API.
It runs when ``[amqp] publisher = "standard"`` and when the fast path's self-check or an
unexpected error of the fast path makes the publisher fall back to it. Same semantics: every
message persistent, with the same properties and headers; it returns only once the broker
confirmed all of them, and raises ``BrokerUnavailable`` on a nack, a timeout or a lost channel.
``mandatory`` stays off, as on the fast path: the alternate exchange keeps unroutable events.
"""

from __future__ import annotations

import asyncio

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.exceptions import DeliveryError
from pamqp.decode import field_table

from gateway.amqp_message import APP_ID
from gateway.amqp_wire import Outgoing
from gateway.broker_errors import BROKER_ERRORS, BrokerUnavailable


def to_message(outgoing: Outgoing, timestamp: int) -> Message:
    """The aio-pika message of an ``Outgoing`` (its header table decoded back to a dict)."""
    headers = field_table(outgoing.headers)[1] if outgoing.headers else None
    return Message(
        outgoing.body,
        headers=headers,
        content_type=outgoing.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=outgoing.message_id,
        timestamp=timestamp,
        type=outgoing.message_type,
        app_id=APP_ID,
    )


class StandardPublisher:
    """Publishes ``Outgoing`` messages with aio-pika on ``channel`` (confirm mode, its own)."""

    def __init__(self, channel: AbstractChannel, *, timeout_s: float) -> None:
        self.channel = channel
        self._timeout_s = timeout_s
        self._exchanges: dict[str, AbstractExchange] = {}

    async def confirm(self, messages: list[Outgoing], timestamp: int) -> None:
        """Publish every message and wait for every confirm, or raise BrokerUnavailable."""
        try:
            async with asyncio.timeout(self._timeout_s):
                exchanges = [await self._exchange(m.exchange) for m in messages]
                await asyncio.gather(
                    *(
                        exchange.publish(to_message(m, timestamp), m.routing_key)
                        for exchange, m in zip(exchanges, messages, strict=True)
                    )
                )
        except TimeoutError:
            raise BrokerUnavailable(f"no confirm within {self._timeout_s:g}s") from None
        except DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the message (nack)") from exc
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange
