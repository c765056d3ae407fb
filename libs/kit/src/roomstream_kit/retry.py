"""The one retry / backoff helper of roomstream: retry an operation while its failure is one that
passes (a dependency away), with exponential backoff, for as long as it takes.

`Backoff` is the pure part (the delays: `initial_s`, doubled each time, capped at `max_s`);
`retry` is the loop every service uses instead of writing its own `while True` + `sleep`:

    pool = await retry(lambda: open_pool(dsn), what="postgres", retry_if=postgres_unavailable)

A failure that `retry_if` does not accept is raised at once (a bug is not retried forever), and
so is any failure once `stop_if()` is true (a consumer that is stopping must not wait for Redis).
Cancellation is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .failures import describe, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Backoff:
    """Exponential delays: `initial_s`, `2 × initial_s`, … capped at `max_s`; `reset` after a
    success starts again from `initial_s`."""

    initial_s: float = 0.2
    max_s: float = 5.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_if: Callable[[BaseException], bool] = is_transient,
    initial_s: float = 0.2,
    max_s: float = 5.0,
    stop_if: Callable[[], bool] | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    logger: logging.Logger | None = None,
) -> T:
    """`await op()` until it succeeds; a failure accepted by `retry_if` is logged (warning) and
    retried after the next backoff delay, any other failure is raised. `on_retry` sees each
    retried failure (e.g. to count it)."""
    backoff = Backoff(initial_s, max_s)
    while True:
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not retry_if(exc) or (stop_if is not None and stop_if()):
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = backoff.next_delay()
            (logger or log).warning(
                "%s failed (%s); retrying in %.1fs", what, describe(exc, 300), delay
            )
            await asyncio.sleep(delay)


def always(exc: BaseException) -> bool:
    """`retry_if` that retries every failure (an operation whose every error passes)."""
    return True
