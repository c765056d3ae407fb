"""Identifier formats shared by every service: room slugs, user ids, event ids."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import StringConstraints

ROOM_ID_PATTERN = r"^[a-z0-9_-]{1,64}$"
_ROOM_ID_RE = re.compile(ROOM_ID_PATTERN)

RoomId = Annotated[str, StringConstraints(pattern=ROOM_ID_PATTERN)]
"""A room id: a slug of 1 to 64 characters from [a-z0-9_-]."""

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A user id: the `sub` claim of the user's token."""

ClientMessageId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""The client's own id of a `send`, unique per user; the key of idempotent sends."""


def is_room_id(value: str) -> bool:
    """Whether `value` is a valid room id."""
    return _ROOM_ID_RE.fullmatch(value) is not None


def new_event_id() -> str:
    """A new event id: 48 bits of milliseconds then 80 random bits, as 32 hex digits.

    Time-ordered (like UUIDv7) so that ids sort roughly by creation and index well in Postgres.
    """
    ms = time.time_ns() // 1_000_000
    return f"{ms:012x}{os.urandom(10).hex()}"


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every `ts`."""
    return time.time_ns() // 1_000_000
