"""The server publish API: messages, edits and deletes over HTTP (docs/rooms.md, "Publish API";
docs/openapi/rooms.yaml).

A back end publishes with a service token (to any room, as itself or on behalf of a user); a
user token publishes as its own `sub` under the rules of a socket `send` (member of the room).
Every call goes through `EventLog.append`, the one definition of the append (the atomic
`APPEND_SCRIPT`): the same room check, roster check, owner check and per-user idempotency by
client message id as a socket's `send` / `edit` / `delete`, so a retried call with the same `id`
answers the first call's `{"room", "seq", "id"}` and appends nothing. Appends of concurrent
requests and of a batch's items go to Redis as one pipeline (`roomstream_kit.autopipe`).

An answer is given as soon as the event is in the log, like a socket `ack` (messages are not part
of this service's projection: there is nothing to wait for).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from roomstream_contracts.codec import describe_validation_error
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.events import (
    Envelope,
    EventKind,
    MessageData,
    MessageDeletedData,
    MessageEditedData,
)
from roomstream_contracts.frames import MAX_SEQ
from roomstream_contracts.ids import (
    ClientMessageId,
    RoomId,
    SafeStr,
    UserId,
    new_event_id,
    now_ms,
)
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.auth import TokenVerifier, service_token
from roomstream_kit.autopipe import AutoPipeline
from roomstream_kit.eventlog import (
    Access,
    AppendResult,
    AppendStatus,
    EventLog,
    OwnerCheck,
    RoomCheck,
)
from roomstream_kit.http import ApiError, JSONResponse, authenticate, json_body
from roomstream_kit.redis import AnyRedis
from roomstream_kit.service import on_state
from roomstream_kit.telemetry import inject_context, tracer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import roster
from .api import _room_param
from .metrics import RoomsMetrics
from .settings import RoomsSettings

_tracer = tracer("roomstream.rooms")

REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to `true` on the answer to a publish whose `id` was seen before (nothing appended)."""


