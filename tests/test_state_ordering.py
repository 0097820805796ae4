"""Order independence: any delivery order, redelivery and concurrent writers converge."""

from __future__ import annotations

import asyncio
import itertools
import random

from hypothesis import HealthCheck, given, settings

from consumers.state import StateStore, open_store
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    DEVICES,
    T0,
    Reachability,
    Update,
    apply,
    expected_state,
    pg_admin_fixture,
    pg_url_fixture,
    random_updates,
    snapshot,
    state_url_fixture,
    store_fixture,
    update_lists,
    version,
)

_examples = itertools.count()


# Every example writes under its own key prefix, so sharing the test's store is sound.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(updates=update_lists())
async def test_any_order_with_duplicates_matches_sorted_order(
    store: StateStore, updates: list[Update]
) -> None:
    """Applying updates shuffled and redelivered gives the state that sorted order gives."""
    example = next(_examples)
    in_order, shuffled = f"sorted-{example}:", f"shuffled-{example}:"
    for update in sorted(set(updates), key=version):
        await apply(store, update, in_order)
    for update in updates:
        await apply(store, update, shuffled)
    from_sorted = await snapshot(store, updates, in_order)
    assert await snapshot(store, updates, shuffled) == from_sorted
    assert from_sorted == expected_state(updates)


async def test_two_stores_writing_concurrently_converge(state_url: str) -> None:
    """Two stores on one database, fed interleaved shuffled updates at once, agree on the rule."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        for seed in range(3):
            updates = random_updates(random.Random(seed), 120)
            prefix = f"run-{seed}:"
            await asyncio.gather(
                *(
                    apply((first, second)[index % 2], update, prefix)
                    for index, update in enumerate(updates)
                )
            )
            expected = expected_state(updates)
            assert await snapshot(first, updates, prefix) == expected
            assert await snapshot(second, updates, prefix) == expected
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_concurrent_writes_to_one_row_keep_the_winner(state_url: str) -> None:
    """Many writers racing on one device's group leave exactly the greatest event."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        rng = random.Random(7)
        values = ("DATA", "SMS", "DISCONNECTED")
        updates = [
            Reachability(DEVICES[0], rng.choice(values), T0, f"ev-{number:03d}")
            for number in range(60)
        ]
        rng.shuffle(updates)
        changed = await asyncio.gather(
            *(apply((first, second)[index % 2], update) for index, update in enumerate(updates * 2))
        )
        winner = max(updates, key=version)
        device = await first.device(DEVICES[0])
        assert device is not None
        assert device["reachability"] == winner.reachability
        assert 1 <= sum(changed) <= len(updates)
        assert await second.device(DEVICES[0]) == device
    finally:
        await asyncio.gather(first.close(), second.close())
