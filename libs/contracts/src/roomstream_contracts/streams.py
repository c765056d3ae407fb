"""The log's layout in Redis: key names, the room → shard function, and the atomic append script.

The log is `shards` Redis Streams. A room always maps to the same shard, so its events keep their
order. Every key that the append script touches for a room carries the shard's Redis Cluster hash
tag (`{N}`), so the script runs within one slot on a cluster exactly as on a single server.

Key map (namespace `rs` by default; `N` is the shard number):

| key | type | written by | what |
|---|---|---|---|
| `rs:log:{N}` | stream | append script | the log shard: fields `r` room, `k` kind, `e` envelope JSON |
| `rs:seq:{N}` | hash | append script | room → last seq (a room exists once it has a seq) |
| `rs:recent:{N}:ROOM` | stream | append script | the room's recent sequenced events, entry id `SEQ-0`; ROOM `~USER`: a user's own stream (`userstream`); the same name is the room's shard channel (SPUBLISH of every event of the room) |
| `rs:control` | channel | append script | PUBLISH of `member_joined`, `room_created`, `user_kicked`, `tokens_revoked` (every gateway subscribes) |
| `rs:dedupe:{N}:ROOM:USER:CID` | string | append script | ack of an idempotent send, with a TTL; USER escaped by `key_part` |
| `rs:client-id:{U}:USER:CID` | string | producer (`eventlog`) | the room a user's client id is bound to (per-user dedupe), TTL; `U` = the user's shard; USER escaped by `key_part` |
| `rs:kinds:{N}` | hash | append script (`room_created`), seed script | room → `public` / `private`: membership authority is seeded |
| `rs:roster:{N}:ROOM` | set | append script (`room_created`, `member_joined`, `member_left`), seed script | the room's members: the membership authority |
| `rs:deleted:{N}:ROOM` | set | append script (`message_deleted`) | seqs of the room's deleted messages |
| `rs:room:{N}:ROOM` | hash | rooms service | room record read model |
| `rs:members:{N}:ROOM` | set | rooms service | members read model |
| `rs:presence:{N}:ROOM` | hash | rooms service | online member → connection count |
| `rs:user-rooms:USER` | set | rooms service | rooms of a user read model |
| `rs:user-conns:USER` | hash | rooms service | connection id → node of a user's live sockets |
| `rs:node-conns:NODE` | hash | rooms service | connection id → user on one node |
| `rs:history-latest:{N}:ROOM` | hash | history service | cached latest history page + generation |
| `rs:revoked:USER` | string | rooms service | tokens of USER with `iat` below this (seconds) are revoked |
| `rs:kicked:USER` | string (counter) | rooms service | USER's kicks (`user_kicked`) so far: a gateway whose control channel was down closes the sockets that connected before the last one |
| `rs:read:{N}:USER` | hash | gateway (`read`), rooms service | USER's read markers, room → seq (max wins); `N` = shard of `~USER` (`userstream`) |
| `rs:dead:{N}` | stream | every consumer (`roomstream_kit.consumer`) | dead letters of shard N: entries a consumer group could never handle |
| `rs:dead-count:{N}` | hash | every consumer | group → how many entries of shard N it dead-lettered |
| `rs:node:NODE` | hash + TTL | each node | heartbeat record |
| `rs:nodes` | zset | each node | node → last heartbeat (ms); monitor's registry index |
| `rs:incarnations:{rs:nodes}` | hash | each node | node → its latest incarnation (kept; same slot as `rs:nodes`) |
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_NAMESPACE = "rs"
DEFAULT_SHARDS = 8
DEFAULT_RECENT_PER_ROOM = 1000
"""How many recent events per room the append script keeps for fast replay."""
DEFAULT_DEDUPE_TTL_S = 24 * 3600
"""How long a client message id is remembered for idempotent sends."""

DEFAULT_DEAD_LETTER_MAXLEN = 10_000
"""Dead letters kept per shard (approximate MAXLEN); the counts in `dead-count` are never trimmed."""

DEAD_FIELD_STREAM = b"stream"
"""Dead-letter entry fields: the original stream, entry id, consumer group and consumer, the
error (`Type: message`), when (ms), and every field of the original entry under `f:NAME`."""
DEAD_FIELD_ENTRY = b"entry"
DEAD_FIELD_GROUP = b"group"
DEAD_FIELD_CONSUMER = b"consumer"
DEAD_FIELD_ERROR = b"error"
DEAD_FIELD_TS = b"ts"
DEAD_FIELD_PREFIX = b"f:"

FIELD_ROOM = b"r"
FIELD_KIND = b"k"
FIELD_EVENT = b"e"


def shard_of(key: str, shards: int) -> int:
    """The shard of a room (or of `user:ID` / `node:ID` for events without a room).

    CRC-32 of the UTF-8 bytes modulo the shard count: stable across processes and languages.
    Changing the shard count remaps rooms, so it is fixed for the life of a deployment.
    """
    return zlib.crc32(key.encode()) % shards


def key_part(value: str) -> str:
    """`value` as a middle part of a key: `%` and `:` escaped, so that the next `:` ends it.

    A user id may hold `:`; without this, (user `a`, client id `b:c`) and (user `a:b`, client id
    `c`) named one dedupe key and the second message was answered with the first's ack and never
    appended. Ids without `%` and `:` are unchanged (existing keys keep their names).
    """
    if "%" not in value and ":" not in value:
        return value
    return value.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Key names of one roomstream deployment (namespace + shard count)."""

    namespace: str = DEFAULT_NAMESPACE
    shards: int = DEFAULT_SHARDS

    # -- sharding
    def room_shard(self, room: str) -> int:
        return shard_of(room, self.shards)

    def user_shard(self, user: str) -> int:
        return shard_of(f"user:{user}", self.shards)

    def node_shard(self, node: str) -> int:
        return shard_of(f"node:{node}", self.shards)

    # -- log (append script)
    def log(self, shard: int) -> str:
        return f"{self.namespace}:log:{{{shard}}}"

    def all_logs(self) -> list[str]:
        return [self.log(s) for s in range(self.shards)]

    def seq(self, shard: int) -> str:
        return f"{self.namespace}:seq:{{{shard}}}"

    def recent(self, room: str) -> str:
        return f"{self.namespace}:recent:{{{self.room_shard(room)}}}:{room}"

    def dedupe(self, room: str, user: str, client_id: str) -> str:
        return f"{self.namespace}:dedupe:{{{self.room_shard(room)}}}:{room}:{key_part(user)}:{client_id}"

    def client_id(self, user: str, client_id: str) -> str:
        """String: the room a user's client message id is bound to (dedupe is per user)."""
        return (
            f"{self.namespace}:client-id:{{{self.user_shard(user)}}}:{key_part(user)}:{client_id}"
        )

    # -- membership authority (append script, seed script)
    def kinds(self, shard: int) -> str:
        """Hash room → kind; a room with an entry has a seeded membership authority."""
        return f"{self.namespace}:kinds:{{{shard}}}"

    def roster(self, room: str) -> str:
        """Set: the room's members as the append script decides them (the authority)."""
        return f"{self.namespace}:roster:{{{self.room_shard(room)}}}:{room}"

    def deleted(self, room: str) -> str:
        """Set: seqs of the room's messages that were deleted (no edit / delete after that)."""
        return f"{self.namespace}:deleted:{{{self.room_shard(room)}}}:{room}"

    def shard_of_log(self, stream: str) -> int:
        """The shard number of a log key `NS:log:{N}` (inverse of `log`)."""
        return int(stream.rsplit("{", 1)[1].rstrip("}"))

    # -- dead letters (every consumer group; same hash tag as the shard)
    def dead_letters(self, shard: int) -> str:
        return f"{self.namespace}:dead:{{{shard}}}"

    def dead_letter_counts(self, shard: int) -> str:
        return f"{self.namespace}:dead-count:{{{shard}}}"

    # -- read models (rooms service)
    def room(self, room: str) -> str:
        return f"{self.namespace}:room:{{{self.room_shard(room)}}}:{room}"

    def members(self, room: str) -> str:
        return f"{self.namespace}:members:{{{self.room_shard(room)}}}:{room}"

    def presence(self, room: str) -> str:
        return f"{self.namespace}:presence:{{{self.room_shard(room)}}}:{room}"

    def user_rooms(self, user: str) -> str:
        return f"{self.namespace}:user-rooms:{user}"

    def user_conns(self, user: str) -> str:
        return f"{self.namespace}:user-conns:{user}"

    def node_conns(self, node: str) -> str:
        return f"{self.namespace}:node-conns:{node}"

    def revoked(self, user: str) -> str:
        """String: the user's revocation cutoff (`roomstream_contracts.tokens.REVOKE_SCRIPT`)."""
        return f"{self.namespace}:revoked:{user}"

    def kicked(self, user: str) -> str:
        """String: how many times USER was kicked (`user_kicked`), raised before each kick's
        event is appended; a gateway reads it at connect and again after a control-channel drop
        (a kick published meanwhile still closes the sockets that connected before it)."""
        return f"{self.namespace}:kicked:{user}"

    # -- history service
    def history_latest(self, room: str) -> str:
        """Hash: the cached latest history page of a room (`page`) and its generation (`gen`)."""
        return f"{self.namespace}:history-latest:{{{self.room_shard(room)}}}:{room}"

    # -- nodes (every process; monitor reads)
    def node(self, node: str) -> str:
        return f"{self.namespace}:node:{node}"

    def nodes(self) -> str:
        return f"{self.namespace}:nodes"

    # -- routed delivery (append script publishes, gateways subscribe)
    def channel(self, room: str) -> str:
        """Shard channel of a topic's events: the name of its recent stream (SPUBLISH in the
        append script, so the channel is in the room's slot on a cluster)."""
        return self.recent(room)

    def control(self) -> str:
        """Classic pub/sub channel of the events every gateway needs whatever its rooms
        (`member_joined`, `room_created`, `user_kicked`, `tokens_revoked`)."""
        return f"{self.namespace}:control"

    def incarnations(self) -> str:
        """Hash node → latest incarnation. Its hash tag is the name of `nodes()`, so scripts that
        touch both run within one slot of a Redis Cluster."""
        return f"{self.namespace}:incarnations:{{{self.nodes()}}}"


