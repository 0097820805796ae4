"""Workers that consume the gateway's CloudEvents from RabbitMQ and keep state about them.

A custom handler is ``async def handle(event: consumers.Event) -> None``: returning means
done (the worker acks), raising means failure (retry, then ``<queue>.dlq``), and raising
``consumers.Unprocessable`` sends the event to the DLQ without retrying. Importing this
package loads no web stack.
"""

from consumers.event import Event, InvalidEvent, Unprocessable

__all__ = ["Event", "InvalidEvent", "Unprocessable"]
