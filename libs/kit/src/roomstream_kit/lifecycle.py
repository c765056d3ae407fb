"""One process life of a service: its supervised background tasks, its readiness checks and its
bounded shutdown (docs/architecture.md, "Service lifecycle").

Every service (the Starlette ones through `roomstream_kit.service`, the gateway directly) opens
its dependencies, then registers on one `Lifecycle`:
- `check(name, fn)`: a readiness check (`/readyz` answers 503 while one raises);
- `spawn(name, fn)`: a background task, supervised. A task that *raises* is logged, counted
  (`roomstream_task_crashes{service, task}`) and restarted after an exponential backoff
  (`Backoff`, reset once it ran `healthy_after_s`); while it waits for its restart, `/readyz`
  says `"<name> task is not running"`. With `restart=False` a crash is final and readiness
  fails for good (for a task whose end means the process is broken). A task that *returns*
  is finished (a one-shot start-up job) and is not restarted;
- `every(name, interval_s, fn)`: `fn` every `interval_s`; a failure is logged and counted, the
  next round runs anyway;
- `on_stop(what, fn, timeout_s)`: a shutdown step. `stop()` cancels the tasks (bounded by
  `cancel_and_wait`, so a task that swallows its cancellation cannot hold the stop), then runs
  the steps last-registered first, each bounded by `shutdown.bounded`: what was opened last is
  closed first, and a start that failed half-way closes what it had opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from opentelemetry.metrics import Counter

from .failures import describe
from .retry import Backoff
from .shutdown import bounded, cancel_and_wait
from .telemetry import meter

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Any]]
TASK_STOP_S = 5.0
"""How long `stop()` waits for the cancelled background tasks."""


@cache
def _crashes() -> Counter:
    return meter("roomstream.kit").create_counter(
        "roomstream_task_crashes",
        description="Background tasks that raised (then restarted or, if essential, fatal)",
    )


@dataclass
class Supervised:
    """One supervised background task and what is known of its health."""

    name: str
    task: asyncio.Task[None]
    crashes: int = 0
    last_error: str | None = None
    down: bool = False
    """Crashed and not running (waiting for its restart, or for good)."""
    finished: bool = False
    """Returned normally (a one-shot job): not restarted, not a problem."""


class Lifecycle:
    def __init__(
        self,
        service: str,
        *,
        restart_initial_s: float = 0.2,
        restart_max_s: float = 5.0,
        healthy_after_s: float = 30.0,
        task_stop_s: float = TASK_STOP_S,
    ) -> None:
        self.service = service
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.healthy_after_s = healthy_after_s
        self.task_stop_s = task_stop_s
        self.checks: dict[str, ReadinessCheck] = {}
        self.tasks: dict[str, Supervised] = {}
        self._steps: list[tuple[str, Callable[[], Awaitable[Any]], float]] = []
        self.stopping = False

    # -- readiness ----------------------------------------------------------------------------

    def check(self, name: str, fn: ReadinessCheck) -> None:
        """Declare a readiness check: `/readyz` is 503 while `fn()` raises."""
        self.checks[name] = fn

    def task_problem(self) -> str | None:
        """The first supervised task that is not running (crashed), or None."""
        for name, sup in self.tasks.items():
            if sup.down or (sup.task.done() and not sup.finished):
                return f"{name} task is not running"
        return None

    async def problems(self, timeout_s: float = 2.0) -> list[str]:
        """Why this process is not ready: dead tasks, then failed checks (each bounded)."""
        failed = []
        problem = self.task_problem()
        if problem is not None:
            failed.append(problem)
        for name, check in self.checks.items():
            try:
                await asyncio.wait_for(check(), timeout_s)
            except Exception as exc:
                failed.append(f"{name}: {exc!s}"[:200] if str(exc) else f"{name}: {exc!r}"[:200])
        return failed

    # -- background tasks ---------------------------------------------------------------------

    def spawn(
        self, name: str, fn: Callable[[], Awaitable[None]], *, restart: bool = True
    ) -> asyncio.Task[None]:
        """Run `fn()` in a supervised task (see the module doc); returns the supervising task."""
        task = asyncio.create_task(self._supervise(name, fn, restart), name=name)
        self.tasks[name] = Supervised(name, task)
        return task

    def every(self, name: str, interval_s: float, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run `fn()` now and then every `interval_s`; a failed round is logged and counted."""

        async def rounds() -> None:
            while True:
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _crashes().add(1, {"service": self.service, "task": name})
                    log.warning("%s failed: %s", name, describe(exc, 300))
                await asyncio.sleep(interval_s)

        self.spawn(name, rounds)

    async def _supervise(self, name: str, fn: Callable[[], Awaitable[None]], restart: bool) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.restart_initial_s, self.restart_max_s)
        while True:
            started = loop.time()
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sup = self.tasks[name]
                sup.crashes += 1
                sup.last_error = describe(exc, 300)
                sup.down = True
                _crashes().add(1, {"service": self.service, "task": name})
                if not restart:
                    log.critical(
                        "essential task %s ended: %s is not ready any more",
                        name,
                        self.service,
                        exc_info=exc,
                    )
                    return
                if loop.time() - started >= self.healthy_after_s:
                    backoff.reset()
                delay = backoff.next_delay()
                log.error("task %s crashed; restarting in %.1fs", name, delay, exc_info=exc)
                await asyncio.sleep(delay)
                sup.down = False
                continue
            self.tasks[name].finished = True
            return

    # -- shutdown -----------------------------------------------------------------------------

    def on_stop(self, what: str, fn: Callable[[], Awaitable[Any]], timeout_s: float = 3.0) -> None:
        """Register a shutdown step (run by `stop`, the last registered first, bounded)."""
        self._steps.append((what, fn, timeout_s))

    async def stop_tasks(self) -> bool:
        """Cancel every background task and wait for them, bounded."""
        tasks = [s.task for s in self.tasks.values()]
        return await cancel_and_wait(tasks, self.task_stop_s, f"{self.service} tasks")

    async def stop(self) -> None:
        """Stop the tasks, then run the shutdown steps in reverse order (each bounded)."""
        self.stopping = True
        await self.stop_tasks()
        while self._steps:
            what, fn, timeout_s = self._steps.pop()
            await bounded(fn(), timeout_s, what)
