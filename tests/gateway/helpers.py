"""Helpers for the gateway tests: rooms written straight into the log and read models (until the
rooms service is used), raw WebSocket clients, and polling with generous deadlines."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck
from roomstream_kit.rooms import set_membership
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_token
from tests.support import rooms as support_rooms

DEADLINE_S = 30.0


def keys(namespace: str) -> StreamKeys:
    return StreamKeys(namespace=namespace)


async def create_room(
    redis: aioredis.Redis,
    namespace: str,
    room: str,
    owner: str,
    *,
    kind: str = "public",
    members: list[str] | None = None,
) -> None:
    """A room written straight into the log and read models (`tests.support.rooms`)."""
    await support_rooms.create_room(redis, keys(namespace), room, owner, kind=kind, members=members)


async def append_member_event(
    redis: aioredis.Redis, namespace: str, room: str, user: str, kind: EventKind
) -> int:
    """Append member_joined / member_left as the rooms API would (and update the read model)."""
    k = keys(namespace)
    env = Envelope(
        id=new_event_id(), kind=kind, room=room, user=user, ts=now_ms(), data={"by": "admin"}
    )
    async with redis.pipeline(transaction=False) as pipe:
        set_membership(pipe, k, room, user, kind == EventKind.MEMBER_JOINED)
        await pipe.execute()
    result = await EventLog(redis, k).append(env, room_check=RoomCheck.EXISTS)
    assert result.ok and result.seq is not None
    return result.seq


async def open_ws(
    ws_url: str,
    user: str | None = None,
    *,
    token: str | None = None,
    via: str = "header",
    **kwargs: Any,
) -> ClientConnection:
    """Connect a raw socket, authenticating `via` header, query or frame (no welcome read)."""
    token = token if token is not None else make_token(user or "nobody")
    url = ws_url
    headers: dict[str, str] = {}
    if via == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif via == "query":
        url = f"{ws_url}?access_token={token}"
    ws = await connect(url, additional_headers=headers, max_size=None, **kwargs)
    if via == "frame":
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    return ws


async def client(ws_url: str, user: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """An authenticated socket and its welcome frame."""
    ws = await open_ws(ws_url, user, **kwargs)
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


_backlog: dict[ClientConnection, deque[dict[str, Any]]] = {}
"""Frames that `request` skipped while waiting for its reply; `recv` returns them first."""


async def recv(ws: ClientConnection, within_s: float = DEADLINE_S) -> dict[str, Any]:
    pending = _backlog.get(ws)
    if pending:
        return pending.popleft()
    raw = await asyncio.wait_for(ws.recv(), within_s)
    frame: dict[str, Any] = orjson.loads(raw)
    return frame


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a command with a ref and return the reply with that ref (frames received in between
    stay queued for `recv`)."""
    ref = frame.setdefault("ref", new_event_id()[-8:])
    await ws.send(orjson.dumps(frame).decode())
    skipped: deque[dict[str, Any]] = deque()
    try:
        while True:
            raw = await asyncio.wait_for(ws.recv(), DEADLINE_S)
            reply: dict[str, Any] = orjson.loads(raw)
            if reply.get("ref") == ref:
                return reply
            skipped.append(reply)
    finally:
        if skipped:
            _backlog.setdefault(ws, deque()).extend(skipped)


async def send_acked(ws: ClientConnection, room: str, text: str) -> dict[str, Any]:
    """`send` of `text` to `room` (client id = `text`); its `ack` (asserted: not an `error`)."""
    ack = await request(ws, {"type": "send", "room": room, "text": text, "id": text})
    assert ack["type"] == "ack", ack
    return ack


async def recv_until(
    ws: ClientConnection, pred: Callable[[dict[str, Any]], bool], within_s: float = DEADLINE_S
) -> list[dict[str, Any]]:
    """Every frame received until (and including) the first one for which `pred` holds."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while True:
        frame = await recv(ws, max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        if pred(frame):
            return frames


async def events_of(
    ws: ClientConnection, room: str, count: int, kind: str | None = "message"
) -> list[dict[str, Any]]:
    """The next `count` events of `room` (of `kind`) this socket receives."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await recv(ws)
        if (
            frame["type"] == "event"
            and frame["room"] == room
            and (kind is None or frame["kind"] == kind)
        ):
            got.append(frame)
    return got


async def close_code(ws: ClientConnection, within_s: float = DEADLINE_S) -> int | None:
    """Read until the server closes the socket; its close code."""
    try:
        async with asyncio.timeout(within_s):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
    return None


async def poll(
    check: Callable[[], Awaitable[bool]], within_s: float = DEADLINE_S, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(interval)


async def log_events(redis: aioredis.Redis, namespace: str) -> list[dict[str, Any]]:
    """Every envelope of every shard (test deployments are small)."""
    out: list[dict[str, Any]] = []
    for key in keys(namespace).all_logs():
        for _, fields in await redis.xrange(key):
            out.append(orjson.loads(fields[b"e"]))
    return out
