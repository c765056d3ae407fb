"""Redis and PostgreSQL for `roomstream up`: given by URL, the local servers, or embedded ones.

Order: `REDIS_URL` / `DATABASE_URL` (or the options) when set — they must answer; else the local
servers on 127.0.0.1:6379 and 127.0.0.1:5432 (user postgres) when they answer; else servers this
runner starts itself with their data under the data folder: `redis-server` from PATH, and
PostgreSQL from `initdb` / `pg_ctl` (PATH or `pg_config --bindir`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from roomstream_kit.postgres import ensure_database

from .children import Child, ChildFailed

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/roomstream"


class DependencyError(Exception):
    """Redis or PostgreSQL could not be reached or started; the message says which and why."""


@dataclass(slots=True)
class Resolved:
    url: str
    source: str
    """`given`, `local` or `embedded`."""


async def redis_answers(url: str, within_s: float = 1.5) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=within_s, socket_timeout=within_s)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


def admin_dsn(dsn: str) -> str:
    """The same server's `postgres` database (to create ours in)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


async def postgres_answers(dsn: str, within_s: float = 2.0) -> bool:
    try:
        conn = await asyncpg.connect(admin_dsn(dsn), timeout=within_s)
    except Exception:
        return False
    await conn.close()
    return True


# -- Redis -----------------------------------------------------------------------------------------


async def resolve_redis(
    given: str | None,
    data_dir: Path,
    port: int,
    children: list[Child],
    verbose: bool,
    *,
    try_local: bool = True,
) -> Resolved:
    if given:
        if await redis_answers(given):
            return Resolved(given, "given")
        raise DependencyError(f"Redis at {given} (REDIS_URL) does not answer")
    if try_local and await redis_answers(LOCAL_REDIS_URL):
        return Resolved(LOCAL_REDIS_URL, "local")
    binary = shutil.which("redis-server")
    if binary is None:
        raise DependencyError(
            "Redis: nothing answers on 127.0.0.1:6379 and redis-server is not on PATH "
            "(install it, e.g. `apt-get install redis-server`, or set REDIS_URL)"
        )
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    argv += ["--appendonly", "yes", "--save", "", "--daemonize", "no"]
    child = Child("redis", argv, {}, data_dir / "logs" / "redis.log", verbose=verbose)
    children.append(child)
    await child.start()
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if await redis_answers(url, 0.5):
            return Resolved(url, "embedded")
        if not child.running:
            break
        await asyncio.sleep(0.1)
    raise DependencyError(f"Redis: the embedded redis-server did not start: {child.tail(5)}")


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidate = Path(bindir) / name
        if candidate.exists():
            return str(candidate)
    return None


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        runuser = None
    if runuser is None:
        raise DependencyError(
            "PostgreSQL cannot run as root and there is no `postgres` user to run it as"
        )
    return [runuser, "-u", "postgres", "--", *argv]


@dataclass(slots=True)
class EmbeddedPostgres:
    folder: Path
    port: int
    pg_ctl: str

    def stop(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError, DependencyError):
            subprocess.run(
                _as_postgres_user([self.pg_ctl, "-D", str(self.folder), "-m", "fast", "stop"]),
                capture_output=True,
                timeout=30,
            )


async def resolve_postgres(
    given: str | None, data_dir: Path, port: int, *, try_local: bool = True
) -> tuple[Resolved, EmbeddedPostgres | None]:
    if given:
        if not await postgres_answers(given):
            raise DependencyError(f"PostgreSQL at {given} (DATABASE_URL) does not answer")
        await ensure_database(given)
        return Resolved(given, "given"), None
    if try_local and await postgres_answers(LOCAL_DATABASE_URL):
        await ensure_database(LOCAL_DATABASE_URL)
        return Resolved(LOCAL_DATABASE_URL, "local"), None
    embedded = await asyncio.to_thread(_start_embedded_postgres, data_dir, port)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/roomstream"
    try:
        await ensure_database(dsn)
    except Exception as exc:
        await asyncio.to_thread(embedded.stop)
        raise DependencyError(f"PostgreSQL: cannot create the database: {exc}") from exc
    return Resolved(dsn, "embedded"), embedded


def _start_embedded_postgres(data_dir: Path, port: int) -> EmbeddedPostgres:
    """initdb (once) and `pg_ctl start` of a server whose data lives under `data_dir`."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise DependencyError(
            "PostgreSQL: nothing answers on 127.0.0.1:5432 and initdb/pg_ctl are not installed "
            "(install PostgreSQL, e.g. `apt-get install postgresql`, or set DATABASE_URL)"
        )
    folder = data_dir / "postgres"
    log = data_dir / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            pg = pwd.getpwnam("postgres")
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, pg.pw_uid, pg.pw_gid)
            log.touch()
            os.chown(log, pg.pw_uid, pg.pw_gid)
    if not (folder / "PG_VERSION").exists():
        folder.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(
            _as_postgres_user(
                [initdb, "-D", str(folder), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise DependencyError(f"PostgreSQL: initdb failed: {run.stderr.strip()[-500:]}")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    run = subprocess.run(
        _as_postgres_user(
            [pg_ctl, "-D", str(folder), "-o", options, "-l", str(log), "-w", "start"]
        ),
        capture_output=True,
        text=True,
    )
    embedded = EmbeddedPostgres(folder, port, pg_ctl)
    if run.returncode != 0:
        embedded.stop()
        tail = log.read_text(errors="replace")[-500:] if log.exists() else run.stderr
        raise DependencyError(f"PostgreSQL: the embedded server did not start: {tail.strip()}")
    return embedded


__all__ = [
    "ChildFailed",
    "DependencyError",
    "EmbeddedPostgres",
    "Resolved",
    "resolve_postgres",
    "resolve_redis",
]
