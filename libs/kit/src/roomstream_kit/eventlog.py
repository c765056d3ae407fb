"""Appending to the log: the one path every producer uses (gateway, rooms, monitor).

Wraps the atomic append script of `roomstream_contracts.streams`: room checks, owner checks,
idempotency and the room's gapless seq happen in one Redis step with the append itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from roomstream_contracts.codec import envelope_tail
from roomstream_contracts.events import Envelope
from roomstream_contracts.streams import (
    APPEND_SCRIPT,
    DEFAULT_DEDUPE_TTL_S,
    DEFAULT_RECENT_PER_ROOM,
    StreamKeys,
)

from .redis import AnyRedis
from .redis import text as redis_text
from .settings import CommonSettings


class RoomCheck(StrEnum):
    NONE = ""
    EXISTS = "exists"
    """Fail with `no_room` unless the room has a seq (it was created)."""
    NEW = "new"
    """Fail with `room_exists` if the room was created before (room creation)."""


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


@dataclass(frozen=True, slots=True)
class AppendResult:
    status: AppendStatus
    seq: int | None = None
    event_id: str | None = None
    stream_id: str | None = None

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
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.recent_per_room = recent_per_room
        self.dedupe_ttl_s = dedupe_ttl_s
        self._script: ScriptRunner = script or redis.register_script(APPEND_SCRIPT)

    @classmethod
    def from_settings(
        cls, redis: AnyRedis, settings: CommonSettings, script: ScriptRunner | None = None
    ) -> EventLog:
        return cls(
            redis,
            settings.keys,
            recent_per_room=settings.recent_per_room,
            dedupe_ttl_s=settings.dedupe_ttl_s,
            script=script,
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
    ) -> AppendResult:
        """Append `envelope` (its `seq` is ignored: sequenced kinds get the room's next one).

        `dedupe_id` makes the append idempotent per (room, user, dedupe_id): a repeat returns the
        first append's seq and event id with status `duplicate` and appends nothing.
        """
        keys, args = self._script_call(envelope, room_check, dedupe_id, owner_check)
        reply: list[Any] = await self._script(keys=keys, args=args)
        return _parse_reply(reply)

    def _script_call(
        self,
        envelope: Envelope,
        room_check: RoomCheck,
        dedupe_id: str | None,
        owner_check: OwnerCheck | None,
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
        keys = [k.log(shard), k.seq(shard), recent, dedupe]
        args: list[str | bytes | int] = [
            room,
            envelope.kind.value,
            envelope_tail(envelope),
            "seq" if envelope.sequenced else "live",
            room_check.value,
            str(self.dedupe_ttl_s) if dedupe_id and room else "",
            self.recent_per_room,
            envelope.id,
            str(owner_check.target_seq) if owner_check else "",
            owner_check.user if owner_check else "",
        ]
        return keys, args


def _parse_reply(reply: list[Any]) -> AppendResult:
    status = AppendStatus(redis_text(reply[0]))
    ack = redis_text(reply[1])
    stream_id = redis_text(reply[2]) or None
    if ack:
        seq, event_id = ack.split(" ", 1)
        return AppendResult(status, int(seq), event_id, stream_id)
    return AppendResult(status, stream_id=stream_id)
