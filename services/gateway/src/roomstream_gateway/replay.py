"""Fetching the events a socket missed: recent ones from Redis, older ones from history.

`fetch` answers one range (after, until]; the merge with live delivery, and asking for a range
again when something is missing, is the delivery core's (`delivery.Core.finish_join`).
"""

from __future__ import annotations

from typing import Any

import orjson
from roomstream_contracts.codec import entry_envelope
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import is_user_stream
from roomstream_kit.redis import AnyRedis

from .upstream import Upstream

HISTORY_PAGE = 200


async def recent_between(
    redis: AnyRedis, keys: StreamKeys, room: str, after: int, until: int
) -> list[dict[str, Any]]:
    """The room's recent buffer from seq after+1 to until (entry ids are `SEQ-0`). Bounded at
    `until`: events past it are not part of this range (the socket gets them live)."""
    items: Any = await redis.xrange(keys.recent(room), f"{after + 1}-0", f"{until}-0")
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


async def fetch(
    redis: AnyRedis, keys: StreamKeys, upstream: Upstream, room: str, after: int, until: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Events in (after, until], ascending, and the first seq that still exists when the ones
    right after `after` exist nowhere any more (None when they do). A user's own stream is
    read from Redis only: history keeps it but serves no `~USER` (not a room id; it answers
    400), so asking would fail every retry and stall the stream's feed."""
    recent = await recent_between(redis, keys, room, after, until)
    first_recent = int(recent[0]["seq"]) if recent else until + 1
    older: list[dict[str, Any]] = []
    if first_recent > after + 1 and not is_user_stream(room):
        older = await history_after(upstream, room, after, first_recent - 1)
    events = older + recent
    first = int(events[0]["seq"]) if events else until + 1
    return events, (first if first > after + 1 else None)
