"""Consumer-group lag, computed one way for every service: from `XINFO GROUPS` replies.

A group's *lag* is the number of log entries not yet delivered to it (Redis's `lag` field; when
Redis cannot tell, `entries-added - entries-read` if both are known); *pending* is the number
delivered but not yet acknowledged. `sum_groups` is pure; `consumer_lag` reads the shards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from .redis import AnyRedis
from .redis import text as redis_text


def group_lag(info: Mapping[str, Any], entries_added: int | None = None) -> int | None:
    """The lag of one group of one shard (`XINFO GROUPS` entry), None when unknown."""
    lag = info.get("lag")
    if lag is not None:
        return int(lag)
    read = info.get("entries-read")
    if read is not None and entries_added is not None:
        return max(0, int(entries_added) - int(read))
    return None


def sum_groups(
    infos: Iterable[Sequence[Mapping[str, Any]]],
) -> tuple[dict[str, int], dict[str, int]]:
    """Lag and pending per consumer group, summed over the shards' `XINFO GROUPS` replies."""
    lag: dict[str, int] = {}
    pending: dict[str, int] = {}
    for groups in infos:
        for group in groups:
            name = redis_text(group["name"])
            lag[name] = lag.get(name, 0) + (group_lag(group) or 0)
            pending[name] = pending.get(name, 0) + int(group.get("pending") or 0)
    return lag, pending


async def shard_groups(redis: AnyRedis, streams: Iterable[str]) -> list[list[dict[str, Any]]]:
    """`XINFO GROUPS` of every shard that exists (a shard not created yet is left out)."""
    infos = []
    for stream in streams:
        try:
            infos.append(await redis.xinfo_groups(stream))
        except ResponseError:  # the stream does not exist (yet)
            continue
    return infos


async def consumer_lag(redis: AnyRedis, streams: Iterable[str], group: str) -> tuple[int, int]:
    """(lag, pending) of `group`, summed over the shards."""
    lag, pending = sum_groups(await shard_groups(redis, streams))
    return lag.get(group, 0), pending.get(group, 0)
