"""Durable state in Postgres (asyncpg): the SQL of the projection and of the API's fallback reads.

Every function takes a connection, so the projector can run a whole batch in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from roomstream_kit.rooms import room_record

from .projection import (
    AddMember,
    CloseConn,
    ConnChange,
    CreateRoom,
    FailNode,
    OpenConn,
    RoomChange,
    StartNode,
    retire_mark,
)

PROJECTION_LOCK = 0x726F6F6D  # "room": serializes projection transactions across instances

Conn: TypeAlias = "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"


@dataclass(frozen=True, slots=True)
class RoomRow:
    id: str
    name: str
    kind: str
    owner: str
    created_at: int
    last_seq: int

    def record(self) -> dict[str, str]:
        """The Redis room hash (`roomstream_kit.rooms.room_record`)."""
        return room_record(self.id, self.name, self.kind, self.owner, self.created_at)


def _room(row: asyncpg.Record) -> RoomRow:
    return RoomRow(
        row["id"], row["name"], row["kind"], row["owner"], row["created_at"], row["last_seq"]
    )


# -- projection writes ------------------------------------------------------------------------


async def lock_projection(conn: Conn) -> None:
    """Hold the projection lock until the end of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTION_LOCK)


async def last_seqs(conn: Conn, rooms: Iterable[str]) -> dict[str, int]:
    rows = await conn.fetch("SELECT id, last_seq FROM rooms WHERE id = ANY($1)", list(rooms))
    return {r["id"]: r["last_seq"] for r in rows}


async def apply_room_change(conn: Conn, change: RoomChange) -> None:
    if isinstance(change, CreateRoom):
        await conn.execute(
            """INSERT INTO rooms (id, name, kind, owner, created_at, last_seq)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING""",
            change.room,
            change.name,
            change.kind,
            change.owner,
            change.created_at,
            change.seq,
        )
        await conn.execute(
            """INSERT INTO memberships (room, user_id, since_seq)
               SELECT $1, u, $3 FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING""",
            change.room,
            list(change.members),
            change.seq,
        )
    elif isinstance(change, AddMember):
        await conn.execute(
            """INSERT INTO memberships (room, user_id, since_seq)
               SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM rooms WHERE id = $1)
               ON CONFLICT DO NOTHING""",
            change.room,
            change.user,
            change.seq,
        )
    else:
        await conn.execute(
            "DELETE FROM memberships WHERE room = $1 AND user_id = $2", change.room, change.user
        )


