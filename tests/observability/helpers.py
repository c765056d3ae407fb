"""Scraping `/metrics` pages and comparing series before and after traffic."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(base_url: str) -> Samples:
    """Every sample of a `/metrics` page; the page must parse as Prometheus text."""
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(base_url + "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of series `name` whose labels include `labels` (0 when absent)."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)


def has(samples: Samples, name: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == name and want <= lbl for (n, lbl) in samples)


def moved(before: Samples, after: Samples, names: Mapping[str, dict[str, str]]) -> list[str]:
    """The series of `names` (name → label filter) that did NOT grow between the scrapes."""
    return [
        name
        for name, labels in names.items()
        if not total(after, name, **labels) > total(before, name, **labels)
    ]
