"""Periodic retention jobs: trimming the log shards, and (optionally) deleting old history."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import ResponseError
from roomstream_kit.lag import group_lag
from roomstream_kit.redis import AnyRedis
from roomstream_kit.redis import text as redis_text

from .cache import LatestCache
from .horizon import GroupState, format_id, horizon_distance, parse_id, trim_minid
from .metrics import HistoryMetrics
from .settings import HistorySettings
from .store import HistoryStore

log = logging.getLogger(__name__)

_MAX_LENGTH_SCAN = 100_000
"""At most this many entries are read per run to find the length cutoff."""


class StreamTrimmer:
    def __init__(self, redis: AnyRedis, settings: HistorySettings, metrics: HistoryMetrics):
        self.redis = redis
        self.settings = settings
        self.metrics = metrics

    async def groups(self, stream: str) -> tuple[list[GroupState], dict[str, Any]]:
        info: dict[str, Any] = await self.redis.xinfo_stream(stream)
        raw_groups: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
        groups = []
        for g in raw_groups:
            name = redis_text(g["name"])
            oldest = None
            if int(g.get("pending") or 0) > 0:
                summary: dict[str, Any] = await self.redis.xpending(stream, name)
                if summary.get("min"):
                    oldest = parse_id(summary["min"])
            groups.append(
                GroupState(
                    name=name,
                    last_delivered=parse_id(g["last-delivered-id"]),
                    oldest_pending=oldest,
                    entries_read=g.get("entries-read"),
                    lag=g.get("lag"),
                )
            )
        return groups, info

    async def trim_stream(self, stream: str) -> int:
        """Trim one shard as far as allowed; returns the number of entries removed."""
        try:
            groups, info = await self.groups(stream)
        except ResponseError:  # the stream does not exist (yet)
            return 0
        length = int(info["length"])
        added = int(info.get("entries-added") or length)
        first = info.get("first-entry")
        first_id = parse_id(first[0]) if first else None
        for g in groups:
            dist = horizon_distance(g, added, length, first_id)
            if dist is not None:
                self.metrics.horizon[(stream, g.name)] = dist
            lag = group_lag({"lag": g.lag, "entries-read": g.entries_read}, added)
            if lag is not None:
                self.metrics.lag[(stream, g.name)] = lag
        s = self.settings
        age_cutoff = None
        if s.retention_max_age_s > 0:
            age_cutoff = (int(time.time() * 1000 - s.retention_max_age_s * 1000), 0)
        length_cutoff = None
        if s.retention_max_len > 0:
            excess = length - s.retention_max_len
            if excess <= 0:
                return 0
            first_kept: Any = await self.redis.xrange(
                stream, "-", "+", count=min(excess, _MAX_LENGTH_SCAN) + 1
            )
            length_cutoff = parse_id(first_kept[-1][0]) if first_kept else None
            if length_cutoff is None:
                return 0
        minid = trim_minid(
            groups,
            required=s.required_groups,
            age_cutoff=age_cutoff,
            length_cutoff=length_cutoff,
        )
        if minid is None:
            return 0
        removed = int(await self.redis.xtrim(stream, minid=format_id(minid), approximate=False))
        if removed:
            self.metrics.trimmed.add(removed, {"stream": stream})
            log.info("trimmed %d entries of %s below %s", removed, stream, format_id(minid))
        return removed

    async def run_once(self) -> int:
        total = 0
        for stream in self.settings.keys.all_logs():
            total += await self.trim_stream(stream)
        return total


class HistoryPurger:
    """Deletes events older than `history_retention_days` from Postgres (explicit retention)."""

    def __init__(
        self,
        store: HistoryStore,
        cache: LatestCache,
        settings: HistorySettings,
        metrics: HistoryMetrics,
    ) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self.metrics = metrics

    async def run_once(self) -> dict[str, int]:
        cutoff = int(time.time() * 1000 - self.settings.history_retention_days * 86_400_000)
        purged = await self.store.purge_older_than(cutoff)
        if purged:
            self.metrics.purged.add(len(purged))
            await self.cache.invalidate(purged)
            log.info("history retention: purged old events of %d rooms", len(purged))
        return purged
