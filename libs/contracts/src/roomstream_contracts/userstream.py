"""A user's own stream: per-user events and read markers, sequenced like a room.

Every user has one stream whose internal key is `~USER` (`user_stream`). Room ids are slugs of
`[a-z0-9_-]`, so no room can ever have that key, and no client command can name it (its `room`
fields are room ids). Everything else is the room machinery unchanged: the one append script
gives the stream its gapless seq (`NS:seq:{N}`, field `~USER`), keeps its recent buffer
(`NS:recent:{N}:~USER`) and writes the log entry (`r` = `~USER`) to the stream's shard; gateways
subscribe each socket of the user to it and replay it on reconnect exactly like a room; history
persists its events like a room's (room column `~USER`).

Kinds of the stream (`events.USER_STREAM_KINDS`): `user_event` (published through the rooms API,
`POST /users/{user}/events`) and `read` (the `read` command: the user's read marker of a room).

Read markers are cached in Redis (`read_markers_key`: hash room → seq, in the hash tag of the
user's stream) and raised only (`RAISE_MARKER_SCRIPT`: max wins); the rooms service keeps them in
Postgres from the `read` events of the log (docs/protocol.md, "Read markers").
"""

from __future__ import annotations

import re
from typing import Any

from .ids import unstorable_char
from .streams import StreamKeys

USER_STREAM_PREFIX = "~"
"""The internal stream key of user U is `~U` (never a room id: those are `[a-z0-9_-]` slugs)."""

USER_EVENT_KIND_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
_KIND_RE = re.compile(USER_EVENT_KIND_PATTERN)
RESERVED_USER_EVENT_KINDS = frozenset({"read"})
"""Kinds the API refuses: `read` frames are read markers (the `read` command)."""
MAX_USER_EVENT_DATA_BYTES = 8192
"""Largest `data` of a user event, as compact JSON (a larger one is `too_large`)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of a user event's `data` (deeper is `bad_request`)."""


def user_stream(user: str) -> str:
    """The internal stream key of `user`'s stream."""
    return USER_STREAM_PREFIX + user


def is_user_stream(key: str) -> bool:
    """Whether a log entry's room field is a user stream rather than a room."""
    return key.startswith(USER_STREAM_PREFIX)


def stream_user(key: str) -> str | None:
    """The user of a user stream key, or None for a room id."""
    return key[len(USER_STREAM_PREFIX) :] if is_user_stream(key) else None


def read_markers_key(keys: StreamKeys, user: str) -> str:
    """Hash room → last read seq of `user` (the cache of the read markers; hash tag of the
    user's stream, so a script may touch it with the stream's keys)."""
    shard = keys.room_shard(user_stream(user))
    return f"{keys.namespace}:read:{{{shard}}}:{user}"


def user_event_kind_problem(kind: Any) -> str | None:
    """Why `kind` may not be a user event's kind, or None."""
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        return f"kind must match {USER_EVENT_KIND_PATTERN}"
    if kind in RESERVED_USER_EVENT_KINDS:
        return f"kind {kind!r} is reserved"
    return None


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot go into the log (U+0000 or a lone surrogate in a string or key,
    which no store takes; nesting deeper than `MAX_JSON_DEPTH`), or None."""
    if depth > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH}"
    if isinstance(value, str):
        bad = unstorable_char(value)
        return None if bad is None else f"a string holds U+{ord(bad):04X}"
    if isinstance(value, dict):
        for k, v in value.items():
            problem = json_problem(k, depth + 1) or json_problem(v, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for v in value:
            problem = json_problem(v, depth + 1)
            if problem:
                return problem
    return None


RAISE_MARKER_SCRIPT = """
-- Raise a read marker: max wins. KEYS: 1 the user's read markers hash. ARGV: 1 room, 2 seq.
-- Returns the marker after the call (the old one when it was not lower).
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return seq
end
return cur
"""
"""Written by the gateway after it appended a `read` event, and by the rooms service when it
applies one (repairs a cache that missed it); never lowers a marker."""

UNREAD_SCRIPT = """
-- Count a room's unread messages for one user, newest first, read-only.
-- KEYS: 1 the room's recent stream, 2 its deleted set (one hash tag).
-- ARGV: 1 the read marker, 2 the welcome's seq, 3 the cap, 4 the reader's `"user":...,` as it
--       appears in an envelope (own messages are not unread), 5 entries read per step.
-- A message envelope holds `"kind":"message",` unescaped only in its `kind` field (quotes inside
-- string values are escaped), likewise the reader's `user` field.
local marker = tonumber(ARGV[1])
local top = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local step = tonumber(ARGV[5])
local count = 0
while top > marker and count < cap do
  local entries = redis.call('XREVRANGE', KEYS[1], top .. '-0', (marker + 1) .. '-0', 'COUNT', step)
  for _, entry in ipairs(entries) do
    local body = entry[2][2]
    if string.find(body, '"kind":"message",', 1, true) and not string.find(body, ARGV[4], 1, true) then
      local seq = string.match(entry[1], '^(%d+)')
      if redis.call('SISMEMBER', KEYS[2], seq) == 0 then
        count = count + 1
        if count >= cap then break end
      end
    end
  end
  if #entries < step then break end
  top = tonumber(string.match(entries[#entries][1], '^(%d+)')) - 1
end
return count
"""
"""Counts `unread` for a welcome (gateway `reads`): messages above the marker by others, not
deleted, up to the cap, over the room's recent buffer; only the count leaves Redis."""
