"""AsyncAPI 3.0 document of the log (`docs/asyncapi.yaml`), generated from the models here.

A back end in another language can consume the log directly: the shard streams and their entry
fields, and the envelope and data payload of every event kind. `roomstream schema` writes it;
`tests/contracts/test_asyncapi.py` fails when a model changes and the document does not. The file
is JSON, which is YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from .events import DATA_MODELS, SCHEMA_VERSION, SEQUENCED_KINDS, Envelope, EventKind
from .streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM

REF = "#/components/schemas/{model}"


def _data_name(kind: EventKind) -> str:
    return f"{kind.value}_data"


def asyncapi_document() -> dict[str, Any]:
    models = [(Envelope, "validation")] + [
        (model, "validation") for model in dict.fromkeys(DATA_MODELS.values())
    ]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    messages: dict[str, Any] = {}
    for kind, model in DATA_MODELS.items():
        schemas[_data_name(kind)] = {"$ref": REF.format(model=model.__name__)}
        payload = {
            "allOf": [
                {"$ref": REF.format(model="Envelope")},
                {
                    "type": "object",
                    "properties": {
                        "kind": {"const": kind.value},
                        "data": {"$ref": REF.format(model=_data_name(kind))},
                    },
                    "required": ["seq"] if kind in SEQUENCED_KINDS else [],
                },
            ]
        }
        messages[kind.value] = {
            "name": kind.value,
            "title": kind.value,
            "summary": (model.__doc__ or kind.value).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": payload,
        }
    entry = {
        "type": "object",
        "description": "The fields of one stream entry (XADD by the append script).",
        "required": [FIELD_ROOM.decode(), FIELD_KIND.decode(), FIELD_EVENT.decode()],
        "properties": {
            FIELD_ROOM.decode(): {"type": "string", "description": "room (empty: none)"},
            FIELD_KIND.decode(): {"enum": [k.value for k in EventKind]},
            FIELD_EVENT.decode(): {
                "type": "string",
                "description": "the envelope as JSON (the message payload)",
            },
        },
    }
    schemas["LogEntry"] = entry
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "roomstream log",
            "version": str(SCHEMA_VERSION),
            "description": (
                "The event log: one Redis stream per shard. A room's events go to shard "
                "crc32(room) % shards; events without a room to crc32('user:ID') or "
                "crc32('node:ID'). Consume with a consumer group (XREADGROUP), acknowledge "
                "(XACK) after handling, de-duplicate by envelope id. Generated from "
                "roomstream_contracts (do not edit)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "log": {
                "address": "{namespace}:log:{shard}",
                "title": "a shard of the log",
                "parameters": {
                    "namespace": {"description": "ROOMSTREAM_NAMESPACE (default rs)"},
                    "shard": {
                        "description": (
                            "the shard's hash tag: {N} with the braces, N in "
                            "0 .. ROOMSTREAM_SHARDS - 1 (the key of shard 3 is rs:log:{3})"
                        )
                    },
                },
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in messages},
            }
        },
        "operations": {
            "consumeLog": {
                "action": "receive",
                "channel": {"$ref": "#/channels/log"},
                "summary": "Read entries of a shard with a consumer group",
                "messages": [{"$ref": f"#/channels/log/messages/{k}"} for k in messages],
            }
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def render() -> bytes:
    return (
        orjson.dumps(asyncapi_document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def export_asyncapi(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render())
    return path
