"""Fixtures of the deployment tests: a real Redis Cluster of local processes, the settings of a
fresh namespace on it and a client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from roomstream_kit.redis import AnyRedis, connect
from roomstream_kit.settings import CommonSettings

from tests.deploy.redis_cluster import RedisClusterProcesses


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A fresh 3-master Redis Cluster on free ports, torn down after the module's tests."""
    rc = RedisClusterProcesses(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        rc.start()
        yield rc
    finally:
        rc.stop()


@pytest.fixture
def settings(redis_cluster: RedisClusterProcesses) -> CommonSettings:
    """The services' common settings on the cluster, in a namespace of this test's own."""
    return CommonSettings(
        redis_url=redis_cluster.url,
        redis_cluster=True,
        namespace=f"t{uuid.uuid4().hex[:8]}",
        shards=8,
    )


@pytest.fixture
async def client(settings: CommonSettings) -> AsyncIterator[AnyRedis]:
    redis = connect(settings)
    yield redis
    await redis.aclose()