async def add_skipped_seq(
    conn: Conn, room: str, seq: int, event_id: str, error: str, at_ms: int
) -> None:
    """Record a dead-lettered sequenced event: its seq counts as applied (without effect)."""
    await conn.execute(
        """INSERT INTO room_skipped_seqs (room, seq, event_id, error, skipped_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        room,
        seq,
        event_id,
        error,
        at_ms,
    )


async def skipped_seqs(conn: Conn, room: str, first: int, last: int) -> set[int]:
    """The skipped seqs of `room` in `first..last`."""
    rows = await conn.fetch(
        "SELECT seq FROM room_skipped_seqs WHERE room = $1 AND seq BETWEEN $2 AND $3",
        room,
        first,
        last,
    )
    return {r["seq"] for r in rows}


async def all_skipped_seqs(conn: Conn) -> dict[str, set[int]]:
    """Every skipped seq, by room (kept across a rebuild: the log still holds those events)."""
    out: dict[str, set[int]] = {}
    for r in await conn.fetch("SELECT room, seq FROM room_skipped_seqs"):
        out.setdefault(r["room"], set()).add(r["seq"])
    return out


async def set_last_seq(conn: Conn, room: str, seq: int) -> None:
    await conn.execute(
        "UPDATE rooms SET last_seq = GREATEST(last_seq, $2) WHERE id = $1", room, seq
    )


async def retired_marks(conn: Conn, nodes: Iterable[str]) -> dict[str, int]:
    """node → highest incarnation known dead (nodes without a mark are left out)."""
    rows = await conn.fetch(
        "SELECT node, retired_upto FROM node_incarnations WHERE node = ANY($1)", list(nodes)
    )
    return {r["node"]: r["retired_upto"] for r in rows}


async def retire(conn: Conn, node: str, upto: int, ts: int) -> list[tuple[str, str, str]]:
    """Raise `node`'s retired mark to `upto` and close its live connections of incarnations up to
    it (and those without an incarnation: opened by a process of an older version). Nothing when
    the mark is already there. Returns the (conn, user, node) rows closed."""
    rows = await conn.fetch(
        """WITH mark AS (
               INSERT INTO node_incarnations AS n (node, retired_upto) VALUES ($1, $2)
               ON CONFLICT (node) DO UPDATE SET retired_upto = EXCLUDED.retired_upto
               WHERE n.retired_upto < EXCLUDED.retired_upto
               RETURNING retired_upto)
           UPDATE connections c SET closed_at = $3 FROM mark
           WHERE c.node = $1 AND c.closed_at IS NULL
             AND COALESCE(c.incarnation, 0) <= mark.retired_upto
           RETURNING c.conn, c.user_id, c.node""",
        node,
        upto,
        ts,
    )
    return [(r["conn"], r["user_id"], r["node"]) for r in rows]


async def apply_conn_change(
    conn: Conn, change: ConnChange, marks: dict[str, int] | None = None
) -> list[tuple[str, str, str]]:
    """Apply one connection change; returns the (conn, user, node) rows it may have altered.

    `marks` (node → retired mark, as read by `retired_marks` for the batch's nodes and kept up to
    date here) saves the retire statement when a change's incarnation proves nothing new."""
    marks = {} if marks is None else marks
    altered: list[tuple[str, str, str]] = []
    mark = retire_mark(change)
    if mark is not None and mark[1] > marks.get(mark[0], -1):
        altered += await retire(conn, mark[0], mark[1], change.ts)
        marks[mark[0]] = mark[1]
    if isinstance(change, StartNode):
        return altered
    if isinstance(change, OpenConn):
        # Stored closed at once if its node was declared failed after it opened (older versions'
        # rule) or its incarnation is retired already (its `connected` was processed late).
        await conn.execute(
            """INSERT INTO connections (conn, user_id, node, opened_at, closed_at, incarnation)
               VALUES ($1, $2, $3, $4,
                       COALESCE(
                           (SELECT failed_at FROM node_failures
                            WHERE node = $3 AND failed_at >= $4),
                           (SELECT $4::bigint FROM node_incarnations
                            WHERE node = $3 AND retired_upto >= COALESCE($5::bigint, 0))),
                       $5)
               ON CONFLICT (conn) DO NOTHING""",
            change.conn,
            change.user,
            change.node,
            change.ts,
            change.incarnation,
        )
        return [*altered, (change.conn, change.user, change.node)]
    if isinstance(change, CloseConn):
        await conn.execute(
            """INSERT INTO connections (conn, user_id, node, closed_at, incarnation)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (conn) DO UPDATE
               SET closed_at = COALESCE(connections.closed_at, EXCLUDED.closed_at)""",
            change.conn,
            change.user,
            change.node,
            change.ts,
            change.incarnation,
        )
        return [*altered, (change.conn, change.user, change.node)]
    assert isinstance(change, FailNode)
    if change.incarnation is not None:
        return altered
    await conn.execute(
        """INSERT INTO node_failures (node, failed_at) VALUES ($1, $2) ON CONFLICT (node)
           DO UPDATE SET failed_at = GREATEST(node_failures.failed_at, EXCLUDED.failed_at)""",
        change.node,
        change.ts,
    )
    rows = await conn.fetch(
        """UPDATE connections SET closed_at = $2
           WHERE node = $1 AND closed_at IS NULL AND COALESCE(opened_at, 0) <= $2
           RETURNING conn, user_id, node""",
        change.node,
        change.ts,
    )
    return [(r["conn"], r["user_id"], r["node"]) for r in rows]


async def live_users_of_nodes(conn: Conn, nodes: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT user_id FROM connections WHERE node = ANY($1) AND closed_at IS NULL",
        nodes,
    )
    return {r["user_id"] for r in rows}


# -- reads (projection and API) ---------------------------------------------------------------


async def get_room(conn: Conn, room: str) -> RoomRow | None:
    row = await conn.fetchrow(
        "SELECT id, name, kind, owner, created_at, last_seq FROM rooms WHERE id = $1", room
    )
    return _room(row) if row else None


async def get_rooms(conn: Conn, rooms: Iterable[str]) -> dict[str, RoomRow]:
    rows = await conn.fetch(
        "SELECT id, name, kind, owner, created_at, last_seq FROM rooms WHERE id = ANY($1)",
        list(rooms),
    )
    return {r["id"]: _room(r) for r in rows}


async def all_room_ids(conn: Conn) -> list[str]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM rooms ORDER BY id")]


async def members(conn: Conn, room: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT user_id FROM memberships WHERE room = $1 ORDER BY user_id", room
    )
    return [r["user_id"] for r in rows]


async def memberships_of(conn: Conn, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (room, user) pairs are memberships now."""
    pairs = list(pairs)
    if not pairs:
        return set()
    rows = await conn.fetch(
        """SELECT m.room, m.user_id FROM memberships m
           JOIN unnest($1::text[], $2::text[]) AS p(room, user_id)
             ON m.room = p.room AND m.user_id = p.user_id""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r["room"], r["user_id"]) for r in rows}


