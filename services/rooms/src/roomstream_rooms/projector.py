"""Applies batches of log entries to Postgres and the Redis read models, idempotently.

One batch = one Postgres transaction under the projection lock (an advisory lock, so several
rooms instances never interleave their writes), in which:
1. each room's sequenced events are planned against its last applied seq (`projection.plan_room`);
   a gap is filled from the room's recent buffer in Redis, or the batch fails and the consumer
   retries it later (the missing events are pending with another consumer);
2. room and connection changes are written;
3. the read models touched by the batch are rewritten from the new Postgres state (also for
   events skipped as already applied, which repairs a crash between commit and Redis write);
4. `online` / `offline` events are appended to the log (not in rebuild mode), `offline`s through
   the presence grace (`presence_grace`: planned here, its held state committed after step 5);
5. commit. A crash anywhere before the commit rolls everything back and the consumer delivers the
   batch again (presence events may then be appended twice: at least once).

Held `offline`s are appended when their grace is over by `run_grace`, the service's supervised
"presence-grace" task (cancelled at stop before the pool closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError
from roomstream_contracts.codec import decode_envelope
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import make_storable, now_ms
from roomstream_contracts.streams import FIELD_EVENT
from roomstream_contracts.userstream import is_user_stream
from roomstream_kit.consumer import LogEntry
from roomstream_kit.eventlog import EventLog
from roomstream_kit.failures import Retry, describe, is_transient
from roomstream_kit.redis import AnyRedis, text
from roomstream_kit.retry import Backoff
from roomstream_kit.telemetry import extract_context, inject_context, tracer

from . import store
from .applied import AppliedSeqs
from .metrics import RoomsMetrics
from .presence_grace import GraceStep, PresenceGrace, by_user
from .projection import (
    CONNECTION_KINDS,
    ROOM_KINDS,
    CloseConn,
    ConnChange,
    FailNode,
    OpenConn,
    PresenceInput,
    PresenceNotice,
    RoomChange,
    conn_change,
    members_touched,
    notice_envelope,
    plan_room,
    presence_notices,
    retire_mark,
    room_change,
)
from .readmodels import ReadModels

log = logging.getLogger(__name__)

PRESENCE_APPEND_CHUNK = 50
"""Presence appends in flight at once (bounded: the Redis pool has a limited size)."""
GRACE_RETRY_S = (0.5, 5.0)
"""First and longest delay before the held `offline`s are tried again after a failed append."""
_tracer = tracer("roomstream.rooms")


class GapPending(Retry):
    """A room's next events are neither in this batch nor in its recent buffer yet (a `Retry`:
    transient, the consumer waits for them and never dead-letters because of it)."""


@dataclass(slots=True)
class _Batch:
    """What one batch touched (filled while applying, used for read models and presence)."""

    new_last: dict[str, int] = field(default_factory=dict)
    rooms: set[str] = field(default_factory=set)
    pairs: set[tuple[str, str]] = field(default_factory=set)
    presence_users: set[str] = field(default_factory=set)
    conns: dict[str, tuple[str, str]] = field(default_factory=dict)
    members_before: set[tuple[str, str]] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    grace: GraceStep | None = None
    """The presence grace's decision, committed once the batch's transaction is."""


def _safe_room_change(env: Envelope) -> RoomChange | None:
    try:
        return room_change(env)
    except (ValidationError, ValueError) as exc:
        # A malformed event can never be applied; it still takes its seq (never stall the room).
        log.error("ignoring malformed %s event %s of room %s: %s", env.kind, env.id, env.room, exc)
        return None


class Projector:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: AnyRedis,
        read_models: ReadModels,
        metrics: RoomsMetrics,
        *,
        eventlog: EventLog | None,
        applied: AppliedSeqs | None = None,
        presence_grace_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.rm = read_models
        self.keys = read_models.keys
        self.metrics = metrics
        self.eventlog = eventlog
        """Where presence events go; None in rebuild mode (replaying must not append)."""
        self.applied = applied
        self.lock = asyncio.Lock()
        """Serializes every read-model writer of this process (batches and API refills)."""
        self.grace = PresenceGrace(presence_grace_s)
        """`offline` notices held for the grace period (`presence_grace`)."""
        self._grace_wake = asyncio.Event()
        """Set when a batch holds an `offline` (`run_grace` then has a deadline to wait for)."""
        self.skipped: dict[str, set[int]] = {}
        """Dead-lettered seqs by room known to this process (`load_skipped`, the hook); others'
        are read from Postgres when a gap needs them."""

    async def load_skipped(self) -> None:
        """Load every skipped seq (start-up, rebuild): an event of the log that was dead-lettered
        is never applied, even when it is delivered again."""
        async with self.pool.acquire() as conn:
            self.skipped = await store.all_skipped_seqs(conn)

    # -- the consumer's handler ----------------------------------------------------------------

    async def apply_batch(self, entries: Sequence[LogEntry]) -> None:
        await self.apply_envelopes([e.envelope for e in entries])

    async def apply_envelopes(self, envs: Iterable[Envelope]) -> None:
        by_room: dict[str, list[Envelope]] = {}
        conn_envs: list[Envelope] = []
        n = 0
        for env in envs:
            n += 1
            if env.sequenced and env.room and env.seq is not None:
                if not is_user_stream(env.room):  # a user's stream is no room (userstream)
                    by_room.setdefault(env.room, []).append(env)
            elif env.kind in CONNECTION_KINDS:
                conn_envs.append(env)
        self.metrics.batch_size.record(n)
        if not by_room and not conn_envs:
            return
        async with self.lock:
            with self.metrics.timed_postgres():
                async with self.pool.acquire() as conn, conn.transaction():
                    await store.lock_projection(conn)
                    batch = await self._apply(conn, by_room, conn_envs)
            if batch.grace is not None:  # committed: the held state follows (never before)
                self.grace.commit(batch.grace)
                if batch.grace.holds:
                    self._grace_wake.set()
        for kind, count in batch.kinds.items():
            self.metrics.events_applied.add(count, {"kind": kind})
        if batch.skipped:
            self.metrics.events_skipped.add(batch.skipped)
        if self.applied is not None and batch.new_last:
            self.applied.advance(batch.new_last)

    async def _apply(
        self, conn: store.Conn, by_room: dict[str, list[Envelope]], conn_envs: list[Envelope]
    ) -> _Batch:
        b = _Batch()
        # Every membership the batch mentions, also in skipped events (their read models are
        # rewritten too: that repairs a crash between an earlier commit and its Redis writes).
        for room, events in by_room.items():
            dead = self.skipped.get(room, ())
            for env in events:
                if env.kind in ROOM_KINDS and env.seq not in dead:  # dead-lettered: never
                    change = _safe_room_change(env)
                    if change is not None:
                        b.rooms.add(change.room)
                        b.pairs.update(members_touched(change))
        last = await store.last_seqs(conn, by_room)
        for room in sorted(by_room):
            await self._apply_room(conn, room, last.get(room, 0), by_room[room], b)

        # Connections: live counts of the users concerned before and after.
        changes: list[tuple[Envelope, ConnChange]] = []
        for env in conn_envs:
            cc = conn_change(env)
            if cc is None:
                log.warning("ignoring malformed %s event %s", env.kind, env.id)
                continue
            changes.append((env, cc))
            if isinstance(cc, OpenConn | CloseConn):
                b.presence_users.add(cc.user)
        # Nodes whose connections this batch may close wholesale: declared failed without an
        # incarnation, or whose retired mark rises (a newer incarnation seen, or one failed).
        # Their users' counts before the batch are needed for the `offline` notices.
        marks = await store.retired_marks(conn, {c.node for _, c in changes})
        failed = {c.node for _, c in changes if isinstance(c, FailNode) and c.incarnation is None}
        for _, c in changes:
            mark = retire_mark(c)
            if mark is not None and mark[1] > marks.get(mark[0], -1):
                failed.add(mark[0])
        if failed:
            b.presence_users |= await store.live_users_of_nodes(conn, sorted(failed))
        pair_users = {u for _, u in b.pairs}
        users = b.presence_users | pair_users
        before = await store.live_counts(conn, users)
        for env, cc in changes:
            with _tracer.start_as_current_span(
                "rooms.apply",
                context=extract_context(env.trace),
                attributes={"kind": env.kind.value, "user": env.user or "", "node": env.node or ""},
            ):
                for cid, user, node in await store.apply_conn_change(conn, cc, marks):
                    b.conns[cid] = (user, node)
                    b.presence_users.add(user)
                    users.add(user)
            b.kinds[env.kind.value] += 1
        after = await store.live_counts(conn, users)
        members_after = await store.memberships_of(conn, b.pairs)
        rooms_of = await store.rooms_of_users(conn, users)

        await self._write_read_models(conn, b, after, members_after, rooms_of, pair_users)

        if self.eventlog is not None:
            notices = presence_notices(
                PresenceInput(
                    before=before,
                    after=after,
                    rooms_after={u: rooms_of[u] for u in b.presence_users},
                    joined=sorted(members_after - b.members_before),
                )
            )
            # Planned only: the held state changes once the transaction commits (a batch that
            # fails here is delivered again and must meet the same held `offline`s).
            step = self.grace.plan(notices, asyncio.get_running_loop().time())
            _, failure = await self._append_notices(step.append)
            if failure is not None:
                raise failure
            b.grace = step
        return b

    async def _append_notices(
        self, notices: list[PresenceNotice]
    ) -> tuple[list[PresenceNotice], BaseException | None]:
        """Append presence events, many in flight at once (one round trip per chunk instead of
        one per notice: a reconnect storm makes thousands of them). Returns the notices *not*
        appended and the first failure (None: all appended); no chunk is sent after a failed
        one."""
        assert self.eventlog is not None
        trace = inject_context()
        for i in range(0, len(notices), PRESENCE_APPEND_CHUNK):
            chunk = notices[i : i + PRESENCE_APPEND_CHUNK]
            results = await asyncio.gather(
                *(self.eventlog.append(notice_envelope(n, trace)) for n in chunk),
                return_exceptions=True,
            )
            failed: list[PresenceNotice] = []
            first: BaseException | None = None
            for n, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append(n)
                    first = first or result
                else:
                    self.metrics.presence_events.add(1, {"kind": n.kind.value})
            if first is not None:
                return failed + notices[i + PRESENCE_APPEND_CHUNK :], first
        return [], None

    async def run_grace(self) -> None:
        """The "presence-grace" task (`life.spawn`): append the held `offline`s once their grace
        is over. Sleeps until the earliest deadline, or until a batch holds one; a dependency
        away is retried with backoff (the notices stay held: an `online` meanwhile still cancels
        them), any other failure ends the task for its supervisor to count and restart."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(*GRACE_RETRY_S)
        while True:
            self._grace_wake.clear()
            deadline = self.grace.next_deadline()
            if deadline is None or deadline > loop.time():
                timeout = None if deadline is None else deadline - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._grace_wake.wait(), timeout)
                continue
            try:
                await self.flush_presence()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next_delay()
                log.warning(
                    "appending the held offline events failed (%s); retrying in %.1fs",
                    describe(exc, 300),
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def flush_presence(self) -> None:
        """Append the `offline`s whose grace is over, for users still without a connection
        (another rooms instance may have seen them come back). On a failure the notices not
        appended are held again, due at once, and the failure is raised; those appended are
        not held again (never appended twice)."""
        async with self.lock:
            now = asyncio.get_running_loop().time()
            due = self.grace.due(now)
            if not due:
                return
            left = due
            try:
                async with self.pool.acquire() as conn:
                    live = await store.live_counts(conn, set(due))
                notices = [
                    PresenceNotice(EventKind.OFFLINE, room, user, 0)
                    for user, rooms in sorted(due.items())
                    if live.get(user, 0) == 0
                    for room in rooms
                ]
                unsent, failure = await self._append_notices(notices)
                left = by_user(unsent)
                if failure is not None:
                    raise failure
            finally:
                self.grace.hold(left, now)

    async def _apply_room(
        self, conn: store.Conn, room: str, last: int, events: list[Envelope], b: _Batch
    ) -> None:
        skipped: set[int] = set(self.skipped.get(room, ()))
        plan = plan_room(last, events, skipped)
        while plan.gap is not None:
            skipped |= await store.skipped_seqs(conn, room, *plan.gap)
            filled = await self._fill_gap(room, *plan.gap, skipped)
            events = events + filled
            plan = plan_room(last, events, skipped)
        b.skipped += sum(1 for e in events if e.seq is not None and e.seq <= last)
        # Which of the memberships these events touch exist before them (for `online` notices).
        pairs = {
            p
            for env in plan.apply
            if env.kind in ROOM_KINDS and (change := _safe_room_change(env)) is not None
            for p in members_touched(change)
        }
        b.members_before |= await store.memberships_of(conn, pairs)
        for env in plan.apply:
            with _tracer.start_as_current_span(
                "rooms.apply",
                context=extract_context(env.trace),
                attributes={"room": room, "seq": env.seq or 0, "kind": env.kind.value},
            ):
                if env.kind in ROOM_KINDS:
                    change = _safe_room_change(env)
                    if change is not None:
                        await store.apply_room_change(conn, change)
                        b.rooms.add(change.room)
                        b.pairs.update(members_touched(change))
            b.kinds[env.kind.value] += 1
        if plan.last_seq is not None:
            await store.set_last_seq(conn, room, plan.last_seq)
            b.new_last[room] = plan.last_seq

    async def _fill_gap(
        self, room: str, first: int, last: int, skipped: set[int]
    ) -> list[Envelope]:
        """Events `first..last` of `room` from its recent buffer, or `GapPending`.

        Seqs in `skipped` (dead-lettered) are not taken; an entry of the buffer that cannot be
        decoded (its log entry was dead-lettered undecoded) is added to `skipped`."""
        with self.metrics.timed_redis():
            raw: Any = await self.redis.xrange(self.keys.recent(room), f"{first}-0", f"{last}-0")
        found: list[Envelope] = []
        for entry_id, fields in raw:
            seq = int(str(text(entry_id))[:-2])
            if seq in skipped:
                continue
            try:
                found.append(decode_envelope(fields[FIELD_EVENT]))
            except (KeyError, ValueError) as exc:
                log.error("room %s: recent seq %d cannot be decoded, skipped: %s", room, seq, exc)
                skipped.add(seq)
        covered = len(found) + sum(1 for s in skipped if first <= s <= last)
        if covered != last - first + 1:
            raise GapPending(f"room {room}: seq {first}..{last} not available yet")
        log.info("filled gap %d..%d of room %s from its recent buffer", first, last, room)
        return found

    async def _write_read_models(
        self,
        conn: store.Conn,
        b: _Batch,
        after: dict[str, int],
        members_after: set[tuple[str, str]],
        rooms_of: dict[str, list[str]],
        pair_users: set[str],
    ) -> None:
        """Rewrite, from Postgres, every read-model entry the batch touched."""
        presence_rooms = {r for u in b.presence_users for r in rooms_of[u]}
        all_rooms = b.rooms | {r for r, _ in b.pairs} | presence_rooms
        with self.metrics.timed_redis():
            missing = await self.rm.missing_rooms(all_rooms)
        for room in sorted(missing):
            await self._refill_room(conn, room)
        rows = await store.get_rooms(conn, b.rooms - missing)
        conns = await store.conn_rows(conn, b.conns)
        with self.metrics.timed_redis():
            await self.rm.replace_user_rooms({u: rooms_of[u] for u in pair_users})
            async with self.redis.pipeline(transaction=False) as pipe:
                for row in rows.values():
                    self.rm.put_room(pipe, row)
                for room, user in sorted(b.pairs):
                    member = (room, user) in members_after
                    self.rm.set_membership(pipe, room, user, member)
                    if member:
                        self.rm.set_presence(pipe, room, user, after.get(user, 0))
                for user in sorted(b.presence_users):
                    for room in rooms_of[user]:
                        self.rm.set_presence(pipe, room, user, after.get(user, 0))
                for cid, (user, node, live) in conns.items():
                    self.rm.set_conn(pipe, cid, user, node, live)
                await pipe.execute()

    async def skip_dead_letter(self, entry: LogEntry, exc: BaseException) -> None:
        """The consumer's dead-letter hook: a sequenced event that can never be applied has its
        seq recorded as skipped (and counted as applied when it is the room's next one), so the
        room's later events do not wait on it."""
        env = entry.envelope
        if not (env.sequenced and env.room and env.seq is not None) or is_user_stream(env.room):
            return
        room, seq = env.room, env.seq
        async with self.lock, self.pool.acquire() as conn, conn.transaction():
            await store.lock_projection(conn)
            await store.add_skipped_seq(
                conn, room, seq, make_storable(env.id), make_storable(describe(exc)), now_ms()
            )
            last = (await store.last_seqs(conn, [room])).get(room)
            advanced = last is not None and last == seq - 1
            if advanced:
                await store.set_last_seq(conn, room, seq)
        self.skipped.setdefault(room, set()).add(seq)
        log.warning("room %s: seq %d is skipped (dead-lettered)", room, seq)
        if advanced and self.applied is not None:
            self.applied.advance({room: seq})

    # -- refills (start-up, API fallback) --------------------------------------------------------

    async def _refill_room(self, conn: store.Conn, room: str) -> store.RoomRow | None:
        row = await store.get_room(conn, room)
        if row is None:
            return None
        members = await store.members(conn, room)
        presence = await store.room_presence(conn, room)
        with self.metrics.timed_redis():
            await self.rm.replace_room(row, members, presence)
        return row

    async def refill_room(self, room: str) -> store.RoomRow | None:
        """Refill one room's read models from Postgres (the API found its room hash missing)."""
        async with self.lock, self.pool.acquire() as conn, conn.transaction():
            await store.lock_projection(conn)
            return await self._refill_room(conn, room)

    async def refill_user_rooms(self, user: str) -> list[str]:
        """Refill `user_rooms(user)` from Postgres; returns the user's rooms."""
        async with self.lock, self.pool.acquire() as conn, conn.transaction():
            await store.lock_projection(conn)
            rooms = (await store.rooms_of_users(conn, [user]))[user]
            with self.metrics.timed_redis():
                await self.rm.replace_user_rooms({user: rooms})
            return rooms

    async def resync(self) -> dict[str, int]:
        """Refill every read model that is missing (start-up after a Redis flush or loss)."""
        refilled = 0
        async with self.lock, self.pool.acquire() as conn, conn.transaction():
            await store.lock_projection(conn)
            rooms = await store.all_room_ids(conn)
            for i in range(0, len(rooms), 1000):
                for room in sorted(await self.rm.missing_rooms(rooms[i : i + 1000])):
                    await self._refill_room(conn, room)
                    refilled += 1
            users = await store.all_member_users(conn)
            for i in range(0, len(users), 1000):
                chunk = users[i : i + 1000]
                await self.rm.replace_user_rooms(await store.rooms_of_users(conn, chunk))
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid, user, node in await store.live_conns(conn):
                    self.rm.set_conn(pipe, cid, user, node, True)
                await pipe.execute()
        if refilled:
            log.info("refilled the read models of %d rooms from Postgres", refilled)
        return {"rooms": len(rooms), "refilled_rooms": refilled, "users": len(users)}
