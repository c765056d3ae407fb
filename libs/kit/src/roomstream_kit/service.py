"""The Starlette app of every roomstream HTTP service, built one way (docs/architecture.md,
"Service lifecycle").

    app = service_app("rooms", routes=[*RoomsApi.routes()], start=start, errors=counter)

- **Routes are declared once, at construction**: the service's own, then the kit's `/healthz`,
  `/readyz` and `/metrics`. Nothing is added to the route table later.
- **`start(life)`** runs in the ASGI lifespan: it opens the pool, the Redis clients and the
  consumers, registers their readiness checks, background tasks and shutdown steps on `life`
  (a `Lifecycle`), and returns what the handlers need. That mapping (plus `lifecycle`) becomes
  the lifespan *state*: handlers read it from `request.state`. `on_state` binds an endpoint to
  an object of that state (an API class whose methods take the request).
- **`/readyz`** answers from the lifecycle: tasks that are down, then the declared checks.
- **Errors**: the kit's exception handlers (JSON error bodies), counted by `ErrorCounting` in
  `errors` when given.
- **Stop**: `Lifecycle.stop` — tasks cancelled (bounded), then the shutdown steps in reverse,
  each bounded; also when `start` fails half-way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from opentelemetry.metrics import Counter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .http import ErrorCounting, exception_handlers, health_routes
from .lifecycle import Lifecycle

Start = Callable[[Lifecycle], Awaitable[Mapping[str, Any]]]
"""Opens a service's dependencies on a `Lifecycle`; returns the lifespan state."""

A = TypeVar("A")


def on_state(key: str, method: Callable[[A, Request], Awaitable[Response]]) -> Any:
    """An endpoint that calls `method` on `request.state.<key>` (an object the lifespan made):
    `Route("/rooms", on_state("rooms_api", RoomsApi.create_room), methods=["POST"])`."""

    async def endpoint(request: Request) -> Response:
        return await method(getattr(request.state, key), request)

    endpoint.__name__ = getattr(method, "__name__", "endpoint")
    endpoint.__doc__ = method.__doc__
    return endpoint


def service_app(
    service: str,
    *,
    routes: Sequence[BaseRoute],
    start: Start,
    errors: Counter | None = None,
    lifecycle: Callable[[], Lifecycle] | None = None,
) -> Starlette:
    """The service's Starlette app (see the module doc). `lifecycle` makes the `Lifecycle` of
    each process life (default `Lifecycle(service)`)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        life = lifecycle() if lifecycle is not None else Lifecycle(service)
        try:
            state = dict(await start(life))
        except BaseException:
            await life.stop()
            raise
        state["lifecycle"] = life
        try:
            yield state
        finally:
            await life.stop()

    middleware = [Middleware(ErrorCounting, counter=errors)] if errors is not None else []
    return Starlette(
        routes=[*routes, *health_routes()],
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
