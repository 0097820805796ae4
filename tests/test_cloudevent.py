"""The CloudEvent module's time formatting and parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cloudevent import parse_time, rfc3339

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES
)


def reference(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, straight from ``isoformat``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@settings(max_examples=500, deadline=None)
@given(moments=st.lists(MOMENTS, min_size=1, max_size=5))
def test_rfc3339_is_isoformat_in_utc_with_milliseconds(moments: list[datetime]) -> None:
    """Whatever came before (the per-second cache), each moment formats as isoformat would."""
    for moment in moments:
        assert rfc3339(moment) == reference(moment)


def test_rfc3339_within_one_second_differs_only_in_milliseconds() -> None:
    """Moments of the same second share the cached date and time of day."""
    start = datetime(2026, 12, 1, 0, 59, 59, 998_999, tzinfo=UTC)
    texts = [rfc3339(start + timedelta(microseconds=step)) for step in (0, 1, 1001, 1002)]
    assert texts == [
        "2026-12-01T00:59:59.998Z",
        "2026-12-01T00:59:59.999Z",
        "2026-12-01T01:00:00.000Z",
        "2026-12-01T01:00:00.000Z",
    ]


@given(moment=MOMENTS)
def test_rfc3339_parses_back_to_the_millisecond(moment: datetime) -> None:
    """``parse_time`` reads what ``rfc3339`` writes: the moment, cut to milliseconds."""
    utc = moment.astimezone(UTC)
    assert parse_time(rfc3339(moment)) == utc.replace(microsecond=utc.microsecond // 1000 * 1000)
