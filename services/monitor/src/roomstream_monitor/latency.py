"""Delivery latency percentiles from the gateways' Prometheus histograms. Pure: no I/O.

The gateways export `roomstream_gateway_delivery_latency_seconds` (event appended → frame written
to the sockets) as a cumulative histogram. The monitor scrapes every gateway's `/metrics`, adds
the buckets of all gateways, subtracts the previous scrape (so the percentiles describe the last
interval, not the process lifetime) and interpolates quantiles the way Prometheus'
`histogram_quantile` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

DELIVERY_HISTOGRAM = "roomstream_gateway_delivery_latency_seconds"

Buckets = dict[float, float]
"""Upper bound (`le`) → cumulative count."""


def histogram_buckets(text: str, name: str = DELIVERY_HISTOGRAM) -> Buckets:
    """The cumulative buckets of histogram `name` in a Prometheus text page, labels summed."""
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + float(sample.value)
    return buckets


def add(parts: Iterable[Mapping[float, float]]) -> Buckets:
    total: Buckets = {}
    for part in parts:
        for le, count in part.items():
            total[le] = total.get(le, 0.0) + count
    return total


def delta(current: Mapping[float, float], previous: Mapping[float, float]) -> Buckets:
    """Counts since `previous`; a counter that went down (a gateway restarted) counts from 0."""
    out: Buckets = {}
    for le, count in current.items():
        before = previous.get(le, 0.0)
        out[le] = count - before if count >= before else count
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The `q` quantile (0..1) by linear interpolation in the bucket; None without observations."""
    ordered: Sequence[tuple[float, float]] = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return ordered[-1][0]


def percentiles_ms(buckets: Mapping[float, float]) -> dict[str, float | None]:
    """p50 / p90 / p99 in milliseconds (None when nothing was delivered)."""
    out: dict[str, float | None] = {}
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        value = quantile(q, buckets)
        out[label] = None if value is None else round(value * 1000, 3)
    return out
