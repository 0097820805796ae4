"""``consumers.Event``: the typed, read-only CloudEvent a handler receives."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from consumers import Event, InvalidEvent, Unprocessable
from tests.worker_support import fixture


def test_fixture_parses_into_typed_attributes() -> None:
    """Core attributes become fields, ``time`` a datetime, others go to ``extensions``."""
    raw = fixture("camara-roaming-status")
    raw.update(partitionkey="+123456789", gatewaysource="camara", subject=None)
    event = Event.from_body(orjson.dumps(raw))
    assert event.id == "123654"
    assert event.type == "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-status"
    assert event.time == datetime(2023, 1, 17, 13, 18, 23, 682000, tzinfo=UTC)
    assert event.partitionkey == "+123456789"
    assert event.subject is None  # JSON null is absent
    assert event.datacontenttype == "application/json"
    assert event.data["roaming"] is True
    assert dict(event.extensions) == {"gatewaysource": "camara"}


def test_event_is_read_only() -> None:
    """Neither the fields nor the extensions can be changed by a handler."""
    event = Event.from_dict(fixture("camara-roaming-on") | {"gatewaysource": "camara"})
    with pytest.raises(AttributeError):
        event.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.extensions["gatewaysource"] = "x"  # type: ignore[index]


def test_received_time_and_effective_time() -> None:
    """``effective_time`` is ``time``, else the ``gatewayreceived`` extension."""
    raw = fixture("camara-roaming-on")
    raw["gatewayreceived"] = "2025-01-02T03:04:05.678Z"
    with_time = Event.from_dict(raw)
    del raw["time"]
    without = Event.from_dict(raw)
    assert with_time.effective_time == with_time.time
    assert without.time is None
    assert without.effective_time == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_numeric_id_and_base64_data() -> None:
    """A numeric id becomes its string; ``data_base64`` is decoded to bytes."""
    event = Event.from_dict(
        {"id": 7, "source": "/s", "type": "t", "specversion": "1.0", "data_base64": "AAECAw=="}
    )
    assert event.id == "7"
    assert event.data == b"\x00\x01\x02\x03"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "not JSON"),
        (b'"a string"', "not a JSON object"),
        (b'{"id": "1", "source": "/s", "type": "t"}', "specversion"),
        (b'{"id": "1", "source": "/s", "type": "t", "specversion": "0.3"}', "specversion"),
        (b'{"id": "", "source": "/s", "type": "t", "specversion": "1.0"}', "'id'"),
        (b'{"id": "1", "type": "t", "specversion": "1.0"}', "'source'"),
        (b'{"id": "1", "source": "/s", "type": 5, "specversion": "1.0"}', "'type'"),
        (b'{"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "time": "x"}', "time"),
        (
            b'{"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "subject": 1}',
            "subject",
        ),
        (
            b'{"id": "1", "source": "/s", "type": "t", "specversion": "1.0", "data_base64": "!"}',
            "Base64",
        ),
    ],
)
def test_invalid_bodies_raise_invalid_event(body: bytes, message: str) -> None:
    """A body that is not a structured CloudEvent raises InvalidEvent naming the problem."""
    with pytest.raises(InvalidEvent, match=message) as info:
        Event.from_body(body)
    assert isinstance(info.value, Unprocessable)
