"""The Postgres write against a real database: idempotence and edits/deletes in any order."""

from __future__ import annotations

import asyncpg
from roomstream_contracts.events import Envelope, EventKind
from roomstream_history.model import PageQuery, row_body, to_rows
from roomstream_history.store import HistoryStore
from roomstream_kit.postgres import create_pool, migrate


def ev(seq: int, kind: EventKind, data: dict, user: str = "alice") -> Envelope:
    return Envelope(id=f"e{seq}", kind=kind, room="r", user=user, ts=1000 + seq, seq=seq, data=data)


def msg(seq: int, text: str) -> Envelope:
    return ev(seq, EventKind.MESSAGE, {"text": text, "client_id": f"c{seq}"})


async def test_batches_are_idempotent_and_edits_apply_in_any_order(database_url: str) -> None:
    pool: asyncpg.Pool = await create_pool(database_url, max_size=2)
    try:
        await migrate(pool, "history", "roomstream_history.migrations")
        store = HistoryStore(pool)
        joined = ev(1, EventKind.MEMBER_JOINED, {"by": "alice"})
        # Edits and a delete arrive before their messages (a late reclaimed batch).
        early = [
            ev(5, EventKind.MESSAGE_EDITED, {"target_seq": 2, "text": "two, edited later"}),
            ev(4, EventKind.MESSAGE_EDITED, {"target_seq": 2, "text": "two, edited"}),
            ev(6, EventKind.MESSAGE_DELETED, {"target_seq": 3}),
            ev(7, EventKind.MESSAGE_EDITED, {"target_seq": 1, "text": "not a message"}),
        ]
        assert sum((await store.persist(to_rows([joined]))).values()) == 1
        assert sum((await store.persist(to_rows(early))).values()) == 4
        orphans = await pool.fetch("SELECT room, target_seq FROM history_orphans ORDER BY 2")
        assert [(o["room"], o["target_seq"]) for o in orphans] == [("r", 2), ("r", 3)]
        late = [msg(2, "two"), msg(3, "three")]
        assert sum((await store.persist(to_rows(late))).values()) == 2
        # Everything again: nothing new, nothing changes.
        again = await store.persist(to_rows([joined, *early, *late]))
        assert sum(again.values()) == 0
        rows, more = await store.page("r", PageQuery(limit=50))
        bodies = {r["seq"]: row_body(r) for r in rows}
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6, 7] and more is False
        assert bodies[2]["data"] == {
            "text": "two, edited later",
            "client_id": "c2",
            "edited": True,
        }
        assert bodies[3]["data"] == {"client_id": "c3", "deleted": True}
        assert bodies[1]["data"] == {"by": "alice"}
        assert await pool.fetchval("SELECT count(*) FROM history_orphans") == 0
    finally:
        await pool.close()
