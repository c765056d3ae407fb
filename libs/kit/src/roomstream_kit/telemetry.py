"""OpenTelemetry set-up: metrics served as Prometheus text, traces by the standard OTel variables.

Metrics go through the OTel SDK's `PrometheusMetricReader`, which registers with
`prometheus_client`'s default registry; `/metrics` renders that registry.

Traces: `OTEL_TRACES_EXPORTER` = `otlp` | `console` | `none` (default `none`), the other
`OTEL_EXPORTER_OTLP_*` variables as the OTel specification says. `inject_context` /
`extract_context` carry the W3C trace context inside event envelopes.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_configured = False


def setup_telemetry(
    service: str, node: str, *, span_processor: SpanProcessor | None = None
) -> None:
    """Install the meter and tracer providers once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create(
        {"service.name": f"roomstream-{service}", "service.instance.id": node}
    )
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    )
    provider = TracerProvider(resource=resource)
    if span_processor is not None:
        provider.add_span_processor(span_processor)
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def meter(name: str) -> metrics.Meter:
    return metrics.get_meter(name)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_context() -> dict[str, str]:
    """The current trace context as a carrier dict for an envelope's `trace` field."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: dict[str, Any] | None) -> Context:
    """The trace context of an envelope, to parent a consumer's span on the producer's."""
    return propagate.extract(carrier or {})


def metrics_response() -> tuple[bytes, str]:
    """Body and content type of `/metrics`."""
    return generate_latest(), CONTENT_TYPE_LATEST
