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
    for noisy in ("uvicorn.access", "faststream", "websockets.server", "httpx", "httpcore"):
        # httpx logs every request at INFO (the monitor's /metrics scrapes, service calls).
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    if "faststream" in sys.modules:  # else `LogConsumer` does it (processes without one
        tame_faststream_logging()  # never import FastStream)


class _OneLine(logging.Filter):
    """Turns a record's traceback into one `error` field: FastStream logs every failed read
    (e.g. each poll while Redis restarts) with a full traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            record.__dict__["error"] = error
            record.msg = f"{record.getMessage()}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_FASTSTREAM_LOGGER = "roomstream.faststream"


def tame_faststream_logging() -> logging.Logger:
    """The logger to give FastStream brokers: it propagates to the project's JSON handler, and
    tracebacks become one line. Also strips the handler FastStream installs on its own
    `faststream` logger at import (non-JSON, `propagate = False`), which would otherwise print
    plain-text lines whatever `setup_logging` did before FastStream was imported."""
    import faststream  # noqa: F401  (its import installs the handler removed below)

    for name in ("faststream", "faststream.access"):
        own = logging.getLogger(name)
        own.handlers[:] = []
        own.propagate = True
        if own.level < logging.WARNING:
            own.setLevel(logging.WARNING)
        if not any(isinstance(f, _OneLine) for f in own.filters):
            own.addFilter(_OneLine())
    logger = logging.getLogger(_FASTSTREAM_LOGGER)
    # FastStream's own INFO lines are chatter about its tasks ("callback for Task-N is being
    # executed...", on every subscriber restart); its warnings and errors are kept.
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    return logger
