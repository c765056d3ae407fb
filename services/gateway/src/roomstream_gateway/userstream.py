"""The user's own stream at the gateway: resumed at welcome, delivered like a room.

Each socket is subscribed to its user's stream (`~USER`, `roomstream_contracts.userstream`) in
the delivery core exactly like a room of its welcome: held from before the stream's seq is read
until the welcome is written, so each event is written once and in order (`delivery`). A client
that reconnects names the last seq it saw in the `user_since` query parameter of the WebSocket
URL; the events after it follow the welcome (before any live event of the stream), read from the
stream's recent buffer in Redis (`ROOMSTREAM_RECENT_PER_ROOM` events). When older ones are needed
and gone from it, the welcome says so (`recovered: false`, `first_available`).
"""

from __future__ import annotations

from typing import Any

from roomstream_contracts.codec import client_frame_of
from roomstream_contracts.frames import MAX_SEQ
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis

from .auth import split_path
from .delivery import Wire, wire
from .replay import recent_between

SINCE_PARAM = "user_since"


def user_since(path: str) -> int | None:
    """The `user_since` query parameter of the upgrade request (None when absent or not a
    seq: a client that sends garbage starts at the stream's current position). ASCII digits
    only: `str.isdigit` also holds for '²' (which `int` refuses: the welcome failed, 1011) and
    for other scripts' digits, which no client sends for a seq."""
    try:
        values = split_path(path)[1].get(SINCE_PARAM)
    except ValueError:
        return None
    if not values or not (values[0].isascii() and values[0].isdigit()) or len(values[0]) > 19:
        return None
    since = int(values[0])
    return since if since <= MAX_SEQ else None


async def resume(
    redis: AnyRedis, keys: StreamKeys, stream: str, since: int | None, current: int
) -> tuple[dict[str, Any], list[Wire]]:
    """The welcome's `user_stream` entry and the frames of the events in (since, current].

    Called while the stream's live frames are held (before `finish_welcome`), so that the
    missed events precede every live one."""
    position: dict[str, Any] = {"seq": current}
    if since is None:
        return position, []
    if since >= current:
        position.update(recovered=True, missed=0)
        return position, []
    events = await recent_between(redis, keys, stream, since, current)
    frames: list[Wire] = []
    expected = since + 1
    first: int | None = None
    for event in events:
        seq = event.get("seq")
        if not isinstance(seq, int) or seq < expected:
            continue
        if first is None:
            first = seq
        elif seq != expected:  # a hole inside the buffer cannot happen; stop rather than skip
            break
        payload = client_frame_of(event)
        if payload is not None:
            frames.append(wire(payload))
        expected = seq + 1
    recovered = first == since + 1
    position.update(recovered=recovered, missed=len(frames))
    if not recovered:
        position["first_available"] = first if first is not None else current + 1
    return position, frames
