"""The HTTP API (PROTOCOL.md, "Rooms service"; docs/openapi/rooms.yaml).

Writes append an event through the log and answer once this service's projection has applied it
(read-your-write); reads go to the Redis read models first and to Postgres when a read model is
missing, refilling it. Authorization: a `service` token may do anything; a user token acts as that
user (docs/rooms.md, "Authorization").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import RoomId, SafeStr, UserId, is_room_id, user_id_problem
from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.auth import TokenVerifier
from roomstream_kit.eventlog import Access, AppendResult, AppendStatus, EventLog, RoomCheck
from roomstream_kit.http import ApiError, JSONResponse, authenticate, json_body
from roomstream_kit.rooms import room_created_envelope
from roomstream_kit.service import on_state
from roomstream_kit.telemetry import inject_context, tracer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import roster, store
from .applied import AppliedSeqs
from .metrics import RoomsMetrics
from .projection import membership_envelope
from .projector import Projector
from .readmodels import ReadModels

_tracer = tracer("roomstream.rooms")


class CreateRoomBody(BaseModel):
    """Body of `POST /rooms`. Strict: a number where a string belongs is a `bad_request`."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    id: RoomId | None = None
    name: SafeStr = Field(min_length=1, max_length=200)
    kind: Literal["public", "private"]
    members: list[UserId] = Field(default_factory=list, max_length=1000)
    owner: UserId | None = None
    """Extension: the owner of a room created with a service token (default: the token's sub)."""


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    name: str
    kind: str
    owner: str
    created_at: int

    @classmethod
    def of(cls, record: dict[str, str]) -> Room:
        return cls(
            record["id"],
            record["name"],
            record["kind"],
            record["owner"],
            int(record.get("created_at") or 0),
        )