APPEND_SCRIPT = """
-- roomstream append: one atomic step that checks, sequences and appends one event.
-- KEYS: 1 shard log, 2 shard seq hash, 3 room recent stream, 4 dedupe key, 5 shard kinds hash,
--       6 room roster set, 7 room deleted set (all one hash tag)
-- ARGV: 1 room ('' none), 2 kind, 3 envelope JSON minus its leading '{', 4 'seq' | 'live',
--       5 room check '' | 'exists' | 'new', 6 dedupe TTL s ('' none), 7 recent maxlen,
--       8 event id, 9 target seq of an edit / delete ('' none), 10 owner-check user ('' none),
--       11 access check '' | 'member' | 'join' | 'grant' | 'leave', 12 the event's user,
--       13 room kind (room_created), 14.. members (room_created)
-- Returns {status, ack, stream id}; ack is 'SEQ EVENTID' for sequenced appends.
local room = ARGV[1]
local kind = ARGV[2]
local access = ARGV[11]
local actor = ARGV[12]
if ARGV[6] ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {'duplicate', prior, ''} end
end
local exists = room ~= '' and redis.call('HEXISTS', KEYS[2], room) == 1
if ARGV[5] == 'exists' and not exists then return {'no_room', '', ''} end
if ARGV[5] == 'new' and exists then return {'room_exists', '', ''} end
-- Membership authority: the roster, changed only here, in the same step as the events.
if access ~= '' and exists then
  local rkind = redis.call('HGET', KEYS[5], room)
  if not rkind then return {'unseeded', '', ''} end
  local member = redis.call('SISMEMBER', KEYS[6], actor) == 1
  if access == 'member' then
    if not member then return {'forbidden', '', ''} end
  elseif access == 'join' or access == 'grant' then
    if member then return {'member', '', ''} end
    if access == 'join' and rkind == 'private' then return {'forbidden', '', ''} end
  elseif access == 'leave' then
    if not member then return {'not_member', '', ''} end
  end
end
if ARGV[9] ~= '' then
  if redis.call('SISMEMBER', KEYS[7], ARGV[9]) == 1 then return {'deleted', '', ''} end
  if ARGV[10] ~= '' then
    local found = redis.call('XRANGE', KEYS[3], ARGV[9] .. '-0', ARGV[9] .. '-0')
    if #found == 0 then return {'unknown_target', '', ''} end
    local target = cjson.decode(found[1][2][2])
    if target['kind'] ~= 'message' then return {'not_message', '', ''} end
    if target['user'] ~= ARGV[10] then return {'not_owner', '', ''} end
  end
end
local seq = ''
local body
if ARGV[4] == 'seq' then
  seq = redis.call('HINCRBY', KEYS[2], room, 1)
  body = '{"seq":' .. seq .. ',' .. ARGV[3]
else
  body = '{' .. ARGV[3]
end
local xid = redis.call('XADD', KEYS[1], '*', 'r', room, 'k', kind, 'e', body)
if room ~= '' then
  if kind == 'room_created' then
    redis.call('HSET', KEYS[5], room, ARGV[13])
    for i = 14, #ARGV do redis.call('SADD', KEYS[6], ARGV[i]) end
  elseif kind == 'member_joined' then
    redis.call('SADD', KEYS[6], actor)
  elseif kind == 'member_left' then
    redis.call('SREM', KEYS[6], actor)
  elseif kind == 'message_deleted' and ARGV[9] ~= '' then
    redis.call('SADD', KEYS[7], ARGV[9])
  end
end
-- Routed delivery: the events a gateway needs whatever its rooms (grants, kicks, revocations)
-- on the control channel NS:control (classic PUBLISH: a cluster broadcasts it), then every
-- event of a topic on the topic's channel, named like its recent stream KEYS[3] (SPUBLISH: the
-- same slot on a cluster). Message: 'KIND SEQ BODY' ('-' for no seq). No subscriber: O(1).
local note = kind .. ' ' .. (seq == '' and '-' or seq) .. ' ' .. body
if kind == 'member_joined' or kind == 'room_created' or kind == 'user_kicked'
    or kind == 'tokens_revoked' then
  local cut = string.find(KEYS[1], ':log:', 1, true)
  redis.call('PUBLISH', string.sub(KEYS[1], 1, cut - 1) .. ':control', note)
end
if room ~= '' then redis.call('SPUBLISH', KEYS[3], note) end
if seq == '' then return {'ok', '', xid} end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], seq .. '-0', 'e', body)
local ack = seq .. ' ' .. ARGV[8]
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ack, 'EX', ARGV[6]) end
return {'ok', ack, xid}
"""
"""The one atomic append (see module docstring). Called through `roomstream_kit.eventlog`.

Membership authority: every `room_created` / `member_joined` / `member_left` changes the room's
roster in the same step as its append, and the access checks (`member`: the event's user must be
a member; `join`: add unless a member, refused for private rooms; `grant`: add unless a member;
`leave`: remove if a member) read that roster, so no decision rests on a projection that is
updated later. A room that exists but has no `kinds` entry predates the roster: `unseeded`
(the rooms service seeds it with `SEED_ROSTER_SCRIPT`, docs/architecture.md)."""

