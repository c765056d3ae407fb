"""The telemetry and log plumbing: exporters chosen by the standard OTel variables (run in child
processes, as a service would), resource attributes, JSON log lines with trace ids."""

from __future__ import annotations

import http.server
import io
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry import trace
from roomstream_contracts.events import Envelope, EventKind
from roomstream_kit.logs import JsonFormatter, event_fields
from roomstream_kit.telemetry import build_resource, trace_id_of

SNIPPET = """
from roomstream_kit.telemetry import setup_telemetry, shutdown_telemetry, tracer
setup_telemetry("probe", "probe-1")
with tracer("probe").start_as_current_span("probe.work"):
    pass
shutdown_telemetry()
"""


def run_probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", SNIPPET], env=full, capture_output=True, text=True, timeout=60
    )


def test_console_exporter_prints_spans_with_resource() -> None:
    out = run_probe({"OTEL_TRACES_EXPORTER": "console"})
    assert out.returncode == 0, out.stderr
    span = orjson.loads(out.stdout[out.stdout.index("{") :])
    assert span["name"] == "probe.work"
    assert span["resource"]["attributes"]["service.name"] == "roomstream-probe"
    assert span["resource"]["attributes"]["service.instance.id"] == "probe-1"


def test_none_exports_nothing_and_trace_file_gets_json_lines(tmp_path: Path) -> None:
    out = run_probe({"OTEL_TRACES_EXPORTER": "none"})
    assert out.returncode == 0 and out.stdout == ""
    spans = tmp_path / "spans.jsonl"
    out = run_probe({"ROOMSTREAM_TRACE_FILE": str(spans)})
    assert out.returncode == 0, out.stderr
    (line,) = spans.read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["name"] == "probe.work" and len(record["trace_id"]) == 32
    assert record["service"] == "roomstream-probe"


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        self.received.append((self.path, self.headers.get("content-type", ""), len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    server.shutdown()


def test_otlp_exporter_posts_to_the_configured_endpoint(
    collector: tuple[str, list[tuple[str, str, int]]],
) -> None:
    endpoint, received = collector
    out = run_probe(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "custom-name",
        }
    )
    assert out.returncode == 0, out.stderr
    assert received, "no OTLP request arrived"
    path, content_type, size = received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf" and size > 0


def test_resource_attributes_and_env_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    attrs = build_resource("rooms", "rooms-7").attributes
    assert attrs["service.name"] == "roomstream-rooms"
    assert attrs["service.namespace"] == "roomstream"
    assert attrs["service.instance.id"] == "rooms-7"
    assert attrs["deployment.environment"] == "test"
    assert attrs["process.pid"] == os.getpid()


def test_json_log_lines_carry_event_and_trace_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway", "gw-1"))
    logger = logging.getLogger("tests.observability.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    env = Envelope(
        id="e1",
        kind=EventKind.MESSAGE,
        room="r1",
        user="u1",
        node="gw-1",
        conn="c9",
        ts=1,
        seq=4,
        trace={"traceparent": traceparent},
    )
    assert trace_id_of(env.trace) == "0af7651916cd43dd8448eb211c80319c"
    logger.info("delivered", extra=event_fields(env))
    span = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x1234, span_id=0x99, is_remote=False, trace_flags=trace.TraceFlags(1)
        )
    )
    with trace.use_span(span):
        logger.warning("in a span", extra={"conn": "c1"})
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "delivered" and first["level"] == "info"
    assert first["service"] == "gateway" and first["node"] == "gw-1"
    assert first["event_id"] == "e1" and first["room"] == "r1" and first["user"] == "u1"
    assert first["conn"] == "c9" and first["seq"] == 4
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert second["conn"] == "c1" and second["level"] == "warning"
    assert second["trace_id"] == f"{0x1234:032x}" and second["span_id"] == f"{0x99:016x}"


def test_span_if_recorded_carries_a_trace_without_building_spans(monkeypatch) -> None:
    """With no span processor (the default), `span_if_recorded` builds no SDK span but the
    events appended inside still carry a sampled trace context, in the trace that is current."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span
    from roomstream_kit import telemetry

    monkeypatch.setattr(telemetry, "_configured", True)
    monkeypatch.setattr(telemetry, "_span_processors", 0)
    t = telemetry.tracer("test")
    with telemetry.span_if_recorded(t, "x") as span:
        assert not span.is_recording()
        first = telemetry.inject_context()["traceparent"]
    with telemetry.span_if_recorded(t, "x"):
        second = telemetry.inject_context()["traceparent"]
    assert first.endswith("-01") and second.endswith("-01")  # sampled
    assert first.split("-")[1] != second.split("-")[1]  # a new trace each time
    parent = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with use_span(NonRecordingSpan(parent)), telemetry.span_if_recorded(t, "x"):
        inner = telemetry.inject_context()["traceparent"].split("-")
    assert int(inner[1], 16) == 0xABC and int(inner[2], 16) != 0xDEF  # same trace, own span
    assert telemetry.inject_context() == {}  # nothing current outside
