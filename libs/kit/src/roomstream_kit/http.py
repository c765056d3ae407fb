"""Starlette helpers shared by the service HTTP APIs: error bodies, bearer auth, health routes.

Errors are `{"error": {"code", "message"}}` with the status of `roomstream_contracts.errors.HTTP_STATUS`;
bad input is always a 4xx, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from opentelemetry.metrics import Counter
from pydantic import ValidationError
from redis.exceptions import RedisClusterException, RedisError
from roomstream_contracts.codec import describe_validation_error
from roomstream_contracts.errors import HTTP_STATUS, ErrorCode, ProtocolError
from roomstream_contracts.tokens import TokenClaims
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import AuthError, KeysUnavailable, TokenVerifier
from .redis import REDIS_DOWN_ERRORS, redis_unavailable
from .telemetry import metrics_response

log = logging.getLogger(__name__)


class JSONResponse(Response):
    """JSON by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(code: ErrorCode, message: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code.value, "message": message}},
        status_code=status or HTTP_STATUS.get(code, 400),
    )


class ApiError(ProtocolError):
    """Raise from an endpoint to answer with an error body."""


_STATUS_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return error_response(exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return error_response(ErrorCode.BAD_REQUEST, describe_validation_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    return error_response(code, str(exc.detail), exc.status_code)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("dependency unavailable: %s", exc)
    return error_response(ErrorCode.UNAVAILABLE, "a dependency is unavailable; retry")


async def _redis_error(request: Request, exc: Exception) -> Response:
    """A Redis error reply: `unavailable` when it means "try again" (LOADING, READONLY, ...)."""
    if redis_unavailable(exc):
        return await _unavailable(request, exc)
    return await _internal(request, exc)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(ErrorCode.INTERNAL, "internal error")


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Handlers that map every failure of an endpoint to a JSON error body."""
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ProtocolError: _protocol_error,
        ValidationError: _validation_error,
        HTTPException: _http_error,
        Exception: _internal,
    }
    handlers[RedisError] = _redis_error
    handlers[RedisClusterException] = _redis_error
    for exc_type in REDIS_DOWN_ERRORS:
        handlers[exc_type] = _unavailable
    try:
        import asyncpg

        handlers[asyncpg.PostgresConnectionError] = _unavailable
        handlers[asyncpg.exceptions.CannotConnectNowError] = _unavailable
        handlers[asyncpg.InterfaceError] = _unavailable
    except ImportError:  # pragma: no cover - asyncpg is a dependency of the kit
        pass
    return handlers


async def json_body(request: Request, max_bytes: int | None = None) -> Any:
    """The request body as JSON, or `bad_request`; with `max_bytes`, a longer body is
    `too_large` (413) and is not read past the bound (nor past a larger Content-Length).
    A caller that leaves before its body is read gets a `bad_request` nobody reads: its fault,
    not an internal error logged and counted."""
    try:
        raw = await (request.body() if max_bytes is None else _bounded_body(request, max_bytes))
    except ClientDisconnect:
        raise ApiError(ErrorCode.BAD_REQUEST, "the client left before sending its body") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(ErrorCode.BAD_REQUEST, "body is not valid JSON") from None


async def _bounded_body(request: Request, max_bytes: int) -> bytes:
    too_large = ApiError(ErrorCode.TOO_LARGE, f"the body is over {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(request: Request, verifier: TokenVerifier) -> TokenClaims:
    """The caller's claims, or `unauthorized` (401); `unavailable` (503) when the issuer's
    JWKS cannot be fetched (a dependency outage, not a bad token)."""
    try:
        claims = await verifier.averify(bearer_token(request))
    except AuthError as exc:
        raise ApiError(ErrorCode.UNAUTHORIZED, str(exc)) from None
    except KeysUnavailable as exc:
        raise ApiError(ErrorCode.UNAVAILABLE, str(exc)) from None
    # A revoked token (`POST /users/{user}/revoke`) is refused here too, not only at the
    # gateway's connect (Redis errors propagate: `unavailable` through the handlers).
    if verifier.cutoff is not None and claims.revoked_by(await verifier.cutoff(claims.sub)):
        raise ApiError(ErrorCode.UNAUTHORIZED, "token revoked")
    return claims


ReadinessCheck = Callable[[], Awaitable[None]]


def health_routes(readiness: list[ReadinessCheck] | None = None) -> list[Route]:
    """`/healthz` (process alive), `/readyz` (every readiness check passes), `/metrics`.

    Without `readiness`, `/readyz` asks the process's `Lifecycle` (the lifespan state's
    `lifecycle`, see `roomstream_kit.service`): its dead tasks and declared checks."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if readiness is None:
            life = getattr(request.state, "lifecycle", None)
            failed = ["not started"] if life is None else await life.problems()
        else:
            failed = []
            for check in readiness:
                try:
                    await check()
                except Exception as exc:
                    failed.append(f"{getattr(check, '__name__', 'check')}: {exc!s}"[:200])
        if failed:
            return JSONResponse({"status": "unavailable", "failed": failed}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        body, content_type = metrics_response()
        return Response(body, media_type=content_type)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]


class ErrorCounting:
    """ASGI middleware: counts every error answer of the API (status >= 400 with an
    `{"error": {"code"}}` body) in `counter`, labelled with its `code`; an exception that
    escapes the app (answered 500 by the outermost handler) counts as `internal`. `/readyz`'s
    503 is a health answer, not an API error: not counted. The one error counter of every
    service API."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400:
                if len(body) < _ERROR_BODY_MAX:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    code = _error_code(bytes(body))
                    if code is not None:
                        self.counter.add(1, {"code": code})
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if status == 0:
                self.counter.add(1, {"code": ErrorCode.INTERNAL.value})
            raise


_ERROR_BODY_MAX = 4096


def _error_code(body: bytes) -> str | None:
    """The `error.code` of an error body, None when it is not one."""
    try:
        code = orjson.loads(body)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return str(code)
