"""``SourceAccess.forbidden_type``: which event types a source may send, remembered or not."""

from __future__ import annotations

from gateway.cloudevent import CloudEvent
from gateway.settings import Source
from gateway.source_access import MAX_REMEMBERED_TYPES, SourceAccess


def events(*types: str) -> list[CloudEvent]:
    """Minimal events of these types, in order."""
    return [{"id": str(index), "type": event_type} for index, event_type in enumerate(types)]


def test_the_first_type_the_source_may_not_send_is_named() -> None:
    """Allowed types pass, the first forbidden one is returned, whatever was seen before."""
    access = SourceAccess(Source("camara", "camara"), ())
    allowed = "org.camaraproject.device-status.v0.roaming-on"
    assert access.forbidden_type(events(allowed)) is None
    assert access.forbidden_type(events(allowed, allowed)) is None
    assert access.forbidden_type(events(allowed, "org.example.other", "x.y")) == "org.example.other"
    assert access.forbidden_type(events("org.example.other")) == "org.example.other"


def test_a_notify_type_stays_forbidden_for_a_catch_all_source() -> None:
    """``#`` lets everything in but the notify namespace, also on a second look."""
    access = SourceAccess(Source("any", "cloudevents", types=("#",)), ())
    for _ in range(2):
        assert access.forbidden_type(events("org.example.a")) is None
        assert access.forbidden_type(events("notify.sms.inbound")) == "notify.sms.inbound"


def test_remembered_types_are_bounded_and_the_rest_still_checked() -> None:
    """Past ``MAX_REMEMBERED_TYPES`` allowed types, more are checked each time, not kept."""
    access = SourceAccess(Source("any", "cloudevents", types=("org.example.#",)), ())
    many = [f"org.example.t{index}" for index in range(MAX_REMEMBERED_TYPES + 10)]
    assert access.forbidden_type(events(*many)) is None
    assert len(access._allowed_types) == MAX_REMEMBERED_TYPES
    assert access.forbidden_type(events(many[-1], "org.other")) == "org.other"
    assert access.forbidden_type(events("notify.email.delivery-status")) is not None
