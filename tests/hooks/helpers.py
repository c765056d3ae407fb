"""Helpers of the webhooks tests: the hooks process, rooms and messages appended to the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as aioredis
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.eventlog import EventLog, RoomCheck

from tests.conftest import Cluster, service_token
from tests.support import rooms as support_rooms
from tests.support.events import envelope
from tests.support.processes import ServiceProcess

FAST = {
    "ROOMSTREAM_POLL_MS": "20",
    "ROOMSTREAM_DELIVERY_TIMEOUT_S": "1",
    "ROOMSTREAM_DELIVERY_RETRY_BASE_S": "0.05",
    "ROOMSTREAM_DELIVERY_RETRY_MAX_S": "0.4",
    "ROOMSTREAM_IDLE_POLL_S": "0.1",
    "ROOMSTREAM_ENDPOINTS_REFRESH_S": "0.3",
    "ROOMSTREAM_BACKLOG_INTERVAL_S": "0.3",
    "ROOMSTREAM_LEASE_TTL_S": "3",
}
"""Short timers, so that every test takes seconds."""


async def start_hooks(
    cluster: Cluster, env: dict[str, str] | None = None, name: str = "hooks"
) -> ServiceProcess:
    # From a thread: the receiver runs on this event loop and must keep serving meanwhile.
    return await asyncio.to_thread(
        cluster.start,
        "roomstream_hooks",
        name=name,
        env={"ROOMSTREAM_NODE_ID": "hooks-test", **FAST, **(env or {})},
    )


def api(proc: ServiceProcess, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=proc.url,
        headers={"authorization": f"Bearer {token or service_token()}"},
        timeout=10,
    )


async def add_endpoint(
    proc: ServiceProcess, endpoint_id: str, url: str, secret: str, kinds: list[str], **extra: Any
) -> dict[str, Any]:
    async with api(proc) as client:
        r = await client.post(
            "/endpoints",
            json={"id": endpoint_id, "url": url, "secret": secret, "kinds": kinds, **extra},
        )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


class Log:
    """Rooms and messages written straight into the log (as the gateway and rooms would)."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.keys = StreamKeys(namespace=namespace)
        self.log = EventLog(redis, self.keys)

    async def room(self, room: str) -> None:
        await support_rooms.create_room(self.redis, self.keys, room, "alice")

    async def send(self, room: str, text: str) -> Envelope:
        env = envelope(EventKind.MESSAGE, room, "alice", text=text, client_id=new_event_id())
        result = await self.log.append(env, room_check=RoomCheck.EXISTS)
        assert result.ok, result
        return env

    async def hooks_group_settled(self) -> bool:
        """Whether the `hooks` group has read and acknowledged every entry of every shard."""
        for stream in self.keys.all_logs():
            try:
                groups: Any = await self.redis.xinfo_groups(stream)
            except aioredis.ResponseError:
                continue
            for g in groups:
                name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                if name == "hooks" and (g["pending"] or g.get("lag")):
                    return False
        return True


async def wait_for(
    check: Callable[[], Any], *, deadline_s: float = 30.0, what: str = "condition"
) -> None:
    """Poll `check` (sync or async) until it is true; fail after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def assert_in_room_order(events: list[dict[str, Any]]) -> None:
    """Per room, the seqs strictly increase (events already de-duplicated)."""
    last: dict[str, int] = {}
    for e in events:
        room, seq = e["room"], e["seq"]
        assert seq > last.get(room, 0), f"{room}: seq {seq} after {last.get(room)}"
        last[room] = seq


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` whose labels include `labels` in Prometheus text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def scrape(proc: ServiceProcess) -> str:
    """The process's /metrics text."""
    async with api(proc) as client:
        return (await client.get("/metrics")).text