class PublishBody(BaseModel):
    """Body of `POST /rooms/{room}/messages`. Strict: a number where a string belongs is a
    `bad_request`; `id` and `text` take exactly what a socket `send` takes."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    text: SafeStr
    id: ClientMessageId
    """Client message id: the idempotency key, unique per user (shared with the user's sends)."""
    user: UserId | None = None
    """Service tokens only: publish on behalf of this user (default: the token's `sub`)."""


class BatchItem(PublishBody):
    """One message of `POST /messages`."""

    room: RoomId


class EditBody(BaseModel):
    """Body of `PATCH /rooms/{room}/messages/{seq}`."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    text: SafeStr


@dataclass(frozen=True, slots=True)
class Author:
    """Who an API event is appended as, and which roster check the append makes."""

    user: str
    access: Access


def author_of(claims: TokenClaims, on_behalf: str | None) -> Author:
    """A service publishes anywhere, as itself (its token's `sub`) or as `on_behalf`; a user
    token publishes as its `sub` only, and only where it is a member (like a socket `send`)."""
    if claims.is_service:
        return Author(on_behalf or claims.sub, Access.NONE)
    if on_behalf is not None and on_behalf != claims.sub:
        raise ApiError(ErrorCode.FORBIDDEN, "only a service token may publish as another user")
    return Author(claims.sub, Access.MEMBER)


def publish_answer(result: AppendResult, room: str, cid: str) -> dict[str, Any]:
    """The socket `ack` of a `send` as a body `{"room", "seq", "id"}`, or the error it is."""
    if result.status == AppendStatus.NO_ROOM:
        raise ApiError(ErrorCode.NOT_FOUND, f"no room {room!r}")
    if result.status == AppendStatus.FORBIDDEN:
        raise ApiError(ErrorCode.FORBIDDEN, f"not a member of room {room!r}")
    if result.status == AppendStatus.ID_IN_USE:
        raise ApiError(
            ErrorCode.BAD_REQUEST,
            f"id {cid!r} is already used by a send to room {result.room!r} that has not "
            "succeeded; retry it there, or use a new id",
        )
    if not result.ok or result.seq is None:
        raise ApiError(ErrorCode.UNAVAILABLE, f"append answered {result.status.value}; retry")
    # A repeated id answers the original ack, also when it was another room's.
    return {"room": result.room or room, "seq": result.seq, "id": result.event_id}


def change_answer(result: AppendResult, room: str, target: int) -> dict[str, Any]:
    """The `ack` of an edit / delete, or the error it is (the socket's rules)."""
    if result.status == AppendStatus.NO_ROOM:
        raise ApiError(ErrorCode.NOT_FOUND, f"no room {room!r}")
    if result.status == AppendStatus.FORBIDDEN:
        raise ApiError(ErrorCode.FORBIDDEN, f"not a member of room {room!r}")
    if result.status in (AppendStatus.NOT_OWNER, AppendStatus.NOT_MESSAGE):
        raise ApiError(ErrorCode.FORBIDDEN, "not your message")
    if result.status == AppendStatus.DELETED:
        # Deleted is final: no edit (its text would go out live) and no second delete.
        raise ApiError(ErrorCode.NOT_FOUND, f"message {target} was deleted")
    if not result.ok or result.seq is None:
        raise ApiError(ErrorCode.UNAVAILABLE, f"append answered {result.status.value}; retry")
    return {"room": room, "seq": result.seq, "id": result.event_id}


def error_item(code: ErrorCode, message: str) -> dict[str, Any]:
    """A failed item of a batch: the HTTP error body of that item alone."""
    return {"error": {"code": code.value, "message": message}}


class HistoryLookup:
    """One event of a room from the history service (an edit / delete target that has left the
    room's recent buffer in Redis), with this service's service token."""

    def __init__(self, history_url: str, token: str, timeout_s: float = 5.0) -> None:
        self.client = httpx.AsyncClient(
            base_url=history_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def event(self, room: str, seq: int) -> dict[str, Any] | None:
        try:
            r = await self.client.get(
                f"/rooms/{room}/messages", params={"after": seq - 1, "limit": 1}
            )
        except httpx.HTTPError as exc:
            raise ApiError(ErrorCode.UNAVAILABLE, f"history service unreachable: {exc}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ApiError(ErrorCode.UNAVAILABLE, f"history service answered {r.status_code}")
        try:
            events = r.json().get("events") or []
            first = events[0] if events else None
        except (ValueError, AttributeError, TypeError, KeyError):
            raise ApiError(ErrorCode.UNAVAILABLE, "history service answered no page") from None
        return first if isinstance(first, dict) and first.get("seq") == seq else None

    async def aclose(self) -> None:
        await self.client.aclose()


class PublishApi:
    """The endpoints of the publish API (`routes`) and their authorization (`author_of`)."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        eventlog: EventLog,
        redis: AnyRedis,
        keys: StreamKeys,
        pool: asyncpg.Pool,
        history: HistoryLookup,
        metrics: RoomsMetrics,
        node: str,
        max_text_chars: int,
        batch_max: int,
        max_body_bytes: int,
    ) -> None:
        self.verifier = verifier
        self.eventlog = eventlog
        self.redis = redis
        self.keys = keys
        self.pool = pool
        self.history = history
        self.metrics = metrics
        self.node = node
        self.max_text_chars = max_text_chars
        self.batch_max = batch_max
        self.max_body_bytes = max_body_bytes

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; each endpoint runs on `request.state.publish_api`."""
        on = "publish_api"
        return [
            Route("/rooms/{room}/messages", on_state(on, cls.publish), methods=["POST"]),
            Route("/messages", on_state(on, cls.publish_batch), methods=["POST"]),
            Route("/rooms/{room}/messages/{seq}", on_state(on, cls.edit), methods=["PATCH"]),
            Route("/rooms/{room}/messages/{seq}", on_state(on, cls.delete), methods=["DELETE"]),
        ]

    # -- endpoints ------------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = _room_param(request)
        body = PublishBody.model_validate(await self._object(request))
        answer, replayed = await self._publish(claims, room, body)
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return JSONResponse(answer, headers=headers)

    async def publish_batch(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        obj = await self._object(request)
        items = obj.get("messages")
        if not isinstance(items, list):
            raise ApiError(ErrorCode.BAD_REQUEST, "messages: a list of messages is required")
        if len(items) > self.batch_max:
            raise ApiError(ErrorCode.TOO_LARGE, f"at most {self.batch_max} messages per call")
        outcomes = await asyncio.gather(
            *(self._batch_item(claims, raw) for raw in items), return_exceptions=True
        )
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # A dependency failed (Redis down): the whole call is `unavailable`; retrying it
                # with the same ids appends only what is still missing.
                raise outcome
            results.append(outcome)
        return JSONResponse({"results": results})

    async def edit(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room, target = _room_param(request), _seq_param(request)
        body = EditBody.model_validate(await self._object(request))
        self._check_text(body.text)
        data = MessageEditedData(target_seq=target, text=body.text).model_dump()
        answer = await self._change(claims, room, target, EventKind.MESSAGE_EDITED, data)
        return JSONResponse(answer)

    async def delete(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room, target = _room_param(request), _seq_param(request)
        data = MessageDeletedData(target_seq=target).model_dump()
        answer = await self._change(claims, room, target, EventKind.MESSAGE_DELETED, data)
        return JSONResponse(answer)

    # -- appends --------------------------------------------------------------------------------

    async def _publish(
        self, claims: TokenClaims, room: str, body: PublishBody
    ) -> tuple[dict[str, Any], bool]:
        """Append one message; (the answer, whether it is a replay of an earlier call)."""
        self._check_text(body.text)
        author = author_of(claims, body.user)
        with _tracer.start_as_current_span("rooms.publish", attributes={"room": room}):
            env = self._envelope(
                EventKind.MESSAGE,
                room,
                author.user,
                MessageData(text=body.text, client_id=body.id).model_dump(),
            )
            result = await self._append(
                env, room_check=RoomCheck.EXISTS, dedupe_id=body.id, access=author.access
            )
        answer = publish_answer(result, room, body.id)
        replayed = result.status == AppendStatus.DUPLICATE
        if not replayed:
            self.metrics.published.add(1, {"kind": EventKind.MESSAGE.value})
        return answer, replayed

    async def _batch_item(self, claims: TokenClaims, raw: Any) -> dict[str, Any]:
        """One batch item's result: its answer, or its own error (bad input, unknown room, not a
        member...). A dependency failure is raised: it fails the whole call."""
        try:
            if not isinstance(raw, dict):
                raise ApiError(ErrorCode.BAD_REQUEST, "each message must be a JSON object")
            item = BatchItem.model_validate(raw)
            answer, _ = await self._publish(claims, item.room, item)
            return answer
        except ValidationError as exc:
            return error_item(ErrorCode.BAD_REQUEST, describe_validation_error(exc))
        except ApiError as exc:
            if exc.code == ErrorCode.UNAVAILABLE:
                raise
            return error_item(exc.code, exc.message)

    async def _change(
        self, claims: TokenClaims, room: str, target: int, kind: EventKind, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Edit or delete. A user token: its own messages, as a member (the socket's rules: the
        owner check is atomic with the append). A service token: any message of the room; the
        target is read first (its kind never changes), and whether it was deleted is checked
        atomically with the append."""
        span = "rooms.edit" if kind == EventKind.MESSAGE_EDITED else "rooms.delete"
        with _tracer.start_as_current_span(span, attributes={"room": room}):
            env = self._envelope(kind, room, claims.sub, data)
            if claims.is_service:
                await self._require_message(room, target, None)
                result = await self._append(env, room_check=RoomCheck.EXISTS)
            else:
                result = await self._append(
                    env,
                    room_check=RoomCheck.EXISTS,
                    owner_check=OwnerCheck(target, claims.sub),
                    access=Access.MEMBER,
                )
                if result.status == AppendStatus.UNKNOWN_TARGET:
                    # The target left the recent buffer: check it against history, then append.
                    await self._require_message(room, target, claims.sub)
                    result = await self._append(
                        env, room_check=RoomCheck.EXISTS, access=Access.MEMBER
                    )
        answer = change_answer(result, room, target)
        self.metrics.published.add(1, {"kind": kind.value})
        return answer

    async def _require_message(self, room: str, seq: int, author: str | None) -> None:
        """The room's event `seq` must be a message (by `author`, unless None): read from the
        recent buffer, else from the history service."""
        found = await self.redis.xrange(self.keys.recent(room), f"{seq}-0", f"{seq}-0")
        event: dict[str, Any] | None
        if found:
            fields: dict[Any, Any] = found[0][1] or {}
            event = orjson.loads(fields[b"e"])
        else:
            current = await self.redis.hget(self.keys.seq(self.keys.room_shard(room)), room)
            if current is None:
                raise ApiError(ErrorCode.NOT_FOUND, f"no room {room!r}")
            # Past the room's last seq there is nothing to ask history for.
            event = await self.history.event(room, seq) if seq <= int(current) else None
        if event is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no event {seq} in {room!r}")
        if event.get("kind") != EventKind.MESSAGE or (
            author is not None and event.get("user") != author
        ):
            raise ApiError(ErrorCode.FORBIDDEN, "not your message" if author else "not a message")

    async def _append(self, env: Envelope, **options: Any) -> AppendResult:
        """`EventLog.append`; a room that predates the roster is seeded, then retried once."""
        result = await self.eventlog.append(env, **options)
        if result.status == AppendStatus.UNSEEDED:
            answer = await roster.seed_room(self.pool, self.eventlog, env.room or "")
            if answer in ("ok", "seeded"):
                result = await self.eventlog.append(env, **options)
        if result.status == AppendStatus.UNSEEDED:
            raise ApiError(ErrorCode.UNAVAILABLE, "room membership is being set up; retry")
        return result

    def _envelope(self, kind: EventKind, room: str, user: str, data: dict[str, Any]) -> Envelope:
        return Envelope(
            id=new_event_id(),
            kind=kind,
            room=room,
            user=user,
            node=self.node,
            ts=now_ms(),
            data=data,
            trace=inject_context(),
        )

    def _check_text(self, text: str) -> None:
        if len(text) > self.max_text_chars:
            raise ApiError(ErrorCode.TOO_LARGE, f"text over {self.max_text_chars} characters")

    async def _object(self, request: Request) -> dict[str, Any]:
        obj = await json_body(request, self.max_body_bytes)
        if not isinstance(obj, dict):
            raise ApiError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
        return obj


def _seq_param(request: Request) -> int:
    raw = str(request.path_params["seq"])
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_SEQ:
        raise ApiError(ErrorCode.BAD_REQUEST, f"seq is an integer from 1 to {MAX_SEQ}")
    return int(raw)


def publish_api(
    settings: RoomsSettings,
    node: str,
    redis: AnyRedis,
    pool: asyncpg.Pool,
    verifier: TokenVerifier,
    metrics: RoomsMetrics,
) -> PublishApi:
    """The publish API of this process: its appends pipelined on a single Redis server (redis-py's
    own calls on a cluster), history reached with the service token."""
    runner = AutoPipeline(redis) if isinstance(redis, Redis) else None
    eventlog = EventLog.from_settings(
        redis,
        settings,
        script=runner.script if runner else None,
        command=runner.command if runner else None,
    )
    return PublishApi(
        verifier=verifier,
        eventlog=eventlog,
        redis=redis,
        keys=settings.keys,
        pool=pool,
        history=HistoryLookup(settings.history_url, service_token(settings)),
        metrics=metrics,
        node=node,
        max_text_chars=settings.max_text_chars,
        batch_max=settings.publish_batch_max,
        max_body_bytes=settings.publish_max_body_bytes,
    )
