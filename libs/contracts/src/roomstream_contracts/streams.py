"""The log's layout in Redis: key names, the room → shard function, and the atomic append script.

The log is `shards` Redis Streams. A room always maps to the same shard, so its events keep their
order. Every key that the append script touches for a room carries the shard's Redis Cluster hash
tag (`{N}`), so the script runs within one slot on a cluster exactly as on a single server.

Key map (namespace `rs` by default; `N` is the shard number):

| key | type | written by | what |
|---|---|---|---|
| `rs:log:{N}` | stream | append script | the log shard: fields `r` room, `k` kind, `e` envelope JSON |
| `rs:seq:{N}` | hash | append script | room → last seq (a room exists once it has a seq) |
| `rs:recent:{N}:ROOM` | stream | append script | the room's recent sequenced events, entry id `SEQ-0` |
| `rs:dedupe:{N}:ROOM:USER:CID` | string | append script | ack of an idempotent send, with a TTL |
| `rs:room:{N}:ROOM` | hash | rooms service | room record read model |
| `rs:members:{N}:ROOM` | set | rooms service | members read model |
| `rs:presence:{N}:ROOM` | hash | rooms service | online member → connection count |
| `rs:user-rooms:USER` | set | rooms service | rooms of a user read model |
| `rs:user-conns:USER` | hash | rooms service | connection id → node of a user's live sockets |
| `rs:node-conns:NODE` | hash | rooms service | connection id → user on one node |
| `rs:history-latest:{N}:ROOM` | hash | history service | cached latest history page + generation |
| `rs:dead:{N}` | stream | every consumer (`roomstream_kit.consumer`) | dead letters of shard N: entries a consumer group could never handle |
| `rs:dead-count:{N}` | hash | every consumer | group → how many entries of shard N it dead-lettered |
| `rs:node:NODE` | hash + TTL | each node | heartbeat record |
| `rs:nodes` | zset | each node | node → last heartbeat (ms); monitor's registry index |
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
        return f"{self.namespace}:dedupe:{{{self.room_shard(room)}}}:{room}:{user}:{client_id}"

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

    # -- history service
    def history_latest(self, room: str) -> str:
        """Hash: the cached latest history page of a room (`page`) and its generation (`gen`)."""
        return f"{self.namespace}:history-latest:{{{self.room_shard(room)}}}:{room}"

    # -- nodes (every process; monitor reads)
    def node(self, node: str) -> str:
        return f"{self.namespace}:node:{node}"

    def nodes(self) -> str:
        return f"{self.namespace}:nodes"


APPEND_SCRIPT = """
-- roomstream append: one atomic step that checks, sequences and appends one event.
-- KEYS: 1 shard log, 2 shard seq hash, 3 room recent stream, 4 dedupe key (all one hash tag)
-- ARGV: 1 room ('' none), 2 kind, 3 envelope JSON minus its leading '{', 4 'seq' | 'live',
--       5 room check '' | 'exists' | 'new', 6 dedupe TTL s ('' none), 7 recent maxlen,
--       8 event id, 9 owner-check target seq ('' none), 10 owner-check user
-- Returns {status, ack, stream id}; ack is 'SEQ EVENTID' for sequenced appends.
local room = ARGV[1]
if ARGV[6] ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {'duplicate', prior, ''} end
end
if ARGV[5] == 'exists' and redis.call('HEXISTS', KEYS[2], room) == 0 then
  return {'no_room', '', ''}
end
if ARGV[5] == 'new' and redis.call('HEXISTS', KEYS[2], room) == 1 then
  return {'room_exists', '', ''}
end
if ARGV[9] ~= '' then
  local found = redis.call('XRANGE', KEYS[3], ARGV[9] .. '-0', ARGV[9] .. '-0')
  if #found == 0 then return {'unknown_target', '', ''} end
  local target = cjson.decode(found[1][2][2])
  if target['kind'] ~= 'message' then return {'not_message', '', ''} end
  if target['user'] ~= ARGV[10] then return {'not_owner', '', ''} end
end
local seq = ''
local body
if ARGV[4] == 'seq' then
  seq = redis.call('HINCRBY', KEYS[2], room, 1)
  body = '{"seq":' .. seq .. ',' .. ARGV[3]
else
  body = '{' .. ARGV[3]
end
local xid = redis.call('XADD', KEYS[1], '*', 'r', room, 'k', ARGV[2], 'e', body)
if seq == '' then return {'ok', '', xid} end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], seq .. '-0', 'e', body)
local ack = seq .. ' ' .. ARGV[8]
if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ack, 'EX', ARGV[6]) end
return {'ok', ack, xid}
"""
"""The one atomic append (see module docstring). Called through `roomstream_kit.eventlog`."""
