"""The HTTP API (service token only): endpoints CRUD, dead-letter listing and replay."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from roomstream_contracts.errors import ErrorCode
from roomstream_kit.auth import TokenVerifier
from roomstream_kit.http import ApiError, JSONResponse, authenticate, json_body
from roomstream_kit.service import on_state
from roomstream_kit.signing import new_secret
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .delivery import Dispatcher
from .metrics import HooksMetrics
from .model import EndpointSpec, masked
from .settings import HooksSettings
from .store import Endpoint, HooksStore

DEAD_LETTERS_PAGE = 100
DEAD_LETTERS_PAGE_MAX = 1000


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_ids: list[str] | None = Field(default=None, max_length=10_000)
    """None: every dead letter of the endpoint."""


def endpoint_body(e: Endpoint, *, secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it; the secret in full only when it was just set."""
    return {
        "id": e.id,
        "url": e.url,
        "secret": e.secret if secret else masked(e.secret),
        "kinds": list(e.kinds),
        "rooms": list(e.rooms) if e.rooms is not None else None,
        "source": e.source,
        "created_at": e.created_at.isoformat(),
        "updated_at": e.updated_at.isoformat(),
    }


class HooksApi:
    def __init__(
        self,
        settings: HooksSettings,
        store: HooksStore,
        dispatcher: Dispatcher,
        metrics: HooksMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.verifier = TokenVerifier(settings)

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; each endpoint runs on `request.state.hooks_api`."""
        return [
            Route("/endpoints", on_state("hooks_api", cls.list_endpoints), methods=["GET"]),
            Route("/endpoints", on_state("hooks_api", cls.create), methods=["POST"]),
            Route("/endpoints/{id}", on_state("hooks_api", cls.get), methods=["GET"]),
            Route("/endpoints/{id}", on_state("hooks_api", cls.replace), methods=["PUT"]),
            Route("/endpoints/{id}", on_state("hooks_api", cls.delete), methods=["DELETE"]),
            Route(
                "/endpoints/{id}/dead-letters",
                on_state("hooks_api", cls.dead_letters),
                methods=["GET"],
            ),
            Route(
                "/endpoints/{id}/dead-letters/replay",
                on_state("hooks_api", cls.replay),
                methods=["POST"],
            ),
        ]

    async def _service(self, request: Request) -> None:
        claims = await authenticate(request, self.verifier)
        if not claims.is_service:
            raise ApiError(ErrorCode.FORBIDDEN, "a service token is required")

    async def _spec(self, request: Request) -> EndpointSpec:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
        try:
            return EndpointSpec.model_validate(body)
        except ValidationError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, _describe(exc)) from None

    async def _endpoint(self, request: Request) -> Endpoint:
        endpoint = await self.store.endpoint(str(request.path_params["id"]))
        if endpoint is None:
            raise ApiError(ErrorCode.NOT_FOUND, "no such endpoint")
        return endpoint

    def _changed(self) -> None:
        self.dispatcher.refresh.set()

    async def list_endpoints(self, request: Request) -> Response:
        await self._service(request)
        endpoints = await self.store.endpoints()
        return JSONResponse(
            {
                "endpoints": [
                    {
                        **endpoint_body(e),
                        "backlog": self.metrics.backlog.get(e.id, 0),
                        "dead_letters": self.metrics.dead.get(e.id, 0),
                    }
                    for e in endpoints
                ]
            }
        )

    async def create(self, request: Request) -> Response:
        await self._service(request)
        spec = await self._spec(request)
        endpoint_id = spec.id or f"ep_{uuid.uuid4().hex[:16]}"
        created = await self.store.create_endpoint(
            endpoint_id, spec.url, spec.secret or new_secret(), spec.kinds, spec.rooms
        )
        if created is None:
            raise ApiError(ErrorCode.CONFLICT, f"endpoint {endpoint_id!r} exists")
        self._changed()
        return JSONResponse(endpoint_body(created, secret=True), status_code=201)

    async def get(self, request: Request) -> Response:
        await self._service(request)
        return JSONResponse(endpoint_body(await self._endpoint(request)))

    async def replace(self, request: Request) -> Response:
        """Replace an endpoint's url, kinds, rooms (and secret, when given); its queued events
        stay queued. An endpoint from the environment is reset to it at the next start."""
        await self._service(request)
        current = await self._endpoint(request)
        spec = await self._spec(request)
        if spec.id is not None and spec.id != current.id:
            raise ApiError(ErrorCode.BAD_REQUEST, "id in the body differs from the path")
        updated = await self.store.upsert_endpoint(
            current.id,
            spec.url,
            spec.secret or current.secret,
            spec.kinds,
            spec.rooms,
            current.source,
        )
        self._changed()
        return JSONResponse(endpoint_body(updated, secret=spec.secret is not None))

    async def delete(self, request: Request) -> Response:
        """Delete an endpoint with its outbox and dead letters."""
        await self._service(request)
        if not await self.store.delete_endpoint(str(request.path_params["id"])):
            raise ApiError(ErrorCode.NOT_FOUND, "no such endpoint")
        self._changed()
        return Response(status_code=204)

    async def dead_letters(self, request: Request) -> Response:
        """`{"dead_letters": [...by pos], "next_after": pos | null}`; page with `?after=`."""
        await self._service(request)
        endpoint = await self._endpoint(request)
        limit = _int_param(request, "limit", DEAD_LETTERS_PAGE, 1, DEAD_LETTERS_PAGE_MAX)
        after = _int_param(request, "after", 0, 0, 2**62)
        rows = await self.store.dead_letters(endpoint.id, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return JSONResponse(
            {
                "dead_letters": [
                    {
                        "pos": r["pos"],
                        "event_id": r["event_id"],
                        "room": r["room"],
                        "attempts": r["attempts"],
                        "last_error": r["last_error"],
                        "enqueued_at": r["enqueued_at"].isoformat(),
                        "dead_at": r["dead_at"].isoformat(),
                        "event": orjson.Fragment(r["body"]),
                    }
                    for r in rows
                ],
                "next_after": rows[-1]["pos"] if more else None,
            }
        )

    async def replay(self, request: Request) -> Response:
        """Queue dead letters again (all, or `event_ids`), at the end of the outbox, in order."""
        await self._service(request)
        endpoint = await self._endpoint(request)
        raw = await request.body()
        try:
            req = ReplayRequest.model_validate_json(raw) if raw.strip() else ReplayRequest()
        except ValidationError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, _describe(exc)) from None
        replayed = await self.store.replay(endpoint.id, req.event_ids)
        self.dispatcher.wake([endpoint.id])
        return JSONResponse({"replayed": replayed})


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(ErrorCode.BAD_REQUEST, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(ErrorCode.BAD_REQUEST, f"{name} must be in {low}..{high}")
    return value


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"[:300] if where else str(first.get("msg"))[:300]
