"""How a publish fails when the broker is the reason.

Errors:
    BrokerUnavailable: the broker did not confirm (down, blocked by an alarm, nack, timeout).
    The request handler answers 503 with ``Retry-After``; the sender retries.
"""

from __future__ import annotations

from aiormq.exceptions import AMQPError, ChannelInvalidStateError

# What talking to a broker that is gone, closing or refusing raises (aiormq and the socket).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
)


class BrokerUnavailable(Exception):
    """The broker did not confirm the publish; nothing may be acknowledged to the sender."""