SEED_ROSTER_SCRIPT = """
-- Seed a room's membership authority (kind + roster) from the rooms projection, once.
-- KEYS: 1 shard seq hash, 2 shard kinds hash, 3 room roster set, 4 room recent stream
-- ARGV: 1 room, 2 room kind, 3 the projection's applied seq S, 4.. its members at S
-- The membership events after S (appended meanwhile) are taken from the recent buffer; when it
-- no longer holds all of them the answer is 'stale' (retry once the projection caught up).
local room = ARGV[1]
if redis.call('HEXISTS', KEYS[2], room) == 1 then return 'seeded' end
local current = tonumber(redis.call('HGET', KEYS[1], room))
if not current then return 'no_room' end
local applied = tonumber(ARGV[3])
local members = {}
for i = 4, #ARGV do members[ARGV[i]] = true end
if current > applied then
  local later = redis.call('XRANGE', KEYS[4], (applied + 1) .. '-0', current .. '-0')
  if #later ~= current - applied then return 'stale' end
  for _, entry in ipairs(later) do
    local body = entry[2][2]
    if string.find(body, '"member_', 1, true) then
      local ev = cjson.decode(body)
      if ev['kind'] == 'member_joined' and ev['user'] then members[ev['user']] = true
      elseif ev['kind'] == 'member_left' and ev['user'] then members[ev['user']] = nil end
    end
  end
elseif current < applied then
  return 'stale'
end
redis.call('DEL', KEYS[3])
for user, _ in pairs(members) do redis.call('SADD', KEYS[3], user) end
redis.call('HSET', KEYS[2], room, ARGV[2])
return 'ok'
"""
"""Seeds the membership authority of a room created before it existed (rooms service)."""
