"""Pure logic of the webhooks service: endpoints, the events they receive, batches, backoff."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from roomstream_contracts.events import Envelope
from roomstream_contracts.ids import is_room_id
from roomstream_kit.signing import secret_problem

HOOK_KINDS: tuple[str, ...] = (
    "message",
    "message_edited",
    "message_deleted",
    "member_joined",
    "member_left",
    "room_created",
    "online",
    "offline",
    "connected",
    "disconnected",
    "node_failed",
    "read",
)
"""Event kinds an endpoint may subscribe to (`read`: read markers, once the log carries them)."""

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_URL = 2000
MAX_ROOMS = 1000


class EndpointSpec(BaseModel):
    """An endpoint as a client gives it (POST / PUT body, or one item of the env list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    url: str = Field(max_length=MAX_URL)
    secret: str | None = None
    """None: keep the current one (PUT) or generate one (POST)."""
    kinds: list[str] = Field(min_length=1)
    rooms: list[str] | None = Field(default=None, max_length=MAX_ROOMS)
    """None: every room (and the events that have none: connected, node_failed, ...)."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _ID_RE.fullmatch(value):
            raise ValueError("id must be 1-64 of A-Z a-z 0-9 _ -")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]+", value):
            raise ValueError("url must be an http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and (problem := secret_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(HOOK_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {list(HOOK_KINDS)}")
        return sorted(set(value))

    @field_validator("rooms")
    @classmethod
    def _rooms(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [r for r in value if not is_room_id(r)]
        if bad:
            raise ValueError(f"invalid room ids {bad[:5]}")
        return sorted(set(value))


ENV_ENDPOINTS = TypeAdapter(list[EndpointSpec])


def parse_env_endpoints(raw: str) -> list[EndpointSpec]:
    """The `ROOMSTREAM_HOOKS_ENDPOINTS` list; every item needs an id and a secret (so that a
    restart keeps signing with the same key)."""
    if not raw.strip():
        return []
    specs = ENV_ENDPOINTS.validate_json(raw)
    for spec in specs:
        if spec.id is None or spec.secret is None:
            raise ValueError(
                "every endpoint of ROOMSTREAM_HOOKS_ENDPOINTS needs an id and a secret"
            )
    if len({s.id for s in specs}) != len(specs):
        raise ValueError("endpoint ids of ROOMSTREAM_HOOKS_ENDPOINTS must be unique")
    return specs


def event_json(envelope: Envelope) -> bytes:
    """One event as an endpoint receives it: the envelope without its schema version and trace
    context, absent fields left out. `id` is the event id receivers de-duplicate by."""
    body: dict[str, Any] = {"id": envelope.id, "kind": str(envelope.kind)}
    for name in ("room", "seq", "user", "node", "conn"):
        value = getattr(envelope, name)
        if value is not None:
            body[name] = value
    body["ts"] = envelope.ts
    body["data"] = envelope.data
    return orjson.dumps(body)


def batch_body(events: Sequence[str]) -> bytes:
    """The POST body of a batch: `{"type": "events", "events": [...]}` (events in order)."""
    return b'{"type":"events","events":[' + ",".join(events).encode() + b"]}"


def batch_id(event_ids: Sequence[str]) -> str:
    """`webhook-id` of a batch: the same for every attempt of the same events."""
    digest = hashlib.sha256("\n".join(event_ids).encode()).hexdigest()[:32]
    return f"msg_{digest}"


def backoff_s(attempt: int, base_s: float, max_s: float, rnd: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1 = first retry): full jitter over an exponential
    ceiling, `uniform(0, min(max_s, base_s * 2**(attempt-1)))`, never below a tenth of `base_s`
    (so a failing endpoint is not hammered)."""
    ceiling = min(max_s, base_s * 2 ** min(attempt - 1, 30))
    r = rnd or random
    return max(base_s / 10, r.uniform(0, ceiling))


def matches(kinds: Sequence[str], rooms: Sequence[str] | None, kind: str, room: str | None) -> bool:
    """Whether an endpoint (kinds, room filter) receives an event (same rule as the SQL)."""
    if kind not in kinds:
        return False
    return rooms is None or (room is not None and room in rooms)


def masked(secret: str) -> str:
    """A secret as listings show it."""
    return secret[:10] + "…" if len(secret) > 10 else "…"
