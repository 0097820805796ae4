"""A custom handler: keep a list of SMS that Notify could not deliver.

Run it next to the gateway (RabbitMQ on localhost, as `make run` expects):

    PYTHONPATH=examples event-gateway consume --queue failed-sms \
        --bind 'notify.sms.delivery-status' --handler failed_sms:handle --config config/dev.toml

The worker declares the queue `events.failed-sms` (with its retry queues and
`events.failed-sms.dlq`), binds it to the exchange, and calls `handle` once per event. Each SMS
that ended in a failure status becomes one JSON line in `$FAILED_SMS_FILE` (default
`failed-sms.jsonl`): the Notify id, your `reference`, the status and when it happened. The
phone number is not written.

Delivery is at least once: a receipt can arrive twice (a resend, a redelivery after a crash),
so the handler skips ids it has already written. Returning means done (the worker acks);
raising means retry later (then `.dlq`); `consumers.Unprocessable` means "never", straight to
`.dlq`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from consumers import Event, Unprocessable

FAILURES = frozenset({"permanent-failure", "temporary-failure", "technical-failure"})


def _output() -> Path:
    return Path(os.environ.get("FAILED_SMS_FILE", "failed-sms.jsonl"))


def _written_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as lines:
        return {json.loads(line)["event_id"] for line in lines if line.strip()}


async def handle(event: Event) -> None:
    """Append one line per failed SMS; ignore every other receipt."""
    if not isinstance(event.data, dict) or "status" not in event.data:
        raise Unprocessable("not a Notify delivery receipt")
    status = event.data["status"]
    if status not in FAILURES:
        return
    path = _output()
    if event.id in _written_ids(path):
        return  # already written: a redelivered or resent receipt
    line = {
        "event_id": event.id,
        "notify_id": event.subject,
        "reference": event.data.get("reference"),
        "status": status,
        "time": event.time.isoformat() if event.time else None,
    }
    with path.open("a", encoding="utf-8") as out:  # small local file: no need for a thread
        out.write(json.dumps(line) + "\n")
