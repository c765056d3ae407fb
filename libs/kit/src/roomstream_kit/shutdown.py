"""A deadline on graceful shutdown: a process told to stop must stop.

A supervisor (systemd, Kubernetes, compose, the local runner) sends SIGTERM and expects the process
to exit within its grace period. `arm_shutdown_deadline` starts a daemon thread when the stop
begins; if the process is still alive when the deadline passes, it logs the stacks of every
asyncio task and thread (so the cause can be found) and ends the process with exit code 1, which
tells the supervisor the stop was not clean.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger(__name__)

_armed = False


def _await_chain(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its coroutine and every coroutine it is awaiting, outermost first."""
    parts = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            parts.append(f"{code.co_name} ({code.co_filename}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(parts) or repr(task)


def _dump_tasks(loop: asyncio.AbstractEventLoop, done: threading.Event) -> None:
    try:
        lines = [f"  {task.get_name()}: {_await_chain(task)}" for task in asyncio.all_tasks(loop)]
        log.error("shutdown deadline passed; pending tasks:\n%s", "\n".join(lines))
    finally:
        done.set()


def arm_shutdown_deadline(seconds: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Exit with code 1 if the process has not ended `seconds` from now (once per process)."""
    global _armed
    if _armed:
        return
    _armed = True
    loop = loop or asyncio.get_running_loop()

    def expire() -> None:
        log.error("shutdown did not finish within %.0f s: exiting", seconds)
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(_dump_tasks, loop, done)
            done.wait(2.0)
        except RuntimeError:  # the loop is closed: only threads are left
            pass
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float, what: str = "tasks"
) -> bool:
    """Cancel `tasks` and wait up to `timeout_s` for them to end; False (logged) if some did not.

    Unlike `gather` or `wait_for`, this returns by the deadline even when a task swallows its
    cancellation, so one stuck library call cannot hold a stop forever."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=timeout_s)
    if still:
        log.warning(
            "%s still running %.0f s after cancel: %s",
            what,
            timeout_s,
            ", ".join(_await_chain(t) for t in still),
        )
    return not still


async def bounded(step: Awaitable[Any], timeout_s: float, what: str) -> bool:
    """Run one shutdown step for at most `timeout_s`; False (logged) if it failed or did not end
    in time (then it is cancelled and left behind, like `cancel_and_wait`): SIGTERM must end."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        log.warning("shutdown: %s did not finish within %.1f s", what, timeout_s)
        return False
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        log.warning("shutdown: %s failed: %s", what, exc)
        return False
    return True
