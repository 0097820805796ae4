"""The in-flight budget: what a body is charged, and who may hold how much."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from gateway.inflight import InflightBudget, parsed_cost

KIB = 1024
SIZE = 256 * KIB


def _array(element: bytes) -> bytes:
    count = SIZE // (len(element) + 1)
    return b"[" + b",".join([element] * count) + b"]"


HOSTILE = {
    "empty objects": _array(b"{}"),
    "empty arrays": _array(b"[]"),
    "nested objects": _array(b'{"a":{}}'),
    "small objects": _array(b'{"a":1}'),
    "zeros": _array(b"0"),
    "floats": _array(b"1.5"),
    "short strings": _array(b'"a"'),
    "many keys": b"{" + b",".join(b'"k%d":0' % i for i in range(SIZE // 10)) + b"}",
    "deep": b"[" * 500 + b"]" * 500,
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_parsed_cost_bounds_what_parsing_allocates(body: bytes) -> None:
    """The charge is at least what orjson allocates for the body (measured), plus the body."""
    tracemalloc.start()
    try:
        parsed = orjson.loads(body)
        allocated, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del parsed
    assert parsed_cost(body) >= allocated + len(body)


def test_parsed_cost_of_an_ordinary_event_is_a_few_times_its_size() -> None:
    """A plain CloudEvent is charged a small multiple of its bytes, so legitimate traffic fits."""
    event = orjson.dumps(
        {
            "id": "5f1c0a4e-1111-2222-3333-444455556666",
            "source": "https://example.org/qod",
            "type": "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on",
            "specversion": "1.0",
            "time": "2026-03-01T10:00:00Z",
            "data": {"device": {"phoneNumber": "+36721601234567"}, "subscriptionId": "abc"},
        }
    )
    assert len(event) < parsed_cost(event) < 10 * len(event)


def test_reservations_fill_the_budget_and_release_it() -> None:
    """Charges add up to the limit; past it reserve fails; released bytes can be reserved again."""
    budget = InflightBudget(1000, share=1.0)
    first = budget.reserve("a", 600)
    assert first is not None
    assert budget.reserve("a", 500) is None
    second = budget.reserve("a", 400)
    assert second is not None
    assert budget.held == 1000
    first.release()
    second.release()
    assert budget.held == 0
    assert budget.high_water == 1000


def test_one_source_holds_at_most_its_share() -> None:
    """A source is refused past half the budget while another source still gets in."""
    budget = InflightBudget(1000)
    assert budget.reserve("hostile", 400) is not None
    assert budget.reserve("hostile", 200) is None
    assert budget.reserve("other", 400) is not None


def test_a_body_over_the_share_goes_alone_holding_the_whole_share() -> None:
    """An oversized charge is admitted only when its source holds nothing else, capped."""
    budget = InflightBudget(1000)
    small = budget.reserve("a", 10)
    assert small is not None
    assert budget.reserve("a", 5000) is None
    small.release()
    big = budget.reserve("a", 5000)
    assert big is not None
    assert big.amount == 500
    assert budget.reserve("a", 1) is None
    assert budget.reserve("b", 500) is not None


def test_resize_keeps_the_charge_when_the_new_size_does_not_fit() -> None:
    """A failed resize leaves the earlier charge in place (released later by its owner)."""
    budget = InflightBudget(1000, share=1.0)
    other = budget.reserve("a", 900)
    charge = budget.charge("a")
    assert charge.resize(100)
    assert not charge.resize(200)
    assert charge.amount == 100
    assert budget.held == 1000
    charge.release()
    assert other is not None
    other.release()
    assert budget.held == 0