async def rooms_of_users(conn: Conn, users: Iterable[str]) -> dict[str, list[str]]:
    users = list(users)
    out: dict[str, list[str]] = {u: [] for u in users}
    if not users:
        return out
    rows = await conn.fetch(
        "SELECT user_id, room FROM memberships WHERE user_id = ANY($1) ORDER BY user_id, room",
        users,
    )
    for r in rows:
        out[r["user_id"]].append(r["room"])
    return out


async def live_counts(conn: Conn, users: Iterable[str]) -> dict[str, int]:
    """Live connections per user (users without any are left out)."""
    users = list(users)
    if not users:
        return {}
    rows = await conn.fetch(
        """SELECT user_id, count(*) AS n FROM connections
           WHERE user_id = ANY($1) AND closed_at IS NULL GROUP BY user_id""",
        users,
    )
    return {r["user_id"]: int(r["n"]) for r in rows}


async def room_presence(conn: Conn, room: str) -> dict[str, int]:
    """Online members of a room → their live connection counts."""
    rows = await conn.fetch(
        """SELECT m.user_id, count(*) AS n FROM memberships m
           JOIN connections c ON c.user_id = m.user_id AND c.closed_at IS NULL
           WHERE m.room = $1 GROUP BY m.user_id""",
        room,
    )
    return {r["user_id"]: int(r["n"]) for r in rows}


async def conn_rows(conn: Conn, conns: Iterable[str]) -> dict[str, tuple[str, str, bool]]:
    """conn → (user, node, live)."""
    conns = list(conns)
    if not conns:
        return {}
    rows = await conn.fetch(
        "SELECT conn, user_id, node, closed_at IS NULL AS live FROM connections WHERE conn = ANY($1)",
        conns,
    )
    return {r["conn"]: (r["user_id"], r["node"], r["live"]) for r in rows}


async def live_conns(conn: Conn) -> list[tuple[str, str, str]]:
    """Every live (conn, user, node)."""
    rows = await conn.fetch(
        "SELECT conn, user_id, node FROM connections WHERE closed_at IS NULL ORDER BY conn"
    )
    return [(r["conn"], r["user_id"], r["node"]) for r in rows]


async def all_member_users(conn: Conn) -> list[str]:
    return [
        r["user_id"]
        for r in await conn.fetch("SELECT DISTINCT user_id FROM memberships ORDER BY user_id")
    ]


async def truncate(conn: Conn) -> None:
    """Empty every projection table (rebuild)."""
    await conn.execute("TRUNCATE memberships, rooms, connections, node_failures, node_incarnations")


async def snapshot(conn: Conn) -> dict[str, Any]:
    """The whole durable projection as plain data (rebuild and crash tests compare these)."""
    rooms = [dict(r) for r in await conn.fetch("SELECT * FROM rooms ORDER BY id")]
    mems = [
        (r["room"], r["user_id"], r["since_seq"])
        for r in await conn.fetch("SELECT * FROM memberships ORDER BY room, user_id")
    ]
    conns = [
        (r["conn"], r["user_id"], r["node"], r["live"])
        for r in await conn.fetch(
            "SELECT conn, user_id, node, closed_at IS NULL AS live FROM connections ORDER BY conn"
        )
    ]
    return {"rooms": rooms, "memberships": mems, "connections": conns}
