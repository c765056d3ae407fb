"""Message rates over a sliding window of per-second buckets. Pure: no I/O.

The monitor counts `message` events per (second, room) — `count_batch` — and adds the counts to
shared per-second buckets (in Redis, so several monitor instances add up to one picture).
`window_rates` turns the buckets of the last `window_s` seconds into rates per second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TOTAL = "*"
"""Bucket field of the all-rooms count (room ids are slugs, so it never clashes with a room)."""


AHEAD_S = 60
"""Events up to this many seconds ahead of the counter's clock are counted (clock skew)."""


def count_batch(
    events: Iterable[tuple[int, str]], now_s: int, window_s: int
) -> dict[int, Counter[str]]:
    """Per-second counts of `(ts_ms, room)` events, by room and under `TOTAL`.

    Events older than the window or more than a minute in the future are left out (a monitor
    that catches up on an old log must not report old traffic as current).
    """
    buckets: dict[int, Counter[str]] = {}
    for ts_ms, room in events:
        second = ts_ms // 1000
        if second <= now_s - window_s or second > now_s + AHEAD_S:
            continue
        bucket = buckets.setdefault(second, Counter())
        bucket[TOTAL] += 1
        if room:
            bucket[room] += 1
    return buckets


@dataclass(frozen=True, slots=True)
class Rates:
    messages_per_s: float
    busiest_rooms: list[tuple[str, float]]
    series: list[tuple[int, int]] = field(default_factory=list)
    """(second, messages in that second) for each second of the window, oldest first."""


def window_rates(
    buckets: Mapping[int, Mapping[str, int]], now_s: int, window_s: int, top: int
) -> Rates:
    """Rates over the `window_s` complete seconds before `now_s` (the current second is partial)."""
    seconds = range(now_s - window_s, now_s)
    per_room: Counter[str] = Counter()
    series: list[tuple[int, int]] = []
    for second in seconds:
        bucket = buckets.get(second, {})
        series.append((second, int(bucket.get(TOTAL, 0))))
        for room, count in bucket.items():
            if room != TOTAL:
                per_room[room] += int(count)
    total = sum(count for _, count in series)
    busiest = [(room, round(count / window_s, 3)) for room, count in per_room.most_common(top)]
    return Rates(round(total / window_s, 3), busiest, series)
