"""The monitor's per-endpoint webhook figures from the hooks instances' Prometheus pages (pure):
counters summed over instances, gauges not (every instance reads the same backlog), rates and
latency over the interval between two scrapes, a restarted instance counted from zero."""

from __future__ import annotations

from roomstream_monitor.hookstats import endpoints_view, parse_page


def page(delivered: float, failures_500: float, failures_timeout: float, *, backlog: float,
         dead: float, fast: float, slow: float, endpoint: str = "ep") -> str:  # fmt: skip
    """A hooks `/metrics` page as the OpenTelemetry Prometheus exporter writes it (one endpoint):
    `fast` POSTs within 10 ms, `slow` more within 1 s."""
    lbl = f'endpoint="{endpoint}"'
    total = fast + slow
    return f"""# HELP roomstream_hooks_events_delivered_total Events
# TYPE roomstream_hooks_events_delivered_total counter
roomstream_hooks_events_delivered_total{{{lbl}}} {delivered}
# HELP roomstream_hooks_delivery_failures_total Failed POSTs
# TYPE roomstream_hooks_delivery_failures_total counter
roomstream_hooks_delivery_failures_total{{{lbl},reason="500"}} {failures_500}
roomstream_hooks_delivery_failures_total{{{lbl},reason="timeout"}} {failures_timeout}
# HELP roomstream_hooks_delivery_seconds Time of one POST
# TYPE roomstream_hooks_delivery_seconds histogram
roomstream_hooks_delivery_seconds_bucket{{{lbl},le="0.01"}} {fast}
roomstream_hooks_delivery_seconds_bucket{{{lbl},le="1.0"}} {total}
roomstream_hooks_delivery_seconds_bucket{{{lbl},le="+Inf"}} {total}
roomstream_hooks_delivery_seconds_count{{{lbl}}} {total}
roomstream_hooks_delivery_seconds_sum{{{lbl}}} 1.0
# HELP roomstream_hooks_backlog Events waiting
# TYPE roomstream_hooks_backlog gauge
roomstream_hooks_backlog{{{lbl}}} {backlog}
# HELP roomstream_hooks_dead_letters Dead letters
# TYPE roomstream_hooks_dead_letters gauge
roomstream_hooks_dead_letters{{{lbl}}} {dead}
# HELP roomstream_gateway_frames_out_total not a hooks metric
# TYPE roomstream_gateway_frames_out_total counter
roomstream_gateway_frames_out_total 5
"""


def test_a_page_is_read_per_endpoint() -> None:
    parsed = parse_page(page(10, 2, 1, backlog=4, dead=3, fast=5, slow=1))
    assert set(parsed) == {"ep"}
    c = parsed["ep"]
    assert (c.delivered, c.failures, c.backlog, c.dead_letters) == (10, 3, 4, 3)
    assert c.latency == {0.01: 5, 1.0: 6, float("inf"): 6}
    assert parse_page("") == {}


def test_two_instances_two_scrapes() -> None:
    first = {
        "hooks-a": parse_page(page(100, 1, 0, backlog=7, dead=0, fast=10, slow=0)),
        "hooks-b": parse_page(page(50, 0, 0, backlog=7, dead=0, fast=5, slow=0)),
    }
    last: dict[str, dict[str, float | None]] = {}
    (view,) = endpoints_view(first, {}, 0.0, last)
    assert (view["delivered"], view["failures"]) == (150, 1)
    assert view["delivered_per_s"] == 0.0  # no earlier scrape: no rate yet
    assert view["backlog"] == 7  # the same gauge on both instances: not summed
    assert view["latency_ms"]["p50"] is not None and view["latency_ms"]["p99"] <= 10.0

    second = {
        "hooks-a": parse_page(page(140, 3, 1, backlog=2, dead=5, fast=10, slow=10)),
        # hooks-b restarted: its counters start again from zero
        "hooks-b": parse_page(page(20, 0, 0, backlog=2, dead=5, fast=0, slow=0)),
    }
    (view,) = endpoints_view(second, first, 2.0, last)
    assert (view["delivered"], view["failures"]) == (160, 4)
    assert view["delivered_per_s"] == (40 + 20) / 2.0
    assert view["failures_per_s"] == 3 / 2.0
    assert (view["backlog"], view["dead_letters"]) == (2, 5)
    # Only the interval's POSTs count: the 10 slow ones (10 ms … 1 s), not the earlier fast ones.
    assert view["latency_ms"]["p50"] > 10.0

    # An interval without a POST keeps the last percentiles.
    (idle,) = endpoints_view(second, second, 2.0, last)
    assert idle["latency_ms"] == view["latency_ms"] and idle["delivered_per_s"] == 0.0


def test_endpoints_are_listed_by_id() -> None:
    pages = {
        "h": {**parse_page(page(1, 0, 0, backlog=0, dead=0, fast=1, slow=0, endpoint="zz")),
              **parse_page(page(2, 0, 0, backlog=0, dead=0, fast=1, slow=0, endpoint="aa"))},
    }  # fmt: skip
    assert [v["endpoint"] for v in endpoints_view(pages, {}, 1.0, {})] == ["aa", "zz"]
