"""PostgreSQL: the asyncpg pool and start-up migrations.

Each service owns its tables and keeps its migrations as numbered SQL files in its own package
(`NNN_description.sql`). `migrate` applies the missing ones in order, under an advisory lock so
that several instances starting at once apply each file exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger(__name__)


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (development and tests)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        return
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    settings: dict[str, Any] = {"min_size": 1, "max_size": 10, "command_timeout": 30}
    settings.update(options)
    pool = await asyncpg.create_pool(dsn, **settings)
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, service: str, package: str) -> list[str]:
    """Apply the SQL files of `package` (a dotted package holding `NNN_*.sql`) not yet applied.

    Returns the names applied now.
    """
    scripts = sorted(
        (p for p in files(package).iterdir() if p.name.endswith(".sql")), key=lambda p: p.name
    )
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        lock = zlib.crc32(f"roomstream-migrate-{service}".encode())
        await conn.execute("SELECT pg_advisory_lock($1)", lock)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       service text NOT NULL, name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (service, name))"""
            )
            done = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM schema_migrations WHERE service = $1", service
                )
            }
            for script in scripts:
                if script.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(script.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (service, name) VALUES ($1, $2)",
                        service,
                        script.name,
                    )
                log.info("applied migration %s/%s", service, script.name)
                applied_now.append(script.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
    return applied_now


POSTGRES_DOWN_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)
"""Errors that mean Postgres is unreachable or not accepting connections yet."""


def postgres_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, POSTGRES_DOWN_ERRORS)


async def open_database(
    dsn: str, service: str, migrations: str, *, wait: bool = True, **options: Any
) -> asyncpg.Pool:
    """The service's pool with its migrations applied (the database created if missing); with
    `wait`, retried with backoff while Postgres is unreachable (`roomstream_kit.retry`)."""
    from .retry import retry

    async def attempt() -> asyncpg.Pool:
        await ensure_database(dsn)
        pool = await create_pool(dsn, **options)
        try:
            await migrate(pool, service, migrations)
        except BaseException:
            pool.terminate()
            raise
        return pool

    if not wait:
        return await attempt()
    return await retry(attempt, what="postgres", retry_if=postgres_unavailable, logger=log)


async def close_pool(pool: asyncpg.Pool, timeout_s: float = 3.0) -> None:
    """Close the pool, bounded: connections still busy past `timeout_s` are terminated."""
    from .shutdown import bounded

    if not await bounded(pool.close(), timeout_s, "postgres close"):
        pool.terminate()


async def ping(pool: asyncpg.Pool) -> None:
    """Readiness: Postgres answers a query through the pool."""
    await pool.fetchval("SELECT 1")


async def open_on(
    life: Lifecycle, dsn: str, service: str, migrations: str, **options: Any
) -> asyncpg.Pool:
    """`open_database` for a service's lifecycle: its close is a shutdown step and its `ping`
    the `postgres` readiness check."""
    pool = await open_database(dsn, service, migrations, **options)
    life.on_stop("postgres close", lambda: close_pool(pool), 4.0)
    life.check("postgres", lambda: ping(pool))
    return pool
