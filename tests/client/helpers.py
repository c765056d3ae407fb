"""Helpers for the client tests: rooms written straight into the log and the rooms read models
(what the rooms service would write), and polling with a generous deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from roomstream_contracts.streams import StreamKeys

from tests.support import rooms as support_rooms

DEADLINE_S = 60.0


async def make_room(
    redis: aioredis.Redis, namespace: str, room: str, owner: str, members: list[str]
) -> None:
    """A public room written straight into the log and read models (`tests.support.rooms`)."""
    await support_rooms.create_room(
        redis, StreamKeys(namespace=namespace), room, owner, members=members
    )


async def wait_until(
    condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Poll `condition` until it holds; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)
