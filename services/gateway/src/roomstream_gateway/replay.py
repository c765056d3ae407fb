"""Catching a socket up on a room: recent events from Redis, older ones from the history service.

`missed_events` answers what the client lacks after `since`; the seam with live delivery is
handled by the caller (the room is *held* in the session while this runs, see `commands.join`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson
from roomstream_contracts.codec import entry_envelope
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis

from .upstream import Upstream

HISTORY_PAGE = 200


@dataclass(frozen=True, slots=True)
class Missed:
    events: list[dict[str, Any]]
    """Envelope / event-body dicts with seq > since, ascending."""
    recovered: bool
    first_available: int | None = None


async def recent_after(redis: AnyRedis, keys: StreamKeys, room: str, since: int) -> list[Any]:
    """The room's recent buffer from seq since+1 on (entry ids are `SEQ-0`)."""
    items: Any = await redis.xrange(keys.recent(room), f"{since + 1}-0", "+")
    return [orjson.loads(entry_envelope(fields)) for _, fields in items]


async def history_after(
    upstream: Upstream, room: str, since: int, until: int
) -> list[dict[str, Any]]:
    """Events since+1 .. until from the history service, paging forward."""
    events: list[dict[str, Any]] = []
    after = since
    while after < until:
        page, more = await upstream.messages(room, after=after, limit=HISTORY_PAGE)
        page = [e for e in page if isinstance(e.get("seq"), int) and e["seq"] > after]
        if not page:
            break
        events.extend(e for e in page if e["seq"] <= until)
        after = page[-1]["seq"]
        if not more:
            break
    return events


def assess(events: list[dict[str, Any]], since: int, current: int) -> Missed:
    """Pure: whether `events` (ascending) cover since+1 .. current without a hole at the start."""
    if not events:
        if current <= since:
            return Missed([], True)
        return Missed([], False, current + 1)
    first = int(events[0]["seq"])
    if first == since + 1:
        return Missed(events, True)
    return Missed(events, False, first)


async def missed_events(
    redis: AnyRedis, keys: StreamKeys, upstream: Upstream, room: str, since: int, current: int
) -> Missed:
    recent = await recent_after(redis, keys, room, since)
    first_recent = int(recent[0]["seq"]) if recent else current + 1
    older: list[dict[str, Any]] = []
    if first_recent > since + 1 and current > since:
        older = await history_after(upstream, room, since, min(first_recent - 1, current))
    events = older + recent
    if has_hole(events):
        # Events exist that neither Redis nor history serves right now (history still catching
        # up with a trimmed recent buffer): retry later rather than skip them.
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"history of {room!r} is catching up; retry")
    return assess(events, since, current)


def has_hole(events: list[dict[str, Any]]) -> bool:
    """Pure: whether the seqs of `events` (ascending) skip a number after the first one."""
    return any(int(b["seq"]) != int(a["seq"]) + 1 for a, b in itertools.pairwise(events))
