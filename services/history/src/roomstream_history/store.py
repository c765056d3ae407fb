"""Postgres I/O of history: the idempotent batch write, page reads, purging old events."""

from __future__ import annotations

from collections import Counter

import asyncpg

from .model import PageQuery, Rows

# $1: the batch as one JSON array of [room, seq, id, kind, user, ts, data, target_seq] (`Rows`).
_INSERT = """
WITH ins AS (
    INSERT INTO history_events (room, seq, id, kind, user_id, ts, data, target_seq)
    SELECT x->>0, (x->>1)::bigint, x->>2, x->>3, x->>4, (x->>5)::bigint, x->6, (x->>7)::bigint
    FROM jsonb_array_elements($1::jsonb) AS x
    ON CONFLICT DO NOTHING
    RETURNING kind
)
SELECT kind, count(*) AS n FROM ins GROUP BY kind
"""

# Recompute the current state of target messages from every stored edit / delete of them:
# the newest edit's text, deleted (text removed) once any delete exists. Idempotent, and correct
# whatever order the edits arrive in.
_APPLY_EDITS = """
WITH t AS (SELECT DISTINCT room, seq FROM unnest($1::text[], $2::bigint[]) AS t(room, seq)),
s AS (
    SELECT t.room, t.seq,
        (SELECT e.data->>'text' FROM history_events e
          WHERE e.room = t.room AND e.target_seq = t.seq AND e.kind = 'message_edited'
          ORDER BY e.seq DESC LIMIT 1) AS edit_text,
        EXISTS (SELECT 1 FROM history_events e
          WHERE e.room = t.room AND e.target_seq = t.seq AND e.kind = 'message_deleted') AS del
    FROM t
)
UPDATE history_events m SET
    edited = m.edited OR s.edit_text IS NOT NULL,
    deleted = s.del,
    data = CASE WHEN s.del THEN m.data - 'text'
                WHEN s.edit_text IS NOT NULL THEN jsonb_set(m.data, '{text}', to_jsonb(s.edit_text))
                ELSE m.data END
FROM s
WHERE m.room = s.room AND m.seq = s.seq AND m.kind = 'message'
RETURNING m.room, m.seq, m.deleted
"""

# A deleted message's text must not survive in the edits that targeted it either.
_CLEAR_EDIT_TEXTS = """
UPDATE history_events e SET data = e.data - 'text'
FROM unnest($1::text[], $2::bigint[]) AS t(room, seq)
WHERE e.room = t.room AND e.target_seq = t.seq AND e.kind = 'message_edited' AND e.data ? 'text'
"""

_ADD_ORPHANS = """
INSERT INTO history_orphans (room, target_seq)
SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING
"""

_COLUMNS = "room, seq, id, kind, user_id, ts, data::text AS data, edited, deleted"


