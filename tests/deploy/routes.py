"""The HTTP routes each service really serves, asked of the running code (not its source text).

`ServiceRoutes` builds every service's app the way its entry point does — the Starlette app from
`roomstream_<kind>.app.create_app(settings)` and the gateway's `process_request` router
(`roomstream_gateway.http.HttpRoutes`) — and answers "does `kind` serve GET `path`" from the app's
own route table (a full match: path and method) or, for the gateway, from what its router does
with that request. Building does no I/O (clients connect when used), so no server is needed. The
lifespan is not entered, and need not be: every service declares all its routes at construction
(`roomstream_kit.service.service_app`), its API as well as the kit's `/healthz`, `/readyz` and
`/metrics`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from roomstream_gateway.http import HttpRoutes
from roomstream_gateway.settings import GatewaySettings
from starlette.applications import Starlette
from starlette.routing import Match
from websockets.datastructures import Headers
from websockets.http11 import Request

STARLETTE_KINDS = ("rooms", "history", "monitor", "hooks")


async def _ready() -> str | None:
    return None


@dataclass
class ServiceRoutes:
    settings: dict[str, Any]
    """kind → that service's settings object."""
    apps: dict[str, Starlette] = field(default_factory=dict)
    gateway: HttpRoutes | None = None

    def __post_init__(self) -> None:
        for kind in STARLETTE_KINDS:
            factory = importlib.import_module(f"roomstream_{kind}.app").create_app
            self.apps[kind] = factory(self.settings[kind])
        gateway_settings = self.settings["gateway"]
        assert isinstance(gateway_settings, GatewaySettings)
        self.gateway = HttpRoutes(gateway_settings, _ready)

    async def serves(self, kind: str, path: str) -> bool:
        """Does the `kind` service answer GET `path` with a route of its own (not a 404)?"""
        if kind == "gateway":
            assert self.gateway is not None
            response = await self.gateway(None, Request(path, Headers()))  # type: ignore[arg-type]
            return response is None or response.status_code != 404  # None: the /ws upgrade
        scope = {"type": "http", "path": path, "root_path": "", "method": "GET", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in self.apps[kind].routes)
