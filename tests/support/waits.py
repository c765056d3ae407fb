"""Bounded waiting for a condition in tests (no test may hang)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str, timeout_s: float = 20.0
) -> None:
    """Poll `check` (sync or async) every 50 ms until it is true; AssertionError after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
