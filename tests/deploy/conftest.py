"""Fixtures of the deployment tests: a real Redis Cluster of local processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
