"""The outbox and dead-letter SQL against a real Postgres (the test's own database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from roomstream_hooks.store import HooksStore, QueuedEvent
from roomstream_kit.postgres import create_pool, migrate

from tests.hooks.receiver import SECRET_A


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[HooksStore]:
    pool = await create_pool(database_url)
    await migrate(pool, "hooks", "roomstream_hooks.migrations")
    yield HooksStore(pool)
    await pool.close()


def _events(n: int, room: str = "r1", kind: str = "message") -> list[QueuedEvent]:
    return [QueuedEvent(f"{room}-e{i}", kind, room, f'{{"id":"{room}-e{i}"}}') for i in range(n)]


async def test_enqueue_matches_kinds_and_rooms_in_log_order_once(store: HooksStore) -> None:
    await store.create_endpoint("all", "http://h/", SECRET_A, ["message"], None)
    await store.create_endpoint("r2", "http://h/", SECRET_A, ["message"], ["r2"])
    await store.create_endpoint("joins", "http://h/", SECRET_A, ["member_joined"], None)
    batch = [e for pair in zip(_events(5, "r1"), _events(5, "r2"), strict=True) for e in pair]
    assert await store.enqueue(batch) == {"all": 10, "r2": 5}
    assert await store.enqueue(batch) == {}  # delivered again by the log: not queued twice
    head = await store.head("all", 100)
    assert [r.event_id for r in head] == [e.event_id for e in batch]
    assert [r.event_id for r in await store.head("r2", 100)] == [
        e.event_id for e in _events(5, "r2")
    ]


async def test_dead_letters_are_bounded_and_replayed_in_order(store: HooksStore) -> None:
    await store.create_endpoint("ep", "http://h/", SECRET_A, ["message"], None)
    await store.enqueue(_events(10))
    rows = await store.head("ep", 4)
    assert await store.dead_letter("ep", [r.pos for r in rows], 3600, keep=3) == (4, 1)
    kept = await store.dead_letters("ep", 0, 100)
    assert [d["event_id"] for d in kept] == ["r1-e1", "r1-e2", "r1-e3"]
    # An age bound of 0 s takes every queued event of the endpoint along.
    rest = await store.head("ep", 1)
    assert await store.dead_letter("ep", [rest[0].pos], 0, keep=100) == (6, 0)
    assert await store.head("ep", 100) == []
    assert await store.replay("ep", ["r1-e2", "r1-e5"]) == 2
    assert [r.event_id for r in await store.head("ep", 100)] == ["r1-e2", "r1-e5"]
    assert await store.replay("ep", None) == 7
    assert [r.event_id for r in await store.head("ep", 100)][2:] == [
        "r1-e1", "r1-e3", "r1-e4", "r1-e6", "r1-e7", "r1-e8", "r1-e9",
    ]  # fmt: skip
    assert await store.dead_letters("ep", 0, 100) == []