def slug_for(name: str) -> str:
    """A new room id from a name: its slug plus 6 random hex digits."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:57] or "room"
    return f"{base}-{os.urandom(3).hex()}"


class RoomsApi:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        eventlog: EventLog,
        read_models: ReadModels,
        projector: Projector,
        applied: AppliedSeqs,
        pool: asyncpg.Pool,
        metrics: RoomsMetrics,
        apply_timeout_s: float,
    ) -> None:
        self.verifier = verifier
        self.eventlog = eventlog
        self.rm = read_models
        self.projector = projector
        self.applied = applied
        self.pool = pool
        self.metrics = metrics
        self.apply_timeout_s = apply_timeout_s

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; each endpoint runs on `request.state.rooms_api`."""
        return [
            Route("/rooms", on_state("rooms_api", cls.create_room), methods=["POST"]),
            Route("/rooms/{room}", on_state("rooms_api", cls.get_room), methods=["GET"]),
            Route(
                "/rooms/{room}/members", on_state("rooms_api", cls.list_members), methods=["GET"]
            ),
            Route(
                "/rooms/{room}/members/{user}",
                on_state("rooms_api", cls.add_member),
                methods=["PUT"],
            ),
            Route(
                "/rooms/{room}/members/{user}",
                on_state("rooms_api", cls.remove_member),
                methods=["DELETE"],
            ),
            Route("/users/{user}/rooms", on_state("rooms_api", cls.user_rooms), methods=["GET"]),
            Route("/rooms/{room}/presence", on_state("rooms_api", cls.presence), methods=["GET"]),
        ]

    # -- reads with fallback --------------------------------------------------------------------

    async def _room(self, room: str) -> Room:
        """The room record: Redis, else Postgres (refilling Redis), else `not_found`."""
        with self.metrics.timed_redis():
            record = await self.rm.room(room)
        if record is not None:
            return Room.of(record)
        with self.metrics.timed_postgres():
            row = await self.projector.refill_room(room)
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no room {room!r}")
        return Room.of(row.record())

    async def _seq(self, room: str) -> int:
        seq = await self.rm.room_seq(room)
        if seq is not None:
            return seq
        async with self.pool.acquire() as conn:
            return (await store.last_seqs(conn, [room])).get(room, 0)

    async def _is_member(self, room: str, user: str) -> bool:
        """Membership per the roster (the authority the append script keeps); for a room that
        predates the roster and cannot be seeded yet, the read model (call after `_room`)."""
        exists, kind, member = await self.eventlog.access(room, user)
        if exists and kind is None and await self._seed(room):
            exists, kind, member = await self.eventlog.access(room, user)
        if kind is None:
            return await self.rm.is_member(room, user)
        return member

    async def _seed(self, room: str) -> bool:
        """Seed the room's roster if it has none; whether it has one now."""
        with self.metrics.timed_postgres():
            answer = await roster.seed_room(self.pool, self.eventlog, room)
        return answer in ("ok", "seeded")

    async def _append_membership(self, env: Envelope, access: Access) -> AppendResult:
        """Append a membership event checked against the roster; a room that predates the roster
        is seeded first (`unseeded`), then the append is retried."""
        result = await self.eventlog.append(env, room_check=RoomCheck.EXISTS, access=access)
        if result.status == AppendStatus.UNSEEDED:
            if not await self._seed(env.room or ""):
                raise ApiError(ErrorCode.UNAVAILABLE, "room membership is being set up; retry")
            result = await self.eventlog.append(env, room_check=RoomCheck.EXISTS, access=access)
        if result.status == AppendStatus.UNSEEDED:
            raise ApiError(ErrorCode.UNAVAILABLE, "room membership is being set up; retry")
        return result

    async def _require_reader(self, claims: TokenClaims, room: Room) -> None:
        if (
            room.kind == "private"
            and not claims.is_service
            and not await self._is_member(room.id, claims.sub)
        ):
            raise ApiError(ErrorCode.FORBIDDEN, "members only: this room is private")

    # -- writes ---------------------------------------------------------------------------------

    async def _wait_applied(self, room: str, seq: int) -> None:
        if not await self.applied.wait(room, seq, self.apply_timeout_s):
            raise ApiError(
                ErrorCode.UNAVAILABLE,
                f"event {seq} of room {room!r} is in the log but not applied yet; retry the read",
            )

    # -- endpoints ------------------------------------------------------------------------------

    async def create_room(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        obj = await json_body(request)
        if not isinstance(obj, dict):
            raise ApiError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
        body = CreateRoomBody.model_validate(obj)
        if body.owner is not None and not claims.is_service and body.owner != claims.sub:
            raise ApiError(ErrorCode.FORBIDDEN, "only a service token may name another owner")
        owner = body.owner or claims.sub
        room = body.id or slug_for(body.name)
        with _tracer.start_as_current_span("rooms.create", attributes={"room": room}):
            env = room_created_envelope(
                room, body.name, body.kind, owner, body.members, inject_context()
            )
            result = await self.eventlog.append(env, room_check=RoomCheck.NEW)
        if result.status == AppendStatus.ROOM_EXISTS:
            raise ApiError(ErrorCode.CONFLICT, f"room {room!r} exists")
        assert result.seq is not None
        await self._wait_applied(room, result.seq)
        return JSONResponse(
            {
                "id": room,
                "name": body.name,
                "kind": body.kind,
                "owner": owner,
                "created_at": env.ts,
                "seq": result.seq,
                "members": sorted(dict.fromkeys([owner, *body.members])),
            },
            status_code=201,
        )

    async def get_room(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = await self._room(_room_param(request))
        await self._require_reader(claims, room)
        # Gateways ask here for a room whose roster is missing (created before rosters existed).
        exists, kind, _ = await self.eventlog.access(room.id, claims.sub)
        if exists and kind is None:
            await self._seed(room.id)
        return JSONResponse(
            {
                "id": room.id,
                "name": room.name,
                "kind": room.kind,
                "owner": room.owner,
                "created_at": room.created_at,
                "seq": await self._seq(room.id),
            }
        )

    async def list_members(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = await self._room(_room_param(request))
        await self._require_reader(claims, room)
        with self.metrics.timed_redis():
            members = await self.rm.members(room.id)
        return JSONResponse({"members": members})

    async def add_member(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = await self._room(_room_param(request))
        user = _user_param(request)
        if not (
            claims.is_service
            or claims.sub == room.owner
            or (room.kind == "public" and claims.sub == user)
        ):
            raise ApiError(
                ErrorCode.FORBIDDEN,
                "only the owner adds members to a private room"
                if room.kind == "private"
                else "only the owner adds others to a room; a user may add itself",
            )
        with _tracer.start_as_current_span("rooms.add_member", attributes={"room": room.id}):
            env = membership_envelope(
                EventKind.MEMBER_JOINED, room.id, user, claims.sub, inject_context()
            )
            # The roster decides atomically: `member` (already one) appends nothing.
            result = await self._append_membership(env, Access.GRANT)
        if result.status == AppendStatus.MEMBER:
            # Read-your-write as for an append: the join that made it a member is applied.
            seq = await self._seq(room.id)
            await self._wait_applied(room.id, seq)
            return JSONResponse({"room": room.id, "user": user, "seq": seq})
        if result.status == AppendStatus.NO_ROOM or result.seq is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no room {room.id!r}")
        await self._wait_applied(room.id, result.seq)
        return JSONResponse({"room": room.id, "user": user, "seq": result.seq})

    async def remove_member(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = await self._room(_room_param(request))
        user = _user_param(request)
        if not (claims.is_service or claims.sub == room.owner or claims.sub == user):
            raise ApiError(
                ErrorCode.FORBIDDEN, "only the owner, a service or the member itself removes"
            )
        with _tracer.start_as_current_span("rooms.remove_member", attributes={"room": room.id}):
            env = membership_envelope(
                EventKind.MEMBER_LEFT, room.id, user, claims.sub, inject_context()
            )
            # The roster decides atomically: `not_member` appends nothing.
            result = await self._append_membership(env, Access.LEAVE)
        if result.status == AppendStatus.NOT_MEMBER:
            # Read-your-write: the leave that ended the membership (maybe through a gateway, a
            # moment ago) is applied before the 204, so the member list no longer shows it.
            await self._wait_applied(room.id, await self._seq(room.id))
            return Response(status_code=204)
        if result.status == AppendStatus.NO_ROOM or result.seq is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no room {room.id!r}")
        await self._wait_applied(room.id, result.seq)
        return Response(status_code=204)

    async def user_rooms(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        user = _user_param(request)
        if not (claims.is_service or claims.sub == user):
            raise ApiError(ErrorCode.FORBIDDEN, "a user may list only its own rooms")
        with self.metrics.timed_redis():
            rooms = await self.rm.user_rooms(user)
        if not rooms:
            with self.metrics.timed_postgres():
                rooms = await self.projector.refill_user_rooms(user)
        return JSONResponse({"rooms": rooms})

    async def presence(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        room = await self._room(_room_param(request))
        await self._require_reader(claims, room)
        with self.metrics.timed_redis():
            online = await self.rm.presence(room.id)
        users: list[dict[str, Any]] = [
            {"user": u, "connections": n} for u, n in sorted(online.items())
        ]
        return JSONResponse({"users": users})


def _room_param(request: Request) -> str:
    room = str(request.path_params["room"])
    if not is_room_id(room):
        raise ApiError(ErrorCode.BAD_REQUEST, "a room id is 1 to 64 characters of [a-z0-9_-]")
    return room


def _user_param(request: Request) -> str:
    user = str(request.path_params["user"])
    problem = user_id_problem(user)
    if problem is not None:
        raise ApiError(ErrorCode.BAD_REQUEST, problem)
    return user
