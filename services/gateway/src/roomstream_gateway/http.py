"""Plain HTTP on the WebSocket port (`process_request`): health, metrics, the chat page and its
scripts.

Returning a response ends the request; returning None lets `/ws` continue to the upgrade.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
from roomstream_contracts.ids import user_id_problem
from roomstream_kit.auth import issue_token
from roomstream_kit.telemetry import metrics_response
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .auth import origin_allowed, single_header, split_path
from .settings import GatewaySettings

WS_PATH = "/ws"
DEV_TOKEN_TTL_S = 12 * 3600
STATIC_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/roomstream-client.js": ("roomstream-client.js", "text/javascript; charset=utf-8"),
}
"""The chat page and its scripts (`roomstream-client.js` is the SDK's browser bundle, built by
libs/client-js and committed), read once at start: path -> (file in static/, content type)."""


def respond(status: int, body: bytes, content_type: str) -> Response:
    code = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(code.value, code.phrase, headers, body)


def json_response(status: int, body: object) -> Response:
    return respond(status, orjson.dumps(body), "application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


class HttpRoutes:
    """The `process_request` callback of the gateway's server."""

    def __init__(
        self, settings: GatewaySettings, ready: Callable[[], Awaitable[str | None]]
    ) -> None:
        self.settings = settings
        self.origins = settings.origin_list()
        self.ready = ready
        static = resources.files(__package__).joinpath("static")
        self._static = {
            path: (static.joinpath(name).read_bytes(), content_type)
            for path, (name, content_type) in STATIC_FILES.items()
        }

    async def __call__(self, conn: ServerConnection, request: Request) -> Response | None:
        try:
            path, query = split_path(request.path)
            origin = single_header(request.headers, "Origin")
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        if path == WS_PATH:
            if not origin_allowed(origin, self.origins):
                return error_response(403, "forbidden", "origin not allowed")
            return None
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            problem = await self.ready()
            if problem is None:
                return json_response(200, {"status": "ready"})
            return error_response(503, "unavailable", problem)
        if path == "/metrics":
            body, content_type = metrics_response()
            return respond(200, body, content_type)
        page = self._static.get(path)
        if page is not None:
            return respond(200, *page)
        if path == "/dev/token" and self.settings.dev_login:
            user = (query.get("user") or [""])[0].strip()
            problem = user_id_problem(user)  # also refuses U+0000 (contracts)
            if problem is not None:
                return error_response(400, "bad_request", problem)
            token = issue_token(
                self.settings.jwt_secret,
                user,
                ttl_s=DEV_TOKEN_TTL_S,
                issuer=self.settings.jwt_issuer or None,
                audience=self.settings.jwt_audience or None,
            )
            return json_response(200, {"user": user, "token": token})
        return error_response(404, "not_found", f"no route {path}")
