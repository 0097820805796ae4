"""Batches of writes: reduced per key and group, the same state as one by one, concurrent too."""

from __future__ import annotations

import asyncio
import random

from consumers.state import StateStore, open_store
from consumers.state.writes import Write, reduce_writes
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    DEVICE,
    LATER,
    T0,
    country,
    message_status,
    pg_admin_fixture,
    pg_url_fixture,
    reach,
    roaming,
    state_url_fixture,
    store_fixture,
    subscription,
    v,
)

REACHABILITIES = ("DATA", "SMS", "DISCONNECTED")


def test_reduce_keeps_the_greatest_write_per_group_and_one_row_per_device() -> None:
    """Per device each group keeps its greatest version; devices come sorted by key."""
    writes: list[Write] = [
        reach("SMS", v(LATER, "b"), device="+2"),
        roaming(True, v(T0, "a")),
        reach("DATA", v(T0, "z"), device="+2"),
        country(214, ("ES",), v(T0, "a", rank=1)),
        country(None, None, v(T0, "b")),
        roaming(False, v(LATER, "c")),
    ]
    reduced = reduce_writes(writes)
    assert [row.device for row in reduced.devices] == ["+2", DEVICE]
    [other, device] = reduced.devices
    assert other.reachability == writes[0]
    assert other.roaming is None
    assert other.country is None
    assert device.roaming == writes[5]
    assert device.country == writes[3]  # the carried country outranks "unknown" at one time


def test_reduce_keeps_the_earliest_event_per_message_status() -> None:
    """A status reported twice keeps its earliest version; other statuses stay apart."""
    writes: list[Write] = [
        message_status("sending", v(LATER, "late")),
        message_status("sending", v(T0, "early")),
        message_status("delivered", v(LATER, "d", tier=1)),
    ]
    reduced = reduce_writes(writes)
    assert [(w.status, w.version.event_id) for w in reduced.message_statuses] == [
        ("delivered", "d"),
        ("sending", "early"),
    ]


def _random_writes(rng: random.Random, count: int, prefix: str) -> list[Write]:
    writes: list[Write] = []
    for number in range(count):
        version = v(
            T0.replace(second=rng.randrange(3)),
            f"e{number % 7}",
            source=rng.choice(("/a", "/b")),
            rank=rng.randrange(2),
        )
        device = prefix + rng.choice(("d1", "d2"))
        kind = rng.randrange(4)
        if kind == 0:
            writes.append(reach(rng.choice(REACHABILITIES), version, device=device))
        elif kind == 1:
            writes.append(roaming(rng.random() < 0.5, version, device=device))
        elif kind == 2:
            writes.append(country(rng.randrange(3), None, version, device=device))
        else:
            status = rng.choice(("ACTIVE", "INACTIVE", "ENDED"))
            tier = 1 if status == "ENDED" else 0
            writes.append(subscription(status, version._replace(tier=tier), key=prefix + "s"))
    # The same (source, id, time, rank) is one event: keep each version's first write only.
    seen: set[tuple[type, object]] = set()
    unique = []
    for write in writes:
        if (type(write), write.version) not in seen:
            seen.add((type(write), write.version))
            unique.append(write)
    return unique


async def _state(store: StateStore, prefix: str) -> list[object]:
    """What the store says about a prefix's entities, without the keys."""
    found = [
        await store.device(prefix + "d1"),
        await store.device(prefix + "d2"),
        await store.subscription(prefix + "s"),
    ]
    return [
        None if entity is None else {n: x for n, x in entity.items() if n != k}
        for entity, k in zip(found, ("device", "device", "subscription_id"), strict=True)
    ]


async def test_a_batch_gives_the_state_of_its_writes_one_by_one(store: StateStore) -> None:
    """Batches of any split end where single writes in another order end."""
    for seed in range(5):
        batched = _random_writes(random.Random(seed), 40, f"b{seed}-")
        single = _random_writes(random.Random(seed), 40, f"s{seed}-")
        cut = random.Random(seed).randrange(len(batched))
        await store.apply_writes(batched[:cut])
        await store.apply_writes(batched[cut:])
        random.Random(-seed).shuffle(single)
        for write in single:
            await store.apply_writes([write])
        assert await _state(store, f"b{seed}-") == await _state(store, f"s{seed}-")


async def test_an_empty_batch_does_nothing(store: StateStore) -> None:
    """apply_writes([]) runs no statement and fails on nothing."""
    await store.apply_writes([])
    assert await store.device(DEVICE) is None


async def test_concurrent_batches_from_two_stores_converge(state_url: str) -> None:
    """Two stores on one database applying interleaved batches end as one store would."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        for seed in range(3):
            writes = _random_writes(random.Random(seed), 60, f"c{seed}-")
            batches = [writes[i : i + 5] for i in range(0, len(writes), 5)]
            await asyncio.gather(
                *((first, second)[n % 2].apply_writes(batch) for n, batch in enumerate(batches))
            )
            for write in _random_writes(random.Random(seed), 60, f"r{seed}-"):
                await first.apply_writes([write])
            expected = await _state(first, f"r{seed}-")
            assert await _state(first, f"c{seed}-") == expected
            assert await _state(second, f"c{seed}-") == expected
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_many_writers_racing_on_one_group_keep_the_greatest(state_url: str) -> None:
    """Writes racing on one device's group leave exactly the greatest version."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        rng = random.Random(7)
        writes = [reach(rng.choice(REACHABILITIES), v(T0, f"ev-{n:03d}")) for n in range(60)]
        rng.shuffle(writes)
        await asyncio.gather(
            *((first, second)[n % 2].apply_writes([w]) for n, w in enumerate(writes * 2))
        )
        winner = max(writes, key=lambda w: w.version)
        device = await first.device(DEVICE)
        assert device is not None
        assert device["reachability"] == winner.reachability
        assert await second.device(DEVICE) == device
    finally:
        await asyncio.gather(first.close(), second.close())
