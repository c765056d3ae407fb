"""One trace follows a message: the gateway's "gateway.send" span → the envelope's `trace` in the
log → the history service's "history.persist" span.

The gateway runs as a real process writing its spans to a JSON-lines file
(`ROOMSTREAM_TRACE_FILE`); the history consumer runs in this process with an in-memory exporter.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import orjson
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from roomstream_client import Client
from roomstream_history.app import HistoryService
from roomstream_history.settings import HistorySettings
from roomstream_kit.telemetry import setup_telemetry

from tests.conftest import REDIS_URL, Cluster, make_token, service_token
from tests.monitor.helpers import log_events, wait_for


async def test_one_trace_from_gateway_send_to_history_persist(
    cluster: Cluster,
    namespace: str,
    database_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    setup_telemetry("history", "history-in-test", span_processor=SimpleSpanProcessor(exporter))
    span_file = tmp_path / "gateway-spans.jsonl"
    rooms = cluster.start("roomstream_rooms", name="rooms")
    gateway = cluster.start(
        "roomstream_gateway",
        env={"ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_TRACE_FILE": str(span_file)},
        name="gateway",
        ready_path="/healthz",
    )
    history = HistoryService(
        HistorySettings(
            ROOMSTREAM_REDIS_URL=REDIS_URL,
            ROOMSTREAM_DATABASE_URL=database_url,
            namespace=namespace,
            node_id="history-in-test",
            poll_ms=50,
        )
    )
    await history.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(
                f"{rooms.url}/rooms",
                json={"id": "traced", "name": "Traced", "kind": "public", "members": ["alice"]},
                headers={"Authorization": f"Bearer {service_token()}"},
            )
            assert r.status_code == 201, r.text
        async with Client(gateway.ws_url, make_token("alice")) as alice:
            ack = await alice.send("traced", "follow me")
        event_id = ack.id

        envelope = next(
            e for e in await log_events(redis_client, namespace, "message") if e["id"] == event_id
        )
        _, trace_id, gateway_span_id, _ = envelope["trace"]["traceparent"].split("-")

        async def persisted_span() -> list | None:
            return [
                s
                for s in exporter.get_finished_spans()
                if s.name == "history.persist" and (s.attributes or {}).get("event.id") == event_id
            ] or None

        (persist,) = await wait_for(persisted_span, what="the history.persist span")

        async def gateway_span() -> list | None:
            if not span_file.exists():
                return None
            spans = [orjson.loads(line) for line in span_file.read_bytes().splitlines()]
            return [s for s in spans if s["name"] == "gateway.send"] or None

        (send,) = await wait_for(gateway_span, what="the gateway.send span in the span file")
    finally:
        with contextlib.suppress(Exception):
            await history.stop()

    assert send["trace_id"] == trace_id
    assert send["span_id"] == gateway_span_id
    assert send["service"] == "roomstream-gateway"
    ctx = persist.get_span_context()
    assert ctx is not None and format(ctx.trace_id, "032x") == trace_id
    assert persist.parent is not None and format(persist.parent.span_id, "016x") == send["span_id"]
