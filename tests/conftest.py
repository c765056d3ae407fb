"""Shared fixtures: every test gets its own Redis namespace and (where asked) its own database,
so tests share the local servers without seeing each other's data."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from roomstream_kit.auth import issue_token

from tests.support.processes import ServiceProcess, free_port
from tests.support.redis_server import OwnRedis, require_redis_server

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_JWT_SECRET = "roomstream-tests-7c1f3a9e5b2d4086a1e8f0c6b3d9e2a4"
"""The tests' HS256 secret: not the development secret, and long enough (>= 32 bytes) for the
services to start outside the development runner (which alone may use the development one)."""
JWT_SECRET = os.environ.get("ROOMSTREAM_JWT_SECRET", TEST_JWT_SECRET)


def make_token(user: str, ttl_s: float = 3600, role: str | None = None) -> str:
    return issue_token(JWT_SECRET, user, ttl_s=ttl_s, role=role)


def service_token() -> str:
    return make_token("test-service", role="service")


def _database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"{ns}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()

    asyncio.run(cleanup())


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own, dropped afterwards."""
    name = f"rs_test_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield _database_url(name)
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def base_env(namespace: str, database_url: str) -> dict[str, str]:
    """Environment shared by every process of one test's deployment."""
    return {
        "REDIS_URL": REDIS_URL,
        "DATABASE_URL": database_url,
        "ROOMSTREAM_NAMESPACE": namespace,
        "ROOMSTREAM_JWT_SECRET": JWT_SECRET,
        "ROOMSTREAM_LOG_LEVEL": "INFO",
        "ROOMSTREAM_HEARTBEAT_INTERVAL_S": "1",
        "ROOMSTREAM_HEARTBEAT_TTL_S": "3",
    }


class Cluster:
    """The processes of one test's deployment; stopped at the end of the test."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[ServiceProcess] = []

    def start(
        self,
        module: str,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
        ready_path: str = "/readyz",
    ) -> ServiceProcess:
        proc = ServiceProcess(
            module,
            {**self.env, **(env or {})},
            port or free_port(),
            self.log_dir,
            name=name,
            ready_path=ready_path,
        )
        self.procs.append(proc)
        return proc.start()

    def gateway(
        self, node_id: str, env: dict[str, str] | None = None, *, ready_path: str = "/readyz"
    ) -> ServiceProcess:
        """A gateway whose node id and process name are `node_id` (its node record and log
        file), with `env` on top of the cluster's."""
        return self.start(
            "roomstream_gateway",
            env={**(env or {}), "ROOMSTREAM_NODE_ID": node_id},
            name=node_id,
            ready_path=ready_path,
        )

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
            proc.kill()


@pytest.fixture
def cluster(base_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(base_env, tmp_path)
    yield c
    c.stop_all()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of this test's own (AOF in the test's folder), for fault tests that stop,
    cut or restart their Redis (never the shared one); stopped afterwards."""
    require_redis_server()
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
