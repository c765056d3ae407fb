"""The projection continues the trace carried in each event: a span `rooms.apply` whose parent is
the producer's span (`ROOMSTREAM_TRACE_FILE` writes the finished spans as JSON lines)."""

from __future__ import annotations

import os

import orjson
from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms

from tests.rooms.helpers import FAST_ENV, ROOMS, append, applied_total, poll


async def test_apply_span_is_a_child_of_the_producer_span(
    cluster, namespace, database_url, redis_client, tmp_path
):
    trace_file = tmp_path / "spans.jsonl"
    rooms = cluster.start(ROOMS, env={**FAST_ENV, "ROOMSTREAM_TRACE_FILE": str(trace_file)})
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    env = Envelope(
        id=new_event_id(),
        kind=EventKind.ROOM_CREATED,
        room="traced",
        user="alice",
        ts=now_ms(),
        data={"name": "Traced", "kind": "public", "owner": "alice", "members": []},
        trace={"traceparent": f"00-{trace_id}-{span_id}-01"},
    )
    await append(redis_client, namespace, env)

    async def applied() -> bool:
        return await applied_total(database_url) == 1

    await poll(applied)
    assert rooms.terminate() == 0  # a clean stop flushes the spans
    spans = [orjson.loads(line) for line in trace_file.read_bytes().splitlines()]
    mine = [s for s in spans if s["name"] == "rooms.apply" and s["trace_id"] == trace_id]
    assert len(mine) == 1, spans
    assert mine[0]["parent_span_id"] == span_id
    assert mine[0]["attributes"]["room"] == "traced"
