"""Built-in workers apply an event only when its gatewaysource may send its type (§8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.event import Event, Unprocessable
from consumers.handlers import builtin_spec
from consumers.retry import ERROR_HEADER
from consumers.source_policy import SourcePolicy
from consumers.state import open_store
from gateway.settings import Source
from gateway.topology import dlq_name
from tests.worker_support import (
    Broker,
    as_received,
    delivered,
    drain_queue,
    make_settings,
    notify_inbound,
    notify_status,
    run_until_settled,
    sqlite_url,
    with_changes,
)

POLICY = SourcePolicy(
    (
        Source("camara", "camara"),
        Source("partner", "cloudevents", types=("com.example.#",)),
        Source("everything", "cloudevents"),
        Source("notify-status", "notify-delivery-status"),
    )
)
ROAMING = "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on"


def _event(event_type: str, source: str | None) -> Event:
    extensions = {} if source is None else {"gatewaysource": source}
    return Event.from_dict(
        {"id": "1", "source": "/s", "type": event_type, "specversion": "1.0", **extensions}
    )


@pytest.mark.parametrize(
    ("event_type", "source", "allowed"),
    [
        (ROAMING, "camara", True),
        ("com.example.thing", "camara", False),
        ("com.example.thing", "partner", True),
        ("com.examples.thing", "partner", False),
        ("notify.sms.delivery-status", "notify-status", True),
        ("notify.sms.delivery-status", "camara", False),
        ("notify.sms.delivery-status", "everything", False),
        ("notify.sms.inbound", "notify-status", False),
        (ROAMING, "everything", True),
        (ROAMING, "not-configured", False),
        (ROAMING, None, False),
    ],
)
def test_policy(event_type: str, source: str | None, allowed: bool) -> None:
    """A configured source's types decide; notify.* is the Notify adapters' alone."""
    event = _event(event_type, source)
    assert (POLICY.refusal(event) is None) is allowed
    if not allowed:
        with pytest.raises(Unprocessable):
            POLICY.check(event)


async def test_spoofed_events_published_to_the_exchange_are_dead_lettered(
    env: Broker, tmp_path: Path
) -> None:
    """Events straight on the exchange that no source may send go to .dlq, not the store."""
    url = sqlite_url(tmp_path)
    settings = make_settings(env.prefix, url)
    spec = builtin_spec(settings.amqp, "sms")
    env.track(spec.queue, settings)
    genuine = notify_status("n-ok", "delivered", "2026-11-30T10:00:00Z", "2026-11-30T10:00:01Z")
    forged = notify_status(
        "n-forged", "permanent-failure", "2026-11-30T10:00:00Z", "2026-11-30T10:00:01Z"
    )
    inbound = notify_inbound()
    events = [
        as_received(genuine),
        as_received(forged, source="test"),  # a cloudevents source: no notify.* at all
        as_received(with_changes(forged, id="n-forged:2"), source="nobody"),
        with_changes(forged, id="n-forged:3"),  # no gatewaysource: never came through the door
        as_received(inbound, source="notify-status"),  # the wrong Notify source for its type
    ]
    channel = await env.channel()
    metrics = await run_until_settled(settings, spec, channel, events)
    assert delivered(metrics, spec.queue, "ok") == 1
    assert delivered(metrics, spec.queue, "dead_lettered") == 4
    dead = await drain_queue(channel, dlq_name(spec.queue))
    errors = sorted(str((m.headers or {})[ERROR_HEADER]) for m in dead)
    assert len(errors) == 4
    assert all(error.startswith("Unprocessable: ") for error in errors)
    assert any("'nobody' is not a configured source" in error for error in errors)
    assert any("may not send events of type 'notify.sms.delivery-status'" in e for e in errors)
    store = await open_store(url)
    try:
        assert await store.message("n-ok") is not None
        assert await store.message("n-forged") is None
        assert await store.inbound(inbound["id"]) is None
    finally:
        await store.close()
