"""Running an HTTP service process: uvloop, uvicorn, graceful stop on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .shutdown import arm_shutdown_deadline

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


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM / SIGINT that led to a clean shutdown ends the
    process with exit code 0 instead of being re-raised (uvicorn's default), so supervisors and
    tests can tell a clean stop from a crash."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to guard
            arm_shutdown_deadline(SHUTDOWN_DEADLINE_S, asyncio.get_running_loop())


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
    else:
        uvloop.run(main)
