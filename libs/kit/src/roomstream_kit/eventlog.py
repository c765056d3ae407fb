"""Appending to the log: the one path every producer uses (gateway, rooms, monitor).

Wraps the atomic append script of `roomstream_contracts.streams`: room checks, owner checks,
membership checks (the roster: the membership authority), idempotency and the room's gapless seq
happen in one Redis step with the append itself. Client message ids are unique per user: before
the append, the id is bound to its room in the user's slot (`StreamKeys.client_id`), so the same
id sent to another room returns the original ack (docs/protocol.md, "Client message ids").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from roomstream_contracts.codec import envelope_tail
from roomstream_contracts.events import Envelope, EventKind, RoomCreatedData
from roomstream_contracts.streams import (
    APPEND_SCRIPT,
    DEFAULT_DEDUPE_TTL_S,
    DEFAULT_RECENT_PER_ROOM,
    SEED_ROSTER_SCRIPT,
    StreamKeys,
)

from .redis import AnyRedis, BatchRunner, redis_batch
from .redis import text as redis_text
from .settings import CommonSettings


class RoomCheck(StrEnum):
    NONE = ""
    EXISTS = "exists"
    """Fail with `no_room` unless the room has a seq (it was created)."""
    NEW = "new"
    """Fail with `room_exists` if the room was created before (room creation)."""


class Access(StrEnum):
    """Which membership check the append script makes against the room's roster."""

    NONE = ""
    """No check (membership events still change the roster)."""
    MEMBER = "member"
    """The event's user must be a member (`forbidden`): send, edit, delete, typing."""
    JOIN = "join"
    """`member_joined` of a user who joins by itself: nothing appended if already a member
    (`member`), refused for a private room (`forbidden`)."""
    GRANT = "grant"
    """`member_joined` authorized by the caller (rooms API): nothing appended if already a member."""
    LEAVE = "leave"
    """`member_left`: nothing appended if not a member (`not_member`)."""


