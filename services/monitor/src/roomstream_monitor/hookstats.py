"""Per-endpoint webhook figures from the hooks instances' Prometheus pages. Pure: no I/O.

The monitor scrapes `/metrics` of every live `hooks` node (the `address` of its node record, as
it scrapes the gateways for delivery latency) and folds the `roomstream_hooks_*` instruments
(docs/hooks.md, "Metrics") into one view per endpoint: events delivered and failed POSTs (totals
since the instances started, and per second since the previous scrape), POST latency p50 / p90 /
p99 since the previous scrape, the backlog and the dead letters. Counters are summed over the
instances (each delivers some endpoints); the backlog and dead-letter gauges are read by every
instance from Postgres for every endpoint, so the view takes their largest value rather than a sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import latency

PREFIX = "roomstream_hooks_"


@dataclass
class Counters:
    """One endpoint's instruments on one instance (cumulative, except the gauges)."""

    delivered: float = 0.0
    failures: float = 0.0
    dead_lettered: float = 0.0
    latency: latency.Buckets = field(default_factory=dict)
    backlog: float | None = None
    dead_letters: float | None = None


Page = dict[str, Counters]
"""endpoint id → its counters on one instance."""


def parse_page(text: str) -> Page:
    """The per-endpoint `roomstream_hooks_*` samples of one instance's `/metrics` text."""
    page: Page = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            endpoint = sample.labels.get("endpoint")
            if endpoint is None:
                continue
            c = page.setdefault(endpoint, Counters())
            name, value = sample.name, float(sample.value)
            if name == "roomstream_hooks_events_delivered_total":
                c.delivered += value
            elif name == "roomstream_hooks_delivery_failures_total":
                c.failures += value  # summed over the reasons
            elif name == "roomstream_hooks_events_dead_lettered_total":
                c.dead_lettered += value
            elif name == "roomstream_hooks_delivery_seconds_bucket":
                le = float(sample.labels["le"])
                c.latency[le] = c.latency.get(le, 0.0) + value
            elif name == "roomstream_hooks_backlog":
                c.backlog = value
            elif name == "roomstream_hooks_dead_letters":
                c.dead_letters = value
    return page


def _since(current: float, previous: float | None) -> float:
    """Counter increase since `previous`; a counter that went down (a restart) counts from 0."""
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


def endpoints_view(
    pages: dict[str, Page],
    previous: dict[str, Page],
    elapsed_s: float,
    last_latency: dict[str, dict[str, float | None]],
) -> list[dict[str, Any]]:
    """One entry per endpoint (sorted by id) over every instance's page (`node → page`).

    `previous` is the last scrape's pages (rates and latency are over the interval between the
    two); `last_latency` keeps each endpoint's latest percentiles, shown again while it has no new
    POST (updated in place)."""
    ids = sorted({e for page in pages.values() for e in page})
    out = []
    for endpoint in ids:
        delivered = failures = dead_lettered = 0.0
        delivered_delta = failures_delta = 0.0
        backlog = dead = 0.0
        deltas: list[latency.Buckets] = []
        for node, page in pages.items():
            c = page.get(endpoint)
            if c is None:
                continue
            before = previous.get(node, {}).get(endpoint)
            delivered += c.delivered
            failures += c.failures
            dead_lettered += c.dead_lettered
            delivered_delta += _since(c.delivered, before.delivered if before else None)
            failures_delta += _since(c.failures, before.failures if before else None)
            deltas.append(latency.delta(c.latency, before.latency if before else {}))
            backlog = max(backlog, c.backlog or 0.0)
            dead = max(dead, c.dead_letters or 0.0)
        pcts = latency.percentiles_ms(latency.add(deltas))
        if pcts["p50"] is not None:
            last_latency[endpoint] = pcts
        rate = 1.0 / elapsed_s if elapsed_s > 0 else 0.0
        out.append(
            {
                "endpoint": endpoint,
                "delivered": int(delivered),
                "delivered_per_s": round(delivered_delta * rate, 2),
                "failures": int(failures),
                "failures_per_s": round(failures_delta * rate, 2),
                "latency_ms": last_latency.get(endpoint, {"p50": None, "p90": None, "p99": None}),
                "backlog": int(backlog),
                "dead_letters": int(dead),
                "dead_lettered": int(dead_lettered),
            }
        )
    return out
