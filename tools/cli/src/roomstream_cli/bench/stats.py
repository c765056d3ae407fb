"""Latency histograms that merge across worker processes (pure logic).

Latencies are counted in buckets of `BUCKET_US` microseconds (exact enough for p50 / p99 in the
millisecond range); the exact maximum is kept beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUCKET_US = 50


@dataclass(slots=True)
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        b = int(seconds * 1_000_000) // BUCKET_US
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: Histogram) -> None:
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, p: float) -> float | None:
        """The `p`-th percentile in seconds (upper edge of its bucket), None when empty."""
        if self.count == 0:
            return None
        rank = max(1, round(p / 100.0 * self.count))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min((b + 1) * BUCKET_US / 1_000_000, self.max_s)
        return self.max_s

    def to_json(self) -> dict[str, object]:
        return {"buckets": {str(k): v for k, v in self.buckets.items()}, "max_s": self.max_s}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Histogram:
        raw = doc.get("buckets") or {}
        assert isinstance(raw, dict)
        buckets = {int(k): int(v) for k, v in raw.items()}
        max_s = doc.get("max_s") or 0.0
        assert isinstance(max_s, (int, float))
        return cls(buckets, sum(buckets.values()), float(max_s))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
