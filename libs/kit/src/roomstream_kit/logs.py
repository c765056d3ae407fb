"""Structured logging: one JSON object per line on stderr, level from `ROOMSTREAM_LOG_LEVEL`.

Fields passed with `extra={...}` (node, conn, user, room, event_id, trace_id) become keys of the
line; `event_fields(envelope)` builds that `extra` for an event. The current OpenTelemetry trace id
and span id are added when a span is active (an explicit `trace_id` in `extra` wins).
`ROOMSTREAM_LOG_FORMAT=text` gives plain lines for people.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, node: str) -> None:
        super().__init__()
        self.service = service
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
            "node": self.node,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def event_fields(envelope: Any) -> dict[str, Any]:
    """`extra` for a log line about an event envelope: node, conn, user, room, event id, trace id.

    Takes any object with the `Envelope` attributes; fields that are unset are left out.
    """
    fields: dict[str, Any] = {"event_id": envelope.id, "kind": str(envelope.kind)}
    for name in ("room", "user", "conn", "seq"):
        value = getattr(envelope, name, None)
        if value is not None:
            fields[name] = value
    if getattr(envelope, "node", None):
        fields["origin_node"] = envelope.node
    traceparent = (getattr(envelope, "trace", None) or {}).get("traceparent", "")
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        fields["trace_id"] = parts[1]
    return fields


def setup_logging(service: str, node: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service, node))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "faststream", "websockets.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
