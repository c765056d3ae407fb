"""The node registry in Redis: reading node records, and claiming a dead node exactly once.

Every process writes `NS:node:NODE` (hash with a TTL) and its last heartbeat (ms) as its score in
the `NS:nodes` zset (`roomstream_kit.node.Heartbeat`); a clean stop removes both. A node still in
the zset whose score is older than the timeout stopped without deregistering: it failed.
`CLAIM_SCRIPT` removes it from the zset only if its score is still that old, in one atomic step,
so when several monitors look at the same moment exactly one of them wins and reports it. The
claim also returns the node's incarnation (process life), so `node_failed` names the dead process
and never the live one that replaced it under the same node id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from roomstream_contracts.streams import StreamKeys
from roomstream_kit.redis import AnyRedis

from . import keys as monitor_keys

CLAIM_SCRIPT = """
-- KEYS[1] the nodes zset, KEYS[2] the incarnations hash; ARGV[1] node, ARGV[2] deadline (ms):
-- claim if last beat <= deadline; returns {last beat, the incarnation that stopped beating}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return false end
if tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
return {score, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
"""

_NUMERIC = (
    "pid",
    "incarnation",
    "started_ms",
    "last_seen_ms",
    "memory_bytes",
    "connections",
    "rooms",
    "delivered",
)
_FLOAT = ("uptime_s", "cpu_percent", "messages_per_s")


@dataclass(frozen=True, slots=True)
class Claim:
    """A node this monitor declared dead: its last beat and the incarnation that made it."""

    last_seen_ms: int
    incarnation: int | None
    """None for a node of a version without incarnations."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node: str
    last_beat_ms: int
    """Score in the registry zset."""
    fields: dict[str, Any]
    """The heartbeat hash, numbers parsed; empty when the hash has expired."""

    @property
    def kind(self) -> str:
        return str(self.fields.get("kind", ""))


def parse_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A heartbeat hash with its numeric fields as numbers (unknown fields kept as text)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key, text = k.decode(), v.decode()
        try:
            if key in _NUMERIC:
                out[key] = int(float(text))
                continue
            if key in _FLOAT:
                out[key] = float(text)
                continue
        except ValueError:
            pass
        out[key] = text
    return out


class Registry:
    def __init__(self, redis: AnyRedis, keys: StreamKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._claim = redis.register_script(CLAIM_SCRIPT)

    async def nodes(self) -> list[NodeRecord]:
        """Every node in the registry zset with its heartbeat hash (if not yet expired)."""
        members: Any = await self.redis.zrange(self.keys.nodes(), 0, -1, withscores=True)
        if not members:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in members:
                pipe.hgetall(self.keys.node(name.decode()))
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
        return [
            NodeRecord(name.decode(), int(score), parse_record(raw))
            for (name, score), raw in zip(members, hashes, strict=True)
        ]

    async def stale(self, deadline_ms: int) -> list[tuple[str, int]]:
        """Nodes whose last heartbeat is at or before `deadline_ms`: (node, last beat ms)."""
        rows: Any = await self.redis.zrangebyscore(
            self.keys.nodes(), "-inf", deadline_ms, withscores=True
        )
        return [(name.decode(), int(score)) for name, score in rows]

    async def claim(self, node: str, deadline_ms: int) -> Claim | None:
        """Remove `node` if it is still stale; its last beat and incarnation when this call won.

        The incarnation is read in the same atomic step: a new process of the node claims its
        incarnation together with a fresh beat (`roomstream_kit.node.INCARNATION_SCRIPT`), so a
        stale node's incarnation here is always the one that stopped beating, never its successor.
        """
        reply: Any = await self._claim(
            keys=[self.keys.nodes(), self.keys.incarnations()], args=[node, deadline_ms]
        )
        if not reply:
            return None
        score, incarnation = reply
        return Claim(int(float(score)), int(incarnation) if incarnation else None)

    async def record_failed(self, node: str, at_ms: int, keep_s: int) -> None:
        key = monitor_keys.nodes_failed(self.keys.namespace)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {node: at_ms})
            pipe.zremrangebyscore(key, "-inf", at_ms - keep_s * 1000)
            await pipe.execute()

    async def failed(self, since_ms: int) -> list[tuple[str, int]]:
        """Nodes declared dead since `since_ms`: (node, ms when declared), newest first."""
        rows: Any = await self.redis.zrevrangebyscore(
            monitor_keys.nodes_failed(self.keys.namespace), "+inf", since_ms, withscores=True
        )
        return [(name.decode(), int(score)) for name, score in rows]
