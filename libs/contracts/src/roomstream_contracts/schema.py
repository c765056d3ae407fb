"""JSON Schema export of every client frame, server frame and event (`roomstream schema`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from .events import DATA_MODELS, Envelope
from .frames import Command, ServerFrame


def all_schemas() -> dict[str, dict[str, Any]]:
    """Schema documents by file name."""
    events: dict[str, Any] = {
        "envelope": Envelope.model_json_schema(),
        "data": {kind.value: model.model_json_schema() for kind, model in DATA_MODELS.items()},
    }
    return {
        "client-frames.schema.json": TypeAdapter(Command).json_schema(),
        "server-frames.schema.json": TypeAdapter(ServerFrame).json_schema(),
        "events.schema.json": events,
    }


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema document into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in all_schemas().items():
        path = directory / name
        path.write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        written.append(path)
    return written
