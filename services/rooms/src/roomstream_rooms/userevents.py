"""Per-user events: `POST /users/{user}/events` appends one event to the user's own stream.

The stream (`roomstream_contracts.userstream`) is sequenced and replayed like a room: the one
append script gives the event the stream's next seq, every gateway delivers it to every socket of
the user (a `user` frame), and a client that reconnects with `user_since` gets what it missed.

| call | who | body → answer |
|---|---|---|
| `POST /users/{user}/events` | service | `{"kind", "data"?: object, "id"?: idempotency id}` → 201 `{"user", "seq", "id"}` (200 with the original answer for a repeated `id`) |

The idempotency id is scoped to the addressed user (a retried call with the same id appends
nothing, whatever its body). It is kept apart from the user's own client message ids: its dedupe
key starts with U+0000, which no client id may hold.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.events import Envelope, EventKind, UserEventData
from roomstream_contracts.ids import ClientMessageId, new_event_id, now_ms
from roomstream_contracts.userstream import (
    MAX_USER_EVENT_DATA_BYTES,
    json_problem,
    user_event_kind_problem,
    user_stream,
)
from roomstream_kit.auth import TokenVerifier
from roomstream_kit.eventlog import AppendStatus, EventLog
from roomstream_kit.http import ApiError, JSONResponse, authenticate, json_body
from roomstream_kit.service import on_state
from roomstream_kit.telemetry import inject_context
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import _user_param

DEDUPE_PREFIX = "\x00"
"""Prefix of the dedupe id of a user event: no client message id holds U+0000, so a user's own
sends can never collide with (or pre-empt) the events addressed to them."""


class UserEventBody(BaseModel):
    """Body of `POST /users/{user}/events`. Strict: a number where a string belongs is a
    `bad_request`."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: ClientMessageId | None = None


def user_event_envelope(user: str, body: UserEventBody, by: str) -> Envelope:
    """The envelope of a user event, or `ApiError` for a kind or data the log must not take."""
    problem = user_event_kind_problem(body.kind)
    if problem:
        raise ApiError(ErrorCode.BAD_REQUEST, problem)
    problem = json_problem(body.data)
    if problem:
        raise ApiError(ErrorCode.BAD_REQUEST, f"data: {problem}")
    if len(orjson.dumps(body.data)) > MAX_USER_EVENT_DATA_BYTES:
        raise ApiError(ErrorCode.TOO_LARGE, f"data over {MAX_USER_EVENT_DATA_BYTES} bytes of JSON")
    return Envelope(
        id=new_event_id(),
        kind=EventKind.USER_EVENT,
        room=user_stream(user),
        user=user,
        ts=now_ms(),
        data=UserEventData(kind=body.kind, data=body.data, by=by).model_dump(),
        trace=inject_context(),
    )


class UserEventsApi:
    def __init__(self, *, verifier: TokenVerifier, eventlog: EventLog) -> None:
        self.verifier = verifier
        self.eventlog = eventlog

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; the endpoint runs on `request.state.user_events_api`."""
        return [
            Route(
                "/users/{user}/events", on_state("user_events_api", cls.publish), methods=["POST"]
            )
        ]

    async def publish(self, request: Request) -> Response:
        user = _user_param(request)
        claims = await authenticate(request, self.verifier)
        if not claims.is_service:
            raise ApiError(ErrorCode.FORBIDDEN, "only a service may publish user events")
        raw = await json_body(request)
        if not isinstance(raw, dict):
            raise ApiError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
        body = UserEventBody.model_validate(raw)
        env = user_event_envelope(user, body, claims.sub)
        dedupe = DEDUPE_PREFIX + body.id if body.id else None
        result = await self.eventlog.append(env, dedupe_id=dedupe)
        if not result.ok:  # nothing else can refuse an append without checks
            raise ApiError(ErrorCode.INTERNAL, f"append answered {result.status}")
        status = 200 if result.status == AppendStatus.DUPLICATE else 201
        return JSONResponse(
            {"user": user, "seq": result.seq, "id": result.event_id}, status_code=status
        )
