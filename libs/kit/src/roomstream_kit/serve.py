"""Running an HTTP service process: uvloop, uvicorn, graceful stop on SIGTERM / SIGINT.

`serve_service` is the whole `main()` of a service process: refuse a development secret, logs and
telemetry named after the node, the app, then `run_asgi` until stopped (spans flushed at exit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from .auth import refuse_insecure_secret
from .logs import setup_logging
from .settings import CommonSettings
from .shutdown import arm_shutdown_deadline
from .telemetry import setup_telemetry, shutdown_telemetry

S = TypeVar("S", bound=CommonSettings)

SHUTDOWN_DEADLINE_S = 30.0
"""Longest a stop may take (uvicorn's graceful timeout is 10 s, then the lifespan shutdown)."""


def run_asgi(app: ASGIApp, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT; the app's lifespan starts and stops its workers."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        ws="none",
    )
    run_loop(_Server(config).serve())


TICK_S = 1.0
"""Period of the server's housekeeping tick (uvicorn's own: 0.1 s)."""


class _Server(uvicorn.Server):
    """uvicorn's server, except that
    - a SIGTERM / SIGINT that led to a clean shutdown ends the process with exit code 0 instead
      of being re-raised (uvicorn's default), so supervisors and tests can tell a clean stop
      from a crash;
    - its main loop ticks once a second, not ten times: a tick only refreshes the `Date` header
      (once a second anyway) and looks for an exit, and ten wake-ups a second were ~0.1 % of a
      core per idle service (docs/benchmarks.md, "Issue 12"). A signal wakes it at once, so a
      stop does not wait for the tick."""

    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = wake = asyncio.Event()
        # counter 0: every tick is a "once a second" tick for uvicorn's `on_tick`.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await wake.wait()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to guard
            loop = asyncio.get_running_loop()
            arm_shutdown_deadline(SHUTDOWN_DEADLINE_S, loop)
            if self._wake is not None:
                loop.call_soon_threadsafe(self._wake.set)  # safe from a signal handler


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


def serve_service(
    service: str,
    settings: S,
    create_app: Callable[[S], ASGIApp],
    *,
    before_serve: Callable[[], None] | None = None,
) -> None:
    """Run the process of `service` (its node id is `settings.node_name(service)`) serving
    `create_app(settings)`; `before_serve` runs once the app is built (e.g. `tune_gc`)."""
    refuse_insecure_secret(settings, service)
    node = settings.node_name(service)
    setup_logging(service, node, settings.log_level, settings.log_format)
    setup_telemetry(service, node)
    try:
        app = create_app(settings)
        if before_serve is not None:
            before_serve()
        run_asgi(app, settings.host, settings.port)
    finally:
        shutdown_telemetry()  # flush the spans not exported yet
