"""Telling a consumer's failures apart: transient (a dependency is away), data (the entry itself
can never be handled), or unknown. Pure: no I/O.

- **transient**: Redis or Postgres unreachable, restarting, loading, overloaded; a serialization
  conflict; `Retry` raised by a handler that must wait (e.g. for an entry another consumer holds).
  Retried with backoff for as long as it takes; never dead-lettered.
- **data**: the entry cannot be stored or decoded (asyncpg's `DataError` family, such as
  `UntranslatableCharacterError` for U+0000; a `ValueError` such as pydantic's
  `ValidationError`, a JSON or Unicode decode error). Dead-lettered as soon as it is isolated.
- anything else is retried a bounded number of times with the dependencies up, then treated as
  deterministic.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from .redis import REDIS_DOWN_ERRORS


class Retry(Exception):
    """Raised by a handler: this batch cannot be handled *yet* (not the entries' fault)."""


_REDIS_TRY_AGAIN_PREFIXES = (
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "BUSY ",
    "READONLY",
)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Retry,
    *REDIS_DOWN_ERRORS,
    TimeoutError,
    ConnectionError,
    BusyLoadingError,
    TryAgainError,
    ClusterDownError,
    ReadOnlyError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
)

DATA_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, ValueError)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says "a dependency is away or busy: try again later"."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).startswith(_REDIS_TRY_AGAIN_PREFIXES)
    return False


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` says "this entry can never be handled" (checked after `is_transient`)."""
    return isinstance(exc, DATA_ERRORS) and not is_transient(exc)


def describe(exc: BaseException, limit: int = 1000) -> str:
    """`Type: message`, one line, bounded (for logs and dead-letter records)."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:limit]