class AppendStatus(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"
    """The client message id was seen before; `seq` / `event_id` are the original ones."""
    NO_ROOM = "no_room"
    ROOM_EXISTS = "room_exists"
    UNKNOWN_TARGET = "unknown_target"
    """Owner check: the target seq is no longer in Redis; check it against history instead."""
    NOT_MESSAGE = "not_message"
    NOT_OWNER = "not_owner"
    DELETED = "deleted"
    """Edit / delete of a message that was deleted: nothing appended."""
    FORBIDDEN = "forbidden"
    """Access check: not a member (or a `join` of a private room)."""
    MEMBER = "member"
    """`join` / `grant` of a user who is a member already: nothing appended."""
    NOT_MEMBER = "not_member"
    """`leave` of a user who is not a member: nothing appended."""
    UNSEEDED = "unseeded"
    """The room predates the roster: seed it (rooms service) and retry."""
    ID_IN_USE = "id_in_use"
    """The client message id is bound to another room whose append has not succeeded (yet)."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    status: AppendStatus
    seq: int | None = None
    event_id: str | None = None
    stream_id: str | None = None
    room: str | None = None
    """For `duplicate` (and `id_in_use`): the room of the original send (it may differ from the
    room asked for: client ids are unique per user)."""

    @property
    def ok(self) -> bool:
        return self.status in (AppendStatus.OK, AppendStatus.DUPLICATE)


@dataclass(frozen=True, slots=True)
class OwnerCheck:
    """Require the room's event `target_seq` to be a `message` by `user` (edit / delete)."""

    target_seq: int
    user: str


class ScriptRunner(Protocol):
    """Runs the append script: `await runner(keys=[...], args=[...])` → the script's reply.

    redis-py's registered script is one; the gateway passes its own pipelined runner."""

    async def __call__(self, keys: list[str], args: list[str | bytes | int]) -> Any: ...


class CommandRunner(Protocol):
    """Runs one plain Redis command: `await runner("SET", key, ...)` → its reply."""

    async def __call__(self, *args: Any) -> Any: ...


class EventLog:
    """Producer side of the log for one deployment (`keys`)."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: StreamKeys,
        *,
        recent_per_room: int = DEFAULT_RECENT_PER_ROOM,
        dedupe_ttl_s: int = DEFAULT_DEDUPE_TTL_S,
        script: ScriptRunner | None = None,
        command: CommandRunner | None = None,
        batch: BatchRunner | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.recent_per_room = recent_per_room
        self.dedupe_ttl_s = dedupe_ttl_s
        self._script: ScriptRunner = script or redis.register_script(APPEND_SCRIPT)
        self._command: CommandRunner = command or _redis_command(redis)
        self.batch: BatchRunner = batch or redis_batch(redis)
        """Plain reads in one round trip (the gateway passes its pipelined connection's)."""
        self._seed = redis.register_script(SEED_ROSTER_SCRIPT)

    @classmethod
    def from_settings(
        cls,
        redis: AnyRedis,
        settings: CommonSettings,
        script: ScriptRunner | None = None,
        command: CommandRunner | None = None,
        batch: BatchRunner | None = None,
    ) -> EventLog:
        return cls(
            redis,
            settings.keys,
            recent_per_room=settings.recent_per_room,
            dedupe_ttl_s=settings.dedupe_ttl_s,
            script=script,
            command=command,
            batch=batch,
        )

    def shard_of(self, envelope: Envelope) -> int:
        if envelope.room:
            return self.keys.room_shard(envelope.room)
        if envelope.user:
            return self.keys.user_shard(envelope.user)
        return self.keys.node_shard(envelope.node or "")

    async def append(
        self,
        envelope: Envelope,
        *,
        room_check: RoomCheck = RoomCheck.NONE,
        dedupe_id: str | None = None,
        owner_check: OwnerCheck | None = None,
        access: Access = Access.NONE,
    ) -> AppendResult:
        """Append `envelope` (its `seq` is ignored: sequenced kinds get the room's next one).

        `dedupe_id` makes the append idempotent per (user, dedupe_id): a repeat — to the same room
        or another one — returns the first append's room, seq and event id with status
        `duplicate` and appends nothing. `access` checks the event's user against the room's
        roster in the same step (`Access`).
        """
        room, user = envelope.room or "", envelope.user or ""
        bound_here = False
        if dedupe_id and room:
            # Bind the id to this room in the user's slot first (a cluster runs one script per
            # slot): only the bound room ever appends it, and there at most once (its own key).
            bind = self.keys.client_id(user, dedupe_id)
            prior = _text(
                await self._command("SET", bind, room, "NX", "GET", "EX", self.dedupe_ttl_s)
            )
            bound_here = not prior
            if prior and prior != room:
                original = await self._ack_in(prior, user, dedupe_id)
                return original or AppendResult(AppendStatus.ID_IN_USE, room=prior)
        keys, args = self._script_call(envelope, room_check, dedupe_id, owner_check, access)
        reply: list[Any] = await self._script(keys=keys, args=args)
        result = _parse_reply(reply, room or None)
        if bound_here and not result.ok:
            # Refused, nothing appended: the id is free again (best effort; a failure here only
            # keeps it bound to this room, where a retry still works).
            await self._command("DEL", self.keys.client_id(user, dedupe_id or ""))
        return result

    async def original(self, user: str, client_id: str) -> AppendResult | None:
        """The ack (status `duplicate`) of the append of `user`'s client message id, or None when
        no send with that id was appended (within the dedupe TTL). A read: nothing is bound."""
        room = _text(await self._command("GET", self.keys.client_id(user, client_id)))
        return await self._ack_in(room, user, client_id) if room else None

    async def _ack_in(self, room: str, user: str, client_id: str) -> AppendResult | None:
        """The ack the append script kept for (room, user, client id), or None."""
        ack = _text(await self._command("GET", self.keys.dedupe(room, user, client_id)))
        if not ack:
            return None
        seq, event_id = ack.split(" ", 1)
        return AppendResult(AppendStatus.DUPLICATE, int(seq), event_id, room=room)

    async def access(self, room: str, user: str) -> tuple[bool, str | None, bool]:
        """`room_access` of this deployment."""
        return await room_access(self.batch, self.keys, room, user)

    async def seed_roster(self, room: str, kind: str, applied_seq: int, members: list[str]) -> str:
        """Seed a room's membership authority from a projection snapshot taken at `applied_seq`
        (`SEED_ROSTER_SCRIPT`): 'ok', 'seeded' (it was), 'no_room', or 'stale' (retry later)."""
        k, shard = self.keys, self.keys.room_shard(room)
        keys = [k.seq(shard), k.kinds(shard), k.roster(room), k.recent(room)]
        reply = await self._seed(keys=keys, args=[room, kind, applied_seq, *members])
        return redis_text(reply)

    def _script_call(
        self,
        envelope: Envelope,
        room_check: RoomCheck,
        dedupe_id: str | None,
        owner_check: OwnerCheck | None,
        access: Access = Access.NONE,
    ) -> tuple[list[str], list[str | bytes | int]]:
        k = self.keys
        shard = self.shard_of(envelope)
        room = envelope.room or ""
        # Every key must carry this shard's hash tag; unused ones get a harmless same-slot name.
        recent = k.recent(room) if room else f"{k.namespace}:unused:{{{shard}}}"
        dedupe = (
            k.dedupe(room, envelope.user or "", dedupe_id)
            if dedupe_id and room
            else f"{k.namespace}:unused:{{{shard}}}"
        )
        unused = f"{k.namespace}:unused:{{{shard}}}"
        keys = [
            k.log(shard),
            k.seq(shard),
            recent,
            dedupe,
            k.kinds(shard),
            k.roster(room) if room else unused,
            k.deleted(room) if room else unused,
        ]
        target = ""
        if envelope.kind in (EventKind.MESSAGE_EDITED, EventKind.MESSAGE_DELETED):
            target = str(envelope.data.get("target_seq", ""))
        if owner_check is not None:
            target = str(owner_check.target_seq)
        extra: list[str | bytes | int] = []
        if envelope.kind == EventKind.ROOM_CREATED:
            data = RoomCreatedData.model_validate(envelope.data)
            extra = [data.kind, *dict.fromkeys([data.owner, *data.members])]
        args: list[str | bytes | int] = [
            room,
            envelope.kind.value,
            envelope_tail(envelope),
            "seq" if envelope.sequenced else "live",
            room_check.value,
            str(self.dedupe_ttl_s) if dedupe_id and room else "",
            self.recent_per_room,
            envelope.id,
            target,
            owner_check.user if owner_check else "",
            access.value,
            envelope.user or "",
            *(extra or [""]),
        ]
        return keys, args


async def room_access(
    redis: AnyRedis | BatchRunner, keys: StreamKeys, room: str, user: str
) -> tuple[bool, str | None, bool]:
    """The membership authority's view of `user` in `room` (the roster the append script keeps):
    (room exists, room kind or None while the room is not seeded yet, user is a member). Read
    through a redis-py client or a `BatchRunner` (the gateway's pipelined connection)."""
    shard = keys.room_shard(room)
    batch = redis_batch(redis) if isinstance(redis, Redis | RedisCluster) else redis
    exists, kind, member = await batch(
        [
            ("HEXISTS", keys.seq(shard), room),
            ("HGET", keys.kinds(shard), room),
            ("SISMEMBER", keys.roster(room), user),
        ]
    )
    return bool(exists), (_text(kind) or None), bool(member)


def _text(value: Any) -> str:
    return "" if value is None else redis_text(value)


def _redis_command(redis: AnyRedis) -> CommandRunner:
    """A `CommandRunner` over redis-py (a cluster client routes by the command's key)."""

    async def run(*args: Any) -> Any:
        if args[0] == "SET":  # SET ... GET: the old value, not redis-py's OK → bool
            return await redis.execute_command(*args, get=True)
        return await redis.execute_command(*args)

    return run


def _parse_reply(reply: list[Any], room: str | None) -> AppendResult:
    status = AppendStatus(redis_text(reply[0]))
    ack = redis_text(reply[1])
    stream_id = redis_text(reply[2]) or None
    if ack:
        seq, event_id = ack.split(" ", 1)
        return AppendResult(status, int(seq), event_id, stream_id, room)
    return AppendResult(status, stream_id=stream_id, room=room)
