"""Identifier formats shared by every service: room slugs, user ids, event ids."""

from __future__ import annotations

import os
import re
import time
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""U+0000 (PostgreSQL cannot store it in `text` or `jsonb`) and surrogate code points (not valid
Unicode: orjson and Postgres refuse them; they reach Python strings through `\\ud800` escapes
that a JSON parser such as the standard library's lets through, e.g. in a JWT payload)."""


def unstorable_char(value: str) -> str | None:
    """The first character of `value` that no store or JSON consumer takes, or None."""
    if "\x00" in value:
        return "\x00"
    if value.isascii():
        return None
    found = _UNSTORABLE.search(value)
    return found.group() if found else None


def check_storable(value: str) -> str:
    """`value` unchanged, or `ValueError` if it holds U+0000 or a lone surrogate.

    Every text that reaches the log from outside (message and edit texts, client ids, room
    names, user ids in bodies, paths and token `sub`s) passes through this check, so that no
    consumer ever meets an event it cannot store (docs/protocol.md, "Refused input").
    """
    bad = unstorable_char(value)
    if bad is not None:
        raise ValueError(f"must not contain U+{ord(bad):04X}")
    return value


def make_storable(value: str) -> str:
    """`value` with U+0000 written as `\\0` and surrogates replaced by U+FFFD (for diagnostics
    such as error texts, never for user input, which is refused instead)."""
    if unstorable_char(value) is None:
        return value
    return _UNSTORABLE.sub(lambda m: "\\0" if m.group() == "\x00" else "\ufffd", value)


SafeStr = Annotated[str, AfterValidator(check_storable)]
"""A string without U+0000 and without surrogate code points (see `check_storable`)."""

ROOM_ID_PATTERN = r"^[a-z0-9_-]{1,64}$"
_ROOM_ID_RE = re.compile(ROOM_ID_PATTERN)

RoomId = Annotated[str, StringConstraints(pattern=ROOM_ID_PATTERN)]
"""A room id: a slug of 1 to 64 characters from [a-z0-9_-]."""

MAX_USER_ID_CHARS = 128

UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_USER_ID_CHARS),
    AfterValidator(check_storable),
]
"""A user id: the `sub` claim of the user's token."""

ClientMessageId = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(check_storable)
]
"""The client's own id of a `send`, unique per user; the key of idempotent sends."""


def is_room_id(value: str) -> bool:
    """Whether `value` is a valid room id."""
    return _ROOM_ID_RE.fullmatch(value) is not None


def user_id_problem(value: str) -> str | None:
    """Why `value` is not a valid user id (for HTTP path parameters), or None if it is one."""
    if not 1 <= len(value) <= MAX_USER_ID_CHARS:
        return f"a user id is 1 to {MAX_USER_ID_CHARS} characters"
    bad = unstorable_char(value)
    if bad is not None:
        return f"a user id must not contain U+{ord(bad):04X}"
    return None


def new_event_id() -> str:
    """A new event id: 48 bits of milliseconds then 80 random bits, as 32 hex digits.

    Time-ordered (like UUIDv7) so that ids sort roughly by creation and index well in Postgres.
    """
    ms = time.time_ns() // 1_000_000
    return f"{ms:012x}{os.urandom(10).hex()}"


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every `ts`."""
    return time.time_ns() // 1_000_000
