"""Batch writes (``StateStore.apply_writes``): the same state as the writes one by one."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.state import StateStore, open_store
from consumers.state.writes import (
    InboundWrite,
    MessageStatusWrite,
    ReachabilityWrite,
    RoamingWrite,
    SubscriptionWrite,
    Write,
    WriteRecorder,
    reduce_writes,
)
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    DEVICES,
    T0,
    Inbound,
    MessageStatus,
    Reachability,
    Roaming,
    Subscription,
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


def as_write(update: Update, prefix: str = "") -> Write:
    """The write ``update`` stands for, with ``prefix`` before the entity key."""
    match update:
        case Roaming():
            names = None if update.country_name is None else list(update.country_name)
            return RoamingWrite(
                prefix + update.device,
                update.roaming,
                update.country_code,
                names,
                update.time,
                update.event_id,
            )
        case Reachability():
            return ReachabilityWrite(
                prefix + update.device, update.reachability, update.time, update.event_id
            )
        case Subscription():
            return SubscriptionWrite(
                prefix + update.subscription_id,
                update.api,
                update.status,
                update.termination_reason,
                update.time,
                update.event_id,
            )
        case MessageStatus():
            return MessageStatusWrite(
                prefix + update.message_id,
                update.notification_type,
                update.status,
                update.time,
                update.event_id,
            )
        case Inbound():
            return InboundWrite(
                prefix + update.message_id,
                update.source_number,
                update.destination_number,
                update.message,
                update.time,
                update.event_id,
            )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(updates=update_lists(), cut=st.integers(min_value=0, max_value=20))
async def test_a_batch_gives_the_state_of_its_writes_one_by_one(
    store: StateStore, updates: list[Update], cut: int
) -> None:
    """Two batches (the updates in any order, with redeliveries, cut anywhere) end where the
    same updates applied one by one in sorted order end, and where the rule says."""
    example = next(_examples)
    one_by_one, batched = f"single-{example}:", f"batch-{example}:"
    for update in sorted(set(updates), key=version):
        await apply(store, update, one_by_one)
    await store.apply_writes(as_write(update, batched) for update in updates[:cut])
    await store.apply_writes(as_write(update, batched) for update in updates[cut:])
    expected = await snapshot(store, updates, one_by_one)
    assert await snapshot(store, updates, batched) == expected
    assert expected == expected_state(updates)


async def test_a_batch_respects_what_is_stored(store: StateStore) -> None:
    """A batch older than the stored state changes nothing; a newer one wins; again: no-op."""
    device = DEVICES[0]
    await apply(store, Reachability(device, "SMS", T0.replace(second=30), "ev-b"))
    older = ReachabilityWrite(device, "DATA", T0, "ev-z")
    newer = ReachabilityWrite(device, "DISCONNECTED", T0.replace(second=40), "ev-a")
    await store.apply_writes([older])
    found = await store.device(device)
    assert found is not None
    assert found["reachability"] == "SMS"
    await store.apply_writes([newer, older, newer])
    found = await store.device(device)
    assert found is not None
    assert found["reachability"] == "DISCONNECTED"
    await store.apply_writes([older, newer])
    assert await store.device(device) == found


async def test_an_empty_batch_does_nothing(store: StateStore) -> None:
    """Applying no writes changes nothing and touches no table."""
    await store.apply_writes([])
    assert await store.device(DEVICES[0]) is None


async def test_a_bad_write_fails_the_batch_before_anything_is_written(store: StateStore) -> None:
    """An invalid write in a batch fails it before any row is written."""
    good = ReachabilityWrite(DEVICES[0], "DATA", T0, "ev-1")
    with pytest.raises(ValueError, match="reachability"):
        await store.apply_writes([good, ReachabilityWrite(DEVICES[1], "ON", T0, "ev-2")])
    with pytest.raises(ValueError, match="time zone"):
        await store.apply_writes(
            [good, ReachabilityWrite(DEVICES[1], "DATA", datetime(2023, 1, 1), "e")]
        )
    assert await store.device(DEVICES[0]) is None


async def test_concurrent_batches_from_two_stores_converge(state_url: str) -> None:
    """Two stores applying shuffled, overlapping batches at once agree with the rule."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        for seed in range(3):
            rng = random.Random(seed)
            updates = random_updates(rng, 200)
            prefix = f"run-{seed}:"
            writes = [as_write(update, prefix) for update in updates]
            batches = [writes[start : start + 16] for start in range(0, len(writes), 16)]
            await asyncio.gather(
                *(
                    (first, second)[index % 2].apply_writes(batch)
                    for index, batch in enumerate(batches + batches[::-1])
                )
            )
            expected = expected_state(updates)
            assert await snapshot(first, updates, prefix) == expected
            assert await snapshot(second, updates, prefix) == expected
    finally:
        await asyncio.gather(first.close(), second.close())


@given(updates=update_lists())
def test_reduce_keeps_one_write_per_key_sorted(updates: list[Update]) -> None:
    """Reducing a batch keeps the winning write per key, in key order."""
    reduced = reduce_writes(as_write(update) for update in updates)
    assert [w.device for w in reduced.roaming] == sorted({w.device for w in reduced.roaming})
    keys = [(w.message_id, w.status) for w in reduced.message_statuses]
    assert keys == sorted(set(keys))
    for write in reduced.roaming:
        same = [u for u in updates if isinstance(u, Roaming) and u.device == write.device]
        assert (write.time, write.event_id) == max(version(u) for u in same)


async def test_the_recorder_checks_and_records(store: StateStore) -> None:
    """The recorder validates writes like the store and records them instead of applying them."""
    recorder = WriteRecorder(store)
    assert await recorder.update_reachability(DEVICES[0], reachability="SMS", time=T0, event_id="e")
    with pytest.raises(ValueError, match="status"):
        await recorder.update_subscription(
            "s", api="a", status="GONE", termination_reason=None, time=T0, event_id="e"
        )
    assert recorder.writes == [ReachabilityWrite(DEVICES[0], "SMS", T0, "e")]
    assert await recorder.device(DEVICES[0]) is None  # nothing written yet
    await store.apply_writes(recorder.writes)
    found = await recorder.device(DEVICES[0])
    assert found is not None
    assert found["reachability"] == "SMS"
