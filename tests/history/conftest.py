"""Fixtures of the history tests: an EventLog on the test's namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog

from tests.conftest import REDIS_URL


@pytest.fixture
async def eventlog(namespace: str) -> AsyncIterator[EventLog]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield EventLog(client, StreamKeys(namespace=namespace))
    await client.aclose()