class HistoryStore:
    """The history tables (see migrations/001_events.sql)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- writing ---------------------------------------------------------------------------

    async def persist(self, rows: Rows) -> Counter[str]:
        """Store a batch idempotently and apply its edits/deletes, in one transaction.

        Returns how many events of each kind were new (duplicates are skipped silently).
        """
        inserted: Counter[str] = Counter()
        if not len(rows):
            return inserted
        param = rows.json()
        async with self.pool.acquire() as conn, conn.transaction():
            for row in await conn.fetch(_INSERT, param):
                inserted[row["kind"]] = row["n"]
            targets = rows.targets()
            orphans = await self._orphans_now_present(conn, rows)
            if targets or orphans:
                await self._apply_edits(conn, targets, orphans)
        return inserted

    async def _orphans_now_present(
        self, conn: asyncpg.Connection, rows: Rows
    ) -> set[tuple[str, int]]:
        """Edits stored before their message whose message is in this batch."""
        waiting = await conn.fetch("SELECT room, target_seq FROM history_orphans LIMIT 10000")
        if not waiting:
            return set()
        return {(w["room"], w["target_seq"]) for w in waiting} & rows.messages()

    async def _apply_edits(
        self,
        conn: asyncpg.Connection,
        targets: set[tuple[str, int]],
        orphans: set[tuple[str, int]],
    ) -> None:
        pairs = sorted(targets | orphans)
        rooms, seqs = [p[0] for p in pairs], [p[1] for p in pairs]
        updated = await conn.fetch(_APPLY_EDITS, rooms, seqs)
        found = {(u["room"], u["seq"]) for u in updated}
        deleted = [(u["room"], u["seq"]) for u in updated if u["deleted"]]
        if deleted:
            await conn.execute(_CLEAR_EDIT_TEXTS, [d[0] for d in deleted], [d[1] for d in deleted])
        missing = [p for p in targets if p not in found]
        if missing:
            # Only targets not stored at all wait for their message; a target that is stored but
            # is not a message (the gateway refuses such edits) is ignored.
            absent = await conn.fetch(
                "SELECT t.r, t.s FROM unnest($1::text[], $2::bigint[]) AS t(r, s) WHERE NOT EXISTS"
                " (SELECT 1 FROM history_events e WHERE e.room = t.r AND e.seq = t.s)",
                [m[0] for m in missing],
                [m[1] for m in missing],
            )
            if absent:
                await conn.execute(_ADD_ORPHANS, [a["r"] for a in absent], [a["s"] for a in absent])
        if orphans:
            await conn.execute(
                "DELETE FROM history_orphans o USING unnest($1::text[], $2::bigint[]) AS t(r, s)"
                " WHERE o.room = t.r AND o.target_seq = t.s",
                [o[0] for o in orphans],
                [o[1] for o in orphans],
            )

    # -- reading ---------------------------------------------------------------------------

    async def page(self, room: str, query: PageQuery) -> tuple[list[asyncpg.Record], bool]:
        """The rows of one page, ascending by seq, and whether more follow in its direction."""
        n = query.limit + 1
        if query.after is not None:
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM history_events WHERE room = $1 AND seq > $2"
                " AND seq < $3 ORDER BY seq LIMIT $4",
                room,
                query.after,
                query.before if query.before is not None else 2**62,
                n,
            )
            return list(rows[: query.limit]), len(rows) > query.limit
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM history_events WHERE room = $1 AND seq < $2"
            " ORDER BY seq DESC LIMIT $3",
            room,
            query.before if query.before is not None else 2**62,
            n,
        )
        page = list(reversed(rows[: query.limit]))
        return page, len(rows) > query.limit

    async def room_created(self, room: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT 1 FROM history_events WHERE room = $1 AND seq = 1 AND kind = 'room_created'",
                room,
            )
        )

    async def first_available(self, room: str) -> int:
        """The lowest seq of `room` that still exists (1 unless history retention purged some)."""
        value = await self.pool.fetchval(
            "SELECT first_seq FROM history_purged WHERE room = $1", room
        )
        return int(value) if value is not None else 1

    # -- history retention -----------------------------------------------------------------

    async def purge_older_than(self, ts_ms: int) -> dict[str, int]:
        """Delete events older than `ts_ms`; returns the new first available seq per room."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                WITH d AS (DELETE FROM history_events WHERE ts < $1 RETURNING room, seq),
                m AS (SELECT room, max(seq) + 1 AS first_seq FROM d GROUP BY room)
                INSERT INTO history_purged (room, first_seq) SELECT room, first_seq FROM m
                ON CONFLICT (room) DO UPDATE
                    SET first_seq = GREATEST(history_purged.first_seq, EXCLUDED.first_seq)
                RETURNING room, first_seq
                """,
                ts_ms,
            )
            purged = {r["room"]: int(r["first_seq"]) for r in rows}
            if purged:
                # Keep each room's history a gapless suffix even if clocks disagreed.
                await conn.execute(
                    "DELETE FROM history_events e USING unnest($1::text[], $2::bigint[])"
                    " AS p(room, first_seq) WHERE e.room = p.room AND e.seq < p.first_seq",
                    list(purged),
                    list(purged.values()),
                )
        return purged
