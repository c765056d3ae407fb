"""Running an HTTP service process: uvloop, uvicorn, graceful stop on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import uvicorn
from starlette.types import ASGIApp


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
    run_loop(uvicorn.Server(config).serve())


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(main)
    else:
        uvloop.run(main)
