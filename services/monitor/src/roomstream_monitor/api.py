"""The monitor's HTTP API (Starlette): stats, nodes, time series, and the dashboard page.

`/api/*` needs a bearer token with the service role (cluster internals are for operators); the
dashboard page and its static files are public and send the token the operator gives the page.
Under the development runner (`ROOMSTREAM_DEV_LOGIN=1`) `GET /dev/token` hands the page a
short-lived service token, so the dashboard opens with data; elsewhere that route is a 404.
Query parameters are validated (unknown or wrongly typed ones → 400 JSON), unknown paths → 404
JSON, Redis away → 503 `unavailable`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.ids import now_ms
from roomstream_contracts.tokens import SERVICE_ROLE
from roomstream_kit.auth import TokenVerifier, issue_token
from roomstream_kit.http import ApiError, JSONResponse, authenticate
from roomstream_kit.service import on_state
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .registry import Registry
from .settings import MonitorSettings
from .stats import Collector, node_view

STATIC = Path(__file__).parent / "static"
DEV_TOKEN_TTL_S = 3600


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatsQuery(_Query):
    top: int | None = Field(default=None, ge=0, le=100)
    """How many busiest rooms to list (default: the configured number)."""


class NodesQuery(_Query):
    kind: str | None = Field(default=None, pattern=r"^[a-z_-]{1,32}$")


class SeriesQuery(_Query):
    seconds: int = Field(default=300, ge=1, le=3600)


def _query(model: type[_Query], request: Request) -> Any:
    return model.model_validate(dict(request.query_params))


class MonitorApi:
    def __init__(
        self,
        settings: MonitorSettings,
        registry: Registry,
        collector: Collector,
        verifier: TokenVerifier,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.collector = collector
        self.verifier = verifier

    @classmethod
    def routes(cls) -> list[BaseRoute]:
        """Declared once, at construction; endpoints run on `request.state.monitor_api`."""
        return [
            Route("/", on_state("monitor_api", cls.dashboard)),
            Route("/api/stats", on_state("monitor_api", cls.stats)),
            Route("/api/nodes", on_state("monitor_api", cls.nodes)),
            Route("/api/timeseries", on_state("monitor_api", cls.timeseries)),
            Route("/dev/token", on_state("monitor_api", cls.dev_token)),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]

    async def _authorize(self, request: Request) -> None:
        claims = await authenticate(request, self.verifier)
        if not claims.is_service:
            raise ApiError(ErrorCode.FORBIDDEN, "the monitor API needs a service token")

    def _snapshot(self) -> dict[str, Any]:
        snap = self.collector.fresh_snapshot()
        if snap is None:
            raise ApiError(ErrorCode.UNAVAILABLE, "no recent cluster snapshot (Redis unreachable?)")
        return snap

    async def stats(self, request: Request) -> Response:
        await self._authorize(request)
        query: StatsQuery = _query(StatsQuery, request)
        snap = self._snapshot()
        if query.top is not None:
            snap = {**snap, "busiest_rooms": snap["busiest_rooms"][: query.top]}
        return JSONResponse(snap)

    async def nodes(self, request: Request) -> Response:
        """Live registry read: every registered node (with `alive`) and the recently failed."""
        await self._authorize(request)
        query: NodesQuery = _query(NodesQuery, request)
        now = now_ms()
        deadline = now - int(self.settings.node_timeout_s * 1000)
        nodes = []
        for record in await self.registry.nodes():
            if query.kind and record.kind != query.kind:
                continue
            view = node_view(record)
            view["alive"] = bool(record.fields) and record.last_beat_ms > deadline
            view["pid"] = record.fields.get("pid")
            view["started_ms"] = record.fields.get("started_ms")
            view["incarnation"] = record.fields.get("incarnation")
            nodes.append(view)
        failed = await self.registry.failed(now - self.settings.failed_keep_s * 1000)
        return JSONResponse(
            {
                "nodes": nodes,
                "failed": [{"node": n, "failed_ms": ms} for n, ms in failed],
                "timeout_s": self.settings.node_timeout_s,
            }
        )

    async def timeseries(self, request: Request) -> Response:
        await self._authorize(request)
        query: SeriesQuery = _query(SeriesQuery, request)
        self._snapshot()
        return JSONResponse(self.collector.timeseries(query.seconds))

    async def dev_token(self, request: Request) -> Response:
        """A service token for the dashboard, only under the development runner (HS* secrets):
        `ROOMSTREAM_DEV_LOGIN` alone does not do (it would hand anyone a service token)."""
        settings = self.settings
        if not (
            settings.dev_login and settings.dev_mode and settings.jwt_algorithm.startswith("HS")
        ):
            raise ApiError(ErrorCode.NOT_FOUND, "no route /dev/token")
        token = issue_token(
            self.settings.jwt_secret,
            "monitor-dashboard",
            ttl_s=DEV_TOKEN_TTL_S,
            role=SERVICE_ROLE,
            algorithm=self.settings.jwt_algorithm,
        )
        return JSONResponse({"token": token, "expires_in": DEV_TOKEN_TTL_S})

    async def dashboard(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")
