"""The dead-letter streams (`StreamKeys.dead_letters`): the record a consumer writes for an entry
it could never handle, and reading / replaying those records (the `roomstream dead-letters`
command; docs/operations.md, "Dead letters").

Replay re-appends the original fields, byte for byte, to the original shard stream (a new entry
id): every consumer group receives the entry again, and idempotent handlers skip what they had
already applied. Nothing else about the system changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from roomstream_contracts.streams import (
    DEAD_FIELD_CONSUMER,
    DEAD_FIELD_ENTRY,
    DEAD_FIELD_ERROR,
    DEAD_FIELD_GROUP,
    DEAD_FIELD_PREFIX,
    DEAD_FIELD_STREAM,
    DEAD_FIELD_TS,
    StreamKeys,
)

from .redis import AnyRedis
from .redis import text as redis_text


def dead_letter_record(
    stream: str, entry_id: str, group: str, consumer: str, fields: Any, error: str, ts_ms: int
) -> dict[Any, Any]:
    """The fields of a dead-letter entry (`roomstream_contracts.streams.DEAD_FIELD_*`); the
    original fields are kept byte for byte under `f:NAME`, so the entry can be replayed."""
    record: dict[Any, Any] = {
        DEAD_FIELD_STREAM: stream,
        DEAD_FIELD_ENTRY: entry_id,
        DEAD_FIELD_GROUP: group,
        DEAD_FIELD_CONSUMER: consumer,
        DEAD_FIELD_ERROR: error,
        DEAD_FIELD_TS: ts_ms,
    }
    if isinstance(fields, Mapping):
        for name, value in fields.items():
            key = name if isinstance(name, bytes) else str(name).encode()
            record[DEAD_FIELD_PREFIX + key] = (
                value if isinstance(value, bytes | str) else str(value)
            )
    return record


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: str
    """The dead-letter stream holding it."""
    id: str
    """Its id in that stream."""
    stream: str
    entry: str
    group: str
    consumer: str
    error: str
    ts: int
    fields: dict[bytes, bytes]
    """The original entry's fields."""

    def view(self) -> dict[str, Any]:
        """JSON-friendly form (original fields decoded as UTF-8 with replacement)."""
        return {
            "key": self.key,
            "id": self.id,
            "stream": self.stream,
            "entry": self.entry,
            "group": self.group,
            "consumer": self.consumer,
            "error": self.error,
            "ts": self.ts,
            "fields": {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in self.fields.items()
            },
        }


def parse(key: str, dead_id: bytes | str, raw: Mapping[bytes, bytes]) -> DeadLetter:
    def get(name: bytes) -> str:
        value = raw.get(name)
        return "" if value is None else value.decode(errors="replace")

    fields = {
        k[len(DEAD_FIELD_PREFIX) :]: v for k, v in raw.items() if k.startswith(DEAD_FIELD_PREFIX)
    }
    ts = get(DEAD_FIELD_TS)
    return DeadLetter(
        key,
        redis_text(dead_id),
        get(DEAD_FIELD_STREAM),
        get(DEAD_FIELD_ENTRY),
        get(DEAD_FIELD_GROUP),
        get(DEAD_FIELD_CONSUMER),
        get(DEAD_FIELD_ERROR),
        int(ts) if ts.isdigit() else 0,
        fields,
    )


async def read_all(redis: AnyRedis, keys: StreamKeys, group: str | None = None) -> list[DeadLetter]:
    """Every dead letter of every shard (oldest first per shard), optionally of one group."""
    out: list[DeadLetter] = []
    for shard in range(keys.shards):
        key = keys.dead_letters(shard)
        raw: Any = await redis.xrange(key)
        for dead_id, fields in raw:
            letter = parse(key, dead_id, fields)
            if group is None or letter.group == group:
                out.append(letter)
    return out


async def replay(redis: AnyRedis, letter: DeadLetter, *, delete: bool = True) -> str:
    """Append the original entry again to its stream; returns the new entry id. With `delete`
    the dead letter is removed (the per-group counts are not: they count what happened)."""
    if not letter.fields:
        raise ValueError(f"dead letter {letter.id} has no original fields")
    new_id = redis_text(await redis.xadd(letter.stream, dict(letter.fields)))  # type: ignore[arg-type]
    if delete:
        await redis.xdel(letter.key, letter.id)
    return new_id
