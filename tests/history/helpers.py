"""Test helpers for the history service: rooms and events appended straight to the log.

Until the rooms service exists, rooms are created the way it will: `room_created` appended with
`RoomCheck.NEW`, plus the Redis read models (room hash, members set, user-rooms sets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from roomstream_contracts.events import EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_kit.eventlog import AppendResult, EventLog, RoomCheck

from tests.support import rooms as support_rooms
from tests.support.events import envelope


async def create_room(
    log: EventLog,
    room: str,
    owner: str,
    *,
    kind: str = "public",
    members: list[str] | None = None,
) -> AppendResult:
    """A room written straight into the log and read models (`tests.support.rooms`)."""
    return await support_rooms.create_room(
        log.redis, log.keys, room, owner, kind=kind, members=members
    )


async def send(log: EventLog, room: str, user: str, text: str, *, ts: int | None = None) -> int:
    env = envelope(EventKind.MESSAGE, room, user, ts=ts, text=text, client_id=new_event_id())
    result = await log.append(env, room_check=RoomCheck.EXISTS)
    assert result.ok and result.seq is not None, result
    return result.seq


async def edit(log: EventLog, room: str, user: str, target: int, text: str) -> int:
    env = envelope(EventKind.MESSAGE_EDITED, room, user, target_seq=target, text=text)
    result = await log.append(env, room_check=RoomCheck.EXISTS)
    assert result.ok and result.seq is not None
    return result.seq


async def delete(log: EventLog, room: str, user: str, target: int) -> int:
    env = envelope(EventKind.MESSAGE_DELETED, room, user, target_seq=target)
    result = await log.append(env, room_check=RoomCheck.EXISTS)
    assert result.ok and result.seq is not None
    return result.seq


async def wait_for(
    check: Callable[[], Awaitable[bool]], deadline_s: float = 60.0, what: str = "condition"
) -> None:
    """Poll until `check()` holds (generous deadline: the machine is shared)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def get_messages(url: str, room: str, token: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(
            f"{url}/rooms/{room}/messages",
            params={k: v for k, v in params.items() if v is not None},
            headers={"authorization": f"Bearer {token}"},
        )
